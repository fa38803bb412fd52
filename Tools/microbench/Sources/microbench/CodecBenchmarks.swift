import CLZ4
import FerryCodec
import FerryProtocol
import FerrySystem
import Glibc

/// Encode, hash, zero test and decode over every page of each test image, one thread.
struct CodecBenchmarks {
    let options: Options
    var table = Table(
        ["benchmark", "image", "pages", "Mpages/s", "GB/s median (min–max)", "ns/page", "cpu%", "note"],
        leftAligned: [0, 1, 7])

    init(options: Options) { self.options = options }

    static let encodeVariants: [(label: String, mode: CompressionMode, acceleration: Int32)] = [
        ("encode lz4 a1", .lz4, 1), ("encode lz4 a8", .lz4, 8), ("encode none", .none, 1),
    ]
    static let decodeVariants: [(label: String, mode: CompressionMode, fresh: Bool)] = [
        ("decode lz4 faulted", .lz4, false), ("decode lz4 fresh", .lz4, true),
        ("decode none faulted", .none, false), ("decode none fresh", .none, true),
    ]
    static var labels: [String] {
        encodeVariants.map(\.label) + ["lz4 compress only", "hash xxh3", "hash xxh3 hot", "zero-test", "zero-test hot"]
            + decodeVariants.map(\.label) + ["lz4 decompress only"]
    }

    mutating func run(on image: TestImage) throws {
        for variant in Self.encodeVariants where options.selects("\(variant.label) \(image.name)") {
            encode(image, label: variant.label, mode: variant.mode, acceleration: variant.acceleration)
        }
        if options.selects("lz4 compress only \(image.name)") { compressOnly(image) }
        if options.selects("hash xxh3 \(image.name)") { hash(image) }
        if options.selects("hash xxh3 hot \(image.name)") { hashHot(image) }
        if options.selects("zero-test \(image.name)") { zeroTest(image, hot: false) }
        if options.selects("zero-test hot \(image.name)") { zeroTest(image, hot: true) }
        for mode in CompressionMode.allCases {
            let variants = Self.decodeVariants.filter {
                $0.mode == mode && options.selects("\($0.label) \(image.name)")
            }
            guard !variants.isEmpty else { continue }
            let encoded = EncodedImage(image, mode: mode)
            for variant in variants {
                try decode(encoded, label: variant.label, fresh: variant.fresh)
            }
        }
        if options.selects("lz4 decompress only \(image.name)") { try decompressOnly(EncodedImage(image, mode: .lz4)) }
    }

    private mutating func addRow(_ label: String, _ image: TestImage, _ samples: Samples, note: String) {
        let pages = Double(image.pageCount)
        let bytes = Double(image.byteCount)
        table.add([
            label, image.name, String(image.pageCount),
            short(pages / samples.median / 1e6),
            rateRange(samples) { bytes / $0 / 1e9 },
            short(samples.median / pages * 1e9),
            samples.cpuPercent.map { fixed($0, 0) } ?? "-",
            note,
        ])
    }

