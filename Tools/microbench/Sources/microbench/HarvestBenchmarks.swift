import FerrySystem

/// Dirty tracking on an anonymous region faulted in beforehand: a writer stores one byte into
/// each page of a scattered set (ascending order), then one `harvest(into:)` collects them.
/// Timed separately: the writer (its first write to each page pays the tracker's fault) and the
/// harvest. "none" is the same writer without a tracker.
struct HarvestBenchmarks {
    let options: Options
    var table = Table(
        [
            "tracker", "written", "pages written", "found", "harvest ms median (min–max)",
            "region Mpages/s", "region GB/s", "ns per first write median (min–max)", "cpu%",
        ],
        leftAligned: [0, 1])
    var notes: [String] = []

    static let percentages = [0, 1, 10, 100]
    static let kinds = ["uffd", "mprotect", "none"]

    static func label(_ kind: String, _ percent: Int) -> String { "harvest \(kind) \(percent)%" }

    init(options: Options) { self.options = options }

    mutating func run() throws {
        let pageSize = systemPageSize
        let pageCount = options.pages
        let region = try MappedRegion.anonymous(size: pageCount * pageSize)
        try region.populate(writable: true)
        let sets = Self.percentages.map { Self.scatteredPages(percent: $0, of: pageCount) }

        for kind in Self.kinds {
            let selected = Self.percentages.indices.filter { options.selects(Self.label(kind, Self.percentages[$0])) }
            guard !selected.isEmpty else { continue }
            if kind == "none" {
                for index in selected where !sets[index].isEmpty {
                    let writes = measureWrites(region.base, pageSize: pageSize, pages: sets[index])
                    addRow(
                        kind, Self.percentages[index], written: sets[index].count, found: nil, harvest: nil,
                        writes: writes, pageCount: pageCount, pageSize: pageSize)
                }
                continue
            }
            let choice: TrackerChoice = kind == "uffd" ? .uffd : .mprotect
            if choice == .uffd, let reason = DirtyTrackers.uffdUnavailableReason() {
                notes.append("uffd skipped: \(reason)")
                continue
            }
            let tracker = try DirtyTrackers.make(choice, base: region.base, length: region.size, pageSize: pageSize)
                .tracker
            try tracker.start()
            defer { tracker.stop() }
            var bitmap = DirtyBitmap(count: pageCount)
            try tracker.harvest(into: &bitmap)
            for index in selected {
                let pages = sets[index]
                var writes = Samples()
                var harvests = Samples()
                var found = 0
                for repetition in 0..<options.repetitions {
                    writes.add(
                        timed {
                            Self.write(
                                region.base, pageSize: pageSize, pages: pages,
                                value: UInt8(truncatingIfNeeded: repetition + 1))
                        })
                    bitmap.clearAll()
                    harvests.add(try timed { found = try tracker.harvest(into: &bitmap) })
                }
                addRow(
                    kind, Self.percentages[index], written: pages.count, found: found, harvest: harvests,
                    writes: pages.isEmpty ? nil : writes, pageCount: pageCount, pageSize: pageSize)
            }
        }
    }

    private func measureWrites(_ base: UnsafeMutableRawPointer, pageSize: Int, pages: [Int]) -> Samples {
        var samples = Samples()
        for repetition in 0...options.repetitions {
            let sample = timed {
                Self.write(base, pageSize: pageSize, pages: pages, value: UInt8(truncatingIfNeeded: repetition + 1))
            }
            if repetition > 0 { samples.add(sample) }  // the first pass warms the TLB like the tracked ones
        }
        return samples
    }

    @inline(never)
    private static func write(_ base: UnsafeMutableRawPointer, pageSize: Int, pages: [Int], value: UInt8) {
        pages.withUnsafeBufferPointer { pages in
            for page in pages {
                (base + page &* pageSize + (page & 63) &* 8).storeBytes(of: value, as: UInt8.self)
            }
        }
    }

    private mutating func addRow(
        _ kind: String, _ percent: Int, written: Int, found: Int?, harvest: Samples?,
        writes: Samples?, pageCount: Int, pageSize: Int
    ) {
        let pages = Double(pageCount)
        table.add([
            kind, "\(percent)%", String(written), found.map(String.init) ?? "-",
            harvest.map { valueRange($0) { $0 * 1e3 } } ?? "-",
            harvest.map { short(pages / $0.median / 1e6) } ?? "-",
            harvest.map { short(pages * Double(pageSize) / $0.median / 1e9) } ?? "-",
            writes.map { valueRange($0) { $0 / Double(written) * 1e9 } } ?? "-",
            combined(harvest ?? Samples(), writes ?? Samples()).cpuPercent.map { fixed($0, 0) } ?? "-",
        ])
    }

    /// Ascending pages, each picked with probability `percent`/100 by a hash of its index (the
    /// same set every run).
    static func scatteredPages(percent: Int, of pageCount: Int) -> [Int] {
        if percent >= 100 { return Array(0..<pageCount) }
        let threshold = UInt64(percent) * (UInt64.max / 100)
        return (0..<pageCount).filter { mix(UInt64($0)) < threshold }
    }

    /// splitmix64's finaliser.
    private static func mix(_ value: UInt64) -> UInt64 {
        var z = value &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
