import FerryProtocol

/// `PageBatchWriter` → `PageBatchReader` round trip, no codec: the writer records each page's
/// descriptor (encoding, length and hash from a real LZ4 encoding of the image; the payload bytes
/// are whatever the buffer holds), and each full batch is walked by a reader.
struct BatchBenchmarks {
    let options: Options
    var table = Table(
        ["benchmark", "image", "pages", "Mpages/s", "GB/s median (min–max)", "ns/page", "cpu%", "note"],
        leftAligned: [0, 1, 7])

    static let label = "batch write+read"

    init(options: Options) { self.options = options }

    mutating func run(on encoded: EncodedImage) throws {
        let image = encoded.image
        let bufferSize = PageBatchWriter.bufferSize(pageSize: image.pageSize)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bufferSize, alignment: 64)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        var writer = PageBatchWriter(buffer: buffer, pageSize: image.pageSize)
        let pageCount = UInt64(image.pageCount)
        var entriesRead = 0
        var batches = 0
        var hashesMatch = true

        func readBack(_ payload: UnsafeRawBufferPointer) throws -> (entries: Int, hashes: UInt64) {
            var reader = try PageBatchReader(payload: payload, pageSize: image.pageSize, pageCount: pageCount)
            var entries = 0
            var hashes: UInt64 = 0
            while let entry = try reader.next() {
                entries += 1
                hashes ^= entry.hash
            }
            return (entries, hashes)
        }

        let expected = encoded.hashes.reduce(0, ^)
        let samples = try measure(repetitions: options.repetitions) {
            var read = 0
            var count = 0
            var hashes: UInt64 = 0
            writer.reset(round: 1)
            for page in 0..<image.pageCount {
                if !writer.hasRoomForPage {
                    let result = try readBack(writer.finish())
                    read += result.entries
                    hashes ^= result.hashes
                    count += 1
                    writer.reset(round: 1)
                }
                writer.commitEntry(
                    page: UInt64(page), hash: encoded.hashes[page],
                    encoding: encoded.encodings[page], length: encoded.lengths[page])
            }
            if !writer.isEmpty {
                let result = try readBack(writer.finish())
                read += result.entries
                hashes ^= result.hashes
                count += 1
            }
            entriesRead = read
            batches = count
            hashesMatch = hashes == expected
        }
        let pages = Double(image.pageCount)
        let bytes = Double(image.byteCount)
        let check =
            entriesRead == image.pageCount && hashesMatch
            ? "all entries read back" : "ENTRIES LOST: read \(entriesRead)"
        table.add([
            Self.label, image.name, String(image.pageCount),
            short(pages / samples.median / 1e6),
            rateRange(samples) { bytes / $0 / 1e9 },
            short(samples.median / pages * 1e9),
            samples.cpuPercent.map { fixed($0, 0) } ?? "-",
            "\(batches) batches (lz4 lengths), \(check)",
        ])
    }
}