    /// `PageEncoder.encode` of every page into a batch-sized output buffer, written in turn as a
    /// `PageStreamer` fills its batch buffer.
    private mutating func encode(_ image: TestImage, label: String, mode: CompressionMode, acceleration: Int32) {
        let encoder = PageEncoder(pageSize: image.pageSize, mode: mode, acceleration: acceleration)
        let outputSize = PageBatchWriter.bufferSize(pageSize: image.pageSize)
        let output = UnsafeMutableRawPointer.allocate(byteCount: outputSize, alignment: 64)
        defer { output.deallocate() }
        var produced = 0
        var counts = (zero: 0, words: 0, raw: 0, lz4: 0)
        let samples = measure(repetitions: options.repetitions) {
            var bytes = 0
            var zero = 0
            var words = 0
            var raw = 0
            var lz4 = 0
            var offset = 0
            let base = image.base
            let pageSize = image.pageSize
            for page in 0..<image.pageCount {
                if outputSize - offset < pageSize { offset = 0 }
                let encoded = encoder.encode(page: base + page &* pageSize, into: output + offset)
                offset += encoded.length
                bytes += encoded.length
                switch encoded.encoding {
                case .zero: zero += 1
                case .raw: raw += 1
                case .lz4: lz4 += 1
                case .words: words += 1
                }
            }
            produced = bytes
            counts = (zero, words, raw, lz4)
        }
        let shares = [counts.zero, counts.words, counts.lz4, counts.raw].map {
            String(Int((Double($0) * 100 / Double(image.pageCount)).rounded()))
        }
        addRow(
            label, image, samples,
            note:
                "out/in \(fixed(Double(produced) / Double(image.byteCount), 3)), zero/words/lz4/raw \(shares.joined(separator: "/"))%"
        )
    }

    /// `PageHash.hash` (XXH3-64, runtime-dispatched) of every page.
    private mutating func hash(_ image: TestImage) {
        var combined: UInt64 = 0
        let samples = measure(repetitions: options.repetitions) {
            combined = 0
            for page in 0..<image.pageCount {
                combined ^= PageHash.hash(image.base + page &* image.pageSize, count: image.pageSize)
            }
        }
        addRow("hash xxh3", image, samples, note: "")
    }

    /// The bare C call inside `encode`: `LZ4_compress_fast_extState` (acceleration 1 =
    /// `LZ4_compress_default`) of every page straight from the image, no snapshot, zero test or
    /// hash; zero pages included. For comparison with figures measured in C.
    private mutating func compressOnly(_ image: TestImage) {
        let state = UnsafeMutableRawPointer.allocate(byteCount: Int(LZ4_sizeofState()), alignment: 16)
        defer { state.deallocate() }
        let outputSize = PageBatchWriter.bufferSize(pageSize: image.pageSize)
        let output = UnsafeMutableRawPointer.allocate(byteCount: outputSize, alignment: 64)
        defer { output.deallocate() }
        var produced = 0
        let samples = measure(repetitions: options.repetitions) {
            var bytes = 0
            var offset = 0
            let pageSize = image.pageSize
            for page in 0..<image.pageCount {
                if outputSize - offset < pageSize { offset = 0 }
                let compressed = LZ4_compress_fast_extState(
                    state, (image.base + page &* pageSize).assumingMemoryBound(to: CChar.self),
                    (output + offset).assumingMemoryBound(to: CChar.self), Int32(pageSize), Int32(pageSize - 1), 1)
                let length = compressed > 0 ? Int(compressed) : pageSize
                offset += length
                bytes += length
            }
            produced = bytes
        }
        addRow(
            "lz4 compress only", image, samples,
            note: "out/in \(fixed(Double(produced) / Double(image.byteCount), 3)) (failed pages count as raw)")
    }

    /// `PageHash.hash` over the first 64 pages (256 KiB, cache-resident) again and again, as
    /// many pages as the image has: the hash's own speed without memory reads.
    private mutating func hashHot(_ image: TestImage) {
        let window = min(64, image.pageCount)
        var combined: UInt64 = 0
        let samples = measure(repetitions: options.repetitions) {
            combined = 0
            for page in 0..<image.pageCount {
                combined ^= PageHash.hash(image.base + (page % window) &* image.pageSize, count: image.pageSize)
            }
        }
        addRow("hash xxh3 hot", image, samples, note: "\(window) pages in cache")
    }

