import FerrySystem
import Glibc

/// Write throughput of a guest under dirty tracking, against the same guest untracked.
///
/// A `--pages` image on /dev/shm (MAP_SHARED, faulted in, like `ferry send`'s image) is written
/// by unpaced writer threads (`TrackedWriter`: the built-in guest or whole-page memsets) for
/// `--tracker-seconds` per run, untracked (`none`) or under the uffd or mprotect tracker. While
/// tracked, this thread harvests every `--harvest-ms` the way a migration's rounds do, so written
/// pages are protected again and the next write to each costs another fault. The variants of
/// one writer and pattern alternate (none uffd mprotect none uffd mprotect …), `--tracker-reps`
/// times.
struct TrackerBenchmarks {
    enum Variant: String, CaseIterable { case none, uffd, mprotect }
    static let patterns: [PageWriter.Pattern] = [.sweep, .uniform]

    static func label(_ writer: TrackedWriterKind, _ pattern: PageWriter.Pattern, _ variant: Variant) -> String {
        "tracker \(writer.rawValue) \(pattern.rawValue) \(variant.rawValue)"
    }
    static var labels: [String] {
        TrackedWriterKind.allCases.flatMap { w in patterns.flatMap { p in Variant.allCases.map { label(w, p, $0) } } }
    }

    /// One run of one variant: counts over the measured window (after the warm-up).
    struct RunResult {
        var seconds: Double
        var pagesWritten: UInt64
        var harvests = 0
        var pagesFound = 0
        /// Harvests that reported every page of the region (all written, or the mprotect tracker's overflow).
        var fullHarvests = 0
        var harvestSeconds: [Double] = []
        var counters: ProcessCounters
        /// CPU seconds of this (the harvesting) thread.
        var harvesterCPU: Double

        var pagesPerSecond: Double { Double(pagesWritten) / seconds }
        var writerCPU: Double { counters.cpuSeconds - harvesterCPU }
    }

    let options: Options
    var table = Table(
        [
            "writer", "pattern", "tracker", "Mpages/s median (min–max)", "MB/s", "× none",
            "found Mpages/s", "found/harvest", "full", "harvest ms", "minflt/found", "≈µs/found",
            "writer cpu%", "writer CPU ns/page",
        ],
        leftAligned: [0, 1, 2])
    var notes: [String] = []

    init(options: Options) { self.options = options }

    mutating func run() throws {
        let pageSize = systemPageSize
        let pageCount = options.pages
        var variants = Variant.allCases
        if let reason = DirtyTrackers.uffdUnavailableReason() {
            notes.append("uffd skipped: \(reason)")
            variants.removeAll { $0 == .uffd }
        }
        // (writer, pattern, variants); `none` runs whenever a tracked variant of the pair does (the ratio needs it).
        var plan: [(TrackedWriterKind, PageWriter.Pattern, [Variant])] = []
        if options.trackerRate != nil, options.trackerWriters.contains(.page) {
            notes.append("--tracker-rate paces the guest writer only; the page writer is skipped")
        }
        for writer in TrackedWriterKind.allCases where options.trackerWriters.contains(writer) {
            if options.trackerRate != nil && writer == .page { continue }
            for pattern in Self.patterns {
                var chosen = variants.filter { options.selects(Self.label(writer, pattern, $0)) }
                if !chosen.isEmpty && !chosen.contains(.none) { chosen.insert(.none, at: 0) }
                if !chosen.isEmpty { plan.append((writer, pattern, chosen)) }
            }
        }
        guard !plan.isEmpty else { return }

        let path = options.trackerImage
        try ImageFile.create(path: path, size: pageCount * pageSize, overwrite: true)
        defer { try? ImageFile.remove(path: path) }
        let region = try MappedRegion.mapFile(path: path, writable: true)
        try region.populate(writable: true)
        var bitmap = DirtyBitmap(count: pageCount)

        var results: [String: [RunResult]] = [:]
        for _ in 0..<options.trackerRepetitions {
            for (writer, pattern, chosen) in plan {
                for variant in chosen {
                    let result = try runOnce(writer, pattern, variant, region: region, bitmap: &bitmap)
                    results[Self.label(writer, pattern, variant), default: []].append(result)
                }
            }
        }

        for (writer, pattern, chosen) in plan {
            let none = results[Self.label(writer, pattern, .none)]
            let untracked = none.map { median($0.map(\.pagesPerSecond)) }
            let untrackedCPUPerPage = none.map(Self.writerCPUPerPage)
            for variant in chosen {
                addRow(
                    writer, pattern, variant, results[Self.label(writer, pattern, variant)] ?? [], untracked: untracked,
                    untrackedCPUPerPage: untrackedCPUPerPage, pageSize: pageSize)
            }
        }
    }

    /// Writer CPU seconds per page written, over all runs.
    static func writerCPUPerPage(_ runs: [RunResult]) -> Double {
        runs.map(\.writerCPU).reduce(0, +) / Double(max(1, runs.map(\.pagesWritten).reduce(0, +)))
    }