    /// `PageEncoder.isZero` of every page (exits at the first non-zero 64-byte block); `hot`:
    /// of the first 64 pages again and again, as many pages as the image has (its own speed).
    private mutating func zeroTest(_ image: TestImage, hot: Bool) {
        let window = hot ? min(64, image.pageCount) : image.pageCount
        var zeros = 0
        let samples = measure(repetitions: options.repetitions) {
            var found = 0
            for page in 0..<image.pageCount
            where PageEncoder.isZero(image.base + (page % window) &* image.pageSize, count: image.pageSize) {
                found += 1
            }
            zeros = found
        }
        addRow(
            hot ? "zero-test hot" : "zero-test", image, samples,
            note: hot ? "\(window) pages in cache" : "\(zeros) zero pages")
    }

    /// The bare `LZ4_decompress_safe` of every LZ4 page into faulted-in memory, no hash; raw
    /// and zero pages are skipped (the row's rate is over LZ4 pages only).
    private mutating func decompressOnly(_ encoded: EncodedImage) throws {
        let image = encoded.image
        let lz4Pages = encoded.encodings.indices.filter { encoded.encodings[$0] == .lz4 }
        guard !lz4Pages.isEmpty else { return }
        let destination = try MappedRegion.anonymous(size: image.byteCount)
        try destination.populate(writable: true)
        var failures = 0
        let samples = measure(repetitions: options.repetitions) {
            var failed = 0
            let pageSize = image.pageSize
            for page in lz4Pages {
                let produced = LZ4_decompress_safe(
                    (encoded.stream + encoded.offsets[page]).assumingMemoryBound(to: CChar.self),
                    (destination.base + page &* pageSize).assumingMemoryBound(to: CChar.self),
                    Int32(encoded.lengths[page]), Int32(pageSize))
                if Int(produced) != pageSize { failed += 1 }
            }
            failures = failed
        }
        let pages = Double(lz4Pages.count)
        let bytes = pages * Double(image.pageSize)
        table.add([
            "lz4 decompress only", image.name, String(lz4Pages.count),
            short(pages / samples.median / 1e6),
            rateRange(samples) { bytes / $0 / 1e9 },
            short(samples.median / pages * 1e9),
            samples.cpuPercent.map { fixed($0, 0) } ?? "-",
            failures == 0 ? "LZ4 pages only" : "\(failures) pages FAILED to decompress",
        ])
    }

    /// `PageDecoder.decode` of every page into guest memory plus the hash check. `fresh`: into a
    /// new, never-touched anonymous mapping per repetition (zero pages skipped, as over a fresh
    /// sparse image), so each written page costs a page fault; otherwise into memory faulted in
    /// beforehand (zero pages memset).
    private mutating func decode(_ encoded: EncodedImage, label: String, fresh: Bool) throws {
        let image = encoded.image
        let decoder = PageDecoder(pageSize: image.pageSize)
        var mismatches = 0
        func decodeAll(into destination: UnsafeMutableRawPointer) throws {
            var wrong = 0
            defer { mismatches = wrong }
            let pageSize = image.pageSize
            for page in 0..<image.pageCount {
                let payload = UnsafeRawBufferPointer(
                    start: encoded.stream + encoded.offsets[page],
                    count: encoded.lengths[page])
                let written = try decoder.decode(
                    encoding: encoded.encodings[page], payload: payload,
                    into: destination + page &* pageSize, destinationIsZero: fresh)
                if written != encoded.hashes[page] { wrong += 1 }
            }
        }
        var samples = Samples()
        if fresh {
            for _ in 0..<options.repetitions {
                let destination = try MappedRegion.anonymous(size: image.byteCount)
                samples.add(try timed { try decodeAll(into: destination.base) })
            }
        } else {
            let destination = try MappedRegion.anonymous(size: image.byteCount)
            try destination.populate(writable: true)
            samples = try measure(repetitions: options.repetitions) { try decodeAll(into: destination.base) }
        }
        let verdict = mismatches == 0 ? "verified" : "HASH MISMATCH on \(mismatches) pages"
        addRow(
            label, image, samples,
            note: "\(verdict), in/out \(fixed(Double(encoded.payloadBytes) / Double(image.byteCount), 3))")
    }
}