    private func runOnce(
        _ writerKind: TrackedWriterKind, _ pattern: PageWriter.Pattern, _ variant: Variant,
        region: borrowing MappedRegion, bitmap: inout DirtyBitmap
    ) throws -> RunResult {
        let pageSize = systemPageSize
        let pageCount = region.size / pageSize
        var tracker: (any DirtyTracker)?
        if variant != .none {
            tracker = try DirtyTrackers.make(
                variant == .uffd ? .uffd : .mprotect, base: region.base, length: region.size,
                pageSize: pageSize
            ).tracker
            try tracker?.start()
        }
        defer { tracker?.stop() }
        bitmap.clearAll()
        let writer = try TrackedWriter.start(
            writerKind, pattern: pattern, memory: region.base, pageCount: pageCount,
            pageSize: pageSize, threads: options.trackerThreads,
            pacedRate: options.trackerRate)
        defer { writer.stop() }

        let interval = UInt64(options.harvestMs * 1e6)
        let begin = Clock.now()
        let measureFrom = begin + UInt64(options.trackerWarmupMs * 1e6)
        let end = measureFrom + UInt64(options.trackerSeconds * 1e9)
        var nextHarvest = begin + interval
        var measuring = false
        var startPages: UInt64 = 0
        var startTime: UInt64 = 0
        var startThreadCPU: UInt64 = 0
        var startCounters = ProcessCounters.now()
        var result = RunResult(seconds: 0, pagesWritten: 0, counters: startCounters, harvesterCPU: 0)
        while true {
            Self.sleep(until: min(nextHarvest, measuring ? end : measureFrom))
            let now = Clock.now()
            if now >= nextHarvest {
                if let tracker {
                    let harvestStart = Clock.now()
                    let found = try tracker.harvest(into: &bitmap)
                    let took = Double(Clock.now() - harvestStart) / 1e9
                    bitmap.clearAll()
                    if measuring {
                        result.harvests += 1
                        result.pagesFound += found
                        if found == pageCount { result.fullHarvests += 1 }
                        result.harvestSeconds.append(took)
                    }
                }
                nextHarvest += interval
                if nextHarvest <= now { nextHarvest = now + interval }
            }
            if !measuring, now >= measureFrom {
                measuring = true
                startPages = writer.pagesWritten
                startCounters = ProcessCounters.now()
                startThreadCPU = Clock.threadCPU()
                startTime = Clock.now()
            } else if measuring, now >= end {
                let stopTime = Clock.now()
                result.pagesWritten = writer.pagesWritten - startPages
                result.counters = ProcessCounters.now() - startCounters
                result.harvesterCPU = Double(Clock.threadCPU() - startThreadCPU) / 1e9
                result.seconds = Double(stopTime - startTime) / 1e9
                break
            }
        }
        return result
    }

    private mutating func addRow(
        _ writer: TrackedWriterKind, _ pattern: PageWriter.Pattern, _ variant: Variant,
        _ runs: [RunResult], untracked: Double?, untrackedCPUPerPage: Double?, pageSize: Int
    ) {
        guard !runs.isEmpty else { return }
        let rates = runs.map(\.pagesPerSecond)
        let rate = median(rates)
        let ratio = untracked.map { rate / $0 }
        let seconds = runs.map(\.seconds).reduce(0, +)
        let found = runs.map(\.pagesFound).reduce(0, +)
        let harvests = runs.map(\.harvests).reduce(0, +)
        let faults = runs.map(\.counters.minorFaults).reduce(0, +)
        let foundRate = Double(found) / seconds
        let threads = Double(options.trackerThreads)
        let writerCPU = runs.map(\.writerCPU).reduce(0, +) / (seconds * threads) * 100
        // Writer time lost per found page (each found page cost its writer one write fault).
        // Unpaced: the fraction of the writers' time not spent at the untracked rate, per found
        // page. Paced (the rates match): the writers' extra CPU per found page.
        let writerCPUPerPage = Self.writerCPUPerPage(runs)
        let costPerFound: Double? =
            if variant == .none || found == 0 {
                nil
            } else if options.trackerRate != nil, let untrackedCPUPerPage {
                (writerCPUPerPage - untrackedCPUPerPage) * Double(runs.map(\.pagesWritten).reduce(0, +)) / Double(found)
                    * 1e6
            } else if let ratio {
                (1 - ratio) * threads / foundRate * 1e6
            } else { nil }
        let harvestTimes = runs.flatMap(\.harvestSeconds)
        table.add([
            writer.rawValue, pattern.rawValue, variant.rawValue,
            "\(short(rate / 1e6)) (\(short((rates.min() ?? 0) / 1e6))–\(short((rates.max() ?? 0) / 1e6)))",
            fixed(rate * Double(pageSize) / 1e6, 0),
            ratio.map { fixed($0, 3) } ?? "-",
            variant == .none ? "-" : short(foundRate / 1e6),
            variant == .none || harvests == 0 ? "-" : String(found / harvests),
            variant == .none ? "-" : String(runs.map(\.fullHarvests).reduce(0, +)),
            harvestTimes.isEmpty ? "-" : short(median(harvestTimes) * 1e3),
            variant == .none ? "\(faults) flt" : (found > 0 ? fixed(Double(faults) / Double(found), 2) : "-"),
            costPerFound.map { short($0) } ?? "-",
            fixed(writerCPU, 0),
            short(writerCPUPerPage * 1e9),
        ])
        if variant == .uffd, options.trackerRate == nil, let ratio, ratio < 0.9, let costPerFound {
            notes.append(
                """
                \(writer.rawValue) \(pattern.rawValue): uffd at \(fixed(ratio, 3))× untracked: \(short(foundRate / 1e6)) M pages/s \
                found ≈ \(short(foundRate * options.harvestMs / 1e3)) write faults per \(fixed(options.harvestMs, 0)) ms round, \
                ≈\(short(costPerFound)) µs of writer time each vs \(short(threads / untracked! * 1e9)) ns per untracked page write
                """)
        }
    }

    private static func sleep(until deadline: UInt64) {
        var time = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
        while clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &time, nil) == EINTR {}
    }
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return .nan }
    let middle = sorted.count / 2
    return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
}
