import FerryProtocol
import Testing

/// One hand-written entry of a hostile batch.
struct RawEntry {
    var page: UInt64 = 0
    var hash: UInt64 = 0
    var length: UInt32 = 0
    var encoding: UInt8 = 1
    var reserved: [UInt8] = [0, 0, 0]
    var payload: Int = 0
}

func batchBytes(round: UInt32 = 0, count: UInt32? = nil, _ entries: [RawEntry], extra: [UInt8] = []) -> [UInt8] {
    var out: [UInt8] = []
    func le<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
    le(round)
    le(count ?? UInt32(entries.count))
    // The table of descriptors, then the payloads in the same order.
    for entry in entries {
        le(entry.page)
        le(entry.hash)
        le(entry.length)
        out.append(entry.encoding)
        out += entry.reserved
    }
    for entry in entries { out += [UInt8](repeating: 0x77, count: entry.payload) }
    return out + extra
}

/// Reads every entry of `bytes` as a batch of 4096-byte pages in a 16-page image.
func readBatch(_ bytes: [UInt8], pageSize: Int = 4096, pageCount: UInt64 = samplePageCount) throws(ProtocolError)
    -> [PageEntry]
{
    try bytes.withUnsafeBytesForTest { (payload) throws(ProtocolError) in
        var reader = try PageBatchReader(payload: payload, pageSize: pageSize, pageCount: pageCount)
        var entries: [PageEntry] = []
        while let entry = try reader.next() { entries.append(entry) }
        #expect(entries.count == reader.count)
        return entries
    }
}

extension Array where Element == UInt8 {
    func withUnsafeBytesForTest<T>(_ body: (UnsafeRawBufferPointer) throws(ProtocolError) -> T) throws(ProtocolError)
        -> T
    {
        try withUnsafeBufferPointer { (buffer) throws(ProtocolError) in try body(UnsafeRawBufferPointer(buffer)) }
    }
}

func expectBatchRejected(
    _ bytes: [UInt8], _ code: ProtocolError.Code, sourceLocation: SourceLocation = #_sourceLocation
) {
    let error = #expect(throws: ProtocolError.self, sourceLocation: sourceLocation) { _ = try readBatch(bytes) }
    #expect(error?.code == code, "\(error?.description ?? "no error")", sourceLocation: sourceLocation)
}

@Suite("Page batches")
struct PageBatchTests {
    @Test func writerToReaderRoundTrip() throws {
        let pageSize = 4096
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
        defer { buffer.deallocate() }
        var writer = PageBatchWriter(buffer: buffer, pageSize: pageSize, maxEntries: 64)
        var expected: [(UInt64, UInt64, PageEncoding, [UInt8])] = []
        for round: UInt32 in [7, 8] {  // reuse after reset
            writer.reset(round: round)
            expected = []
            #expect(writer.count == 0 && writer.byteCount == 8)
            var page: UInt64 = 0
            while writer.hasRoomForPage {
                let encoding = PageEncoding.allCases[Int(page % 4)]
                let length =
                    switch encoding {
                    case .zero: 0
                    case .raw: pageSize
                    case .lz4: Int(page * 37 % 4095) + 1
                    case .words: Int(page % 409) * 10 + 10
                    }
                let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(page) &+ Int(round)) }
                #expect(writer.payloadSlotCapacity >= pageSize)
                writer.payloadSlot.copyMemory(from: bytes, byteCount: length)
                writer.commitEntry(
                    page: page, hash: page &* 0x9E37_79B9 ^ UInt64(round), encoding: encoding, length: length)
                expected.append((page, page &* 0x9E37_79B9 ^ UInt64(round), encoding, bytes))
                page += 1
            }
            let payload = writer.finish()
            #expect(payload.count == writer.byteCount)
            var reader = try PageBatchReader(payload: payload, pageSize: pageSize, pageCount: 1000)
            #expect(reader.round == round && reader.count == expected.count)
            for (page, hash, encoding, bytes) in expected {
                let entry = try #require(try reader.next())
                #expect(entry.page == page && entry.hash == hash && entry.encoding == encoding)
                #expect(Array(entry.payload) == bytes)
            }
            #expect(try reader.next() == nil)
            #expect(try reader.next() == nil)
        }
    }

    @Test(arguments: [4096, 16384, 65536])
    func hasRoomForPageStopsAtTheBuffersEdge(_ pageSize: Int) throws {
        // A table of 3 entries and a payload area one byte short of three pages.
        let size = 8 + 3 * 24 + 3 * pageSize - 1
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 8)
        defer { buffer.deallocate() }
        var writer = PageBatchWriter(buffer: buffer, pageSize: pageSize, maxEntries: 3)
        writer.reset(round: 1)
        for page: UInt64 in 0..<2 {
            #expect(writer.hasRoomForPage)
            writer.payloadSlot.initializeMemory(as: UInt8.self, repeating: 0xCD, count: pageSize)
            writer.commitEntry(page: page, hash: page, encoding: .raw, length: pageSize)
        }
        #expect(!writer.hasRoomForPage)
        #expect(writer.payloadSlotCapacity == pageSize - 1)
        // A zero entry needs only a descriptor; after it the table is full.
        writer.commitEntry(page: 2, hash: 0, encoding: .zero, length: 0)
        #expect(!writer.hasRoomForPage)
        let payload = writer.finish()
        #expect(payload.count == 8 + 3 * 24 + 2 * pageSize)
        let entries = try readBatch(Array(payload), pageSize: pageSize, pageCount: 3)
        #expect(entries.map(\.page) == [0, 1, 2])
        #expect(payload[(8 + 3 * 24)...].allSatisfy { $0 == 0xCD }, "the payloads follow the table")

        // With exactly three pages of payload area, the third fits and ends the buffer.
        let exact = UnsafeMutableRawBufferPointer(rebasing: buffer[..<(size + 1 - pageSize)])
        var small = PageBatchWriter(buffer: exact, pageSize: pageSize, maxEntries: 3)
        small.reset(round: 0)
        small.payloadSlot.initializeMemory(as: UInt8.self, repeating: 1, count: pageSize)
        small.commitEntry(page: 0, hash: 0, encoding: .raw, length: pageSize)
        #expect(small.hasRoomForPage)
        small.payloadSlot.initializeMemory(as: UInt8.self, repeating: 1, count: pageSize)
        small.commitEntry(page: 1, hash: 0, encoding: .raw, length: pageSize)
        #expect(!small.hasRoomForPage)
        #expect(small.byteCount == 8 + 2 * 24 + 2 * pageSize)
    }

    @Test func entryCountAndFrameLimitCapABatch() throws {
        let size = PageBatchWriter.bufferSize(pageSize: 4096)
        #expect(size == 8 + 4096 * 24 + 4096 * 4096)
        #expect(PageBatchWriter.bufferSize(pageSize: 65536) == 8 + 4096 * 24 + ProtocolLimits.maxFramePayload)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size + 4096, alignment: 8)
        defer { buffer.deallocate() }
        var writer = PageBatchWriter(buffer: buffer, pageSize: 4096)
        writer.reset(round: 2)
        while writer.hasRoomForPage {
            writer.commitEntry(page: UInt64(writer.count), hash: 0, encoding: .zero, length: 0)
        }
        #expect(writer.count == 4096)
        var entries = try readBatch(Array(writer.finish()), pageCount: 4096)
        #expect(entries.count == 4096 && entries.last?.page == 4095)

        writer.reset(round: 3)
        while writer.hasRoomForPage {
            writer.commitEntry(page: 0, hash: 0, encoding: .raw, length: 4096)
        }
        // (16 MiB + 64 KiB − 8) / (24 + 4096) raw entries fit; the extra buffer bytes are unused.
        #expect(writer.count == (ProtocolLimits.maxFramePayload - 8) / 4120)
        #expect(writer.byteCount <= ProtocolLimits.maxFramePayload)
        entries = try readBatch(Array(writer.finish()))
        #expect(entries.count == 4088)
    }

    @Test func descriptorsAreChecked() {
        let raw = RawEntry(page: 1, length: 4096, encoding: 2, payload: 4096)
        expectBatchRejected(batchBytes([RawEntry(page: 16)]), .invalidField)  // page == pageCount
        expectBatchRejected(batchBytes([RawEntry(page: .max)]), .invalidField)
        expectBatchRejected(batchBytes([RawEntry(encoding: 0)]), .invalidField)
        expectBatchRejected(batchBytes([RawEntry(encoding: 5)]), .invalidField)
        expectBatchRejected(batchBytes([RawEntry(length: 0, encoding: 4)]), .invalidField)  // words: no records
        expectBatchRejected(batchBytes([RawEntry(length: 15, encoding: 4, payload: 15)]), .invalidField)
        expectBatchRejected(batchBytes([RawEntry(length: 4100, encoding: 4, payload: 4100)]), .invalidField)
        expectBatchRejected(batchBytes([RawEntry(encoding: 0xFF)]), .invalidField)
        expectBatchRejected(batchBytes([RawEntry(length: 1, payload: 1)]), .invalidField)  // zero with bytes
        expectBatchRejected(batchBytes([RawEntry(reserved: [0, 0, 1])]), .invalidField)
        expectBatchRejected(batchBytes([RawEntry(reserved: [1, 0, 0])]), .invalidField)
        var short = raw
        short.length = 4095
        short.payload = 4095
        expectBatchRejected(batchBytes([short]), .invalidField)
        var long = raw
        long.length = 4097
        long.payload = 4097
        expectBatchRejected(batchBytes([long]), .invalidField)
        expectBatchRejected(batchBytes([RawEntry(length: 0, encoding: 3)]), .invalidField)
        expectBatchRejected(batchBytes([RawEntry(length: 4096, encoding: 3, payload: 4096)]), .invalidField)
        expectBatchRejected(batchBytes([RawEntry(length: 0xFFFF_FFFF, encoding: 3)]), .invalidField)
        // And the edges that are allowed.
        #expect(throws: Never.self) {
            _ = try readBatch(
                batchBytes([
                    raw, RawEntry(page: 15, length: 4095, encoding: 3, payload: 4095),
                    RawEntry(length: 1, encoding: 3, payload: 1), RawEntry(),
                    RawEntry(page: 2, length: 10, encoding: 4, payload: 10),
                    RawEntry(page: 3, length: 4090, encoding: 4, payload: 4090),
                ]))
        }
    }

    @Test func countAndLengthsAreChecked() {
        expectBatchRejected(batchBytes(count: 0, []), .invalidField)
        expectBatchRejected(batchBytes(count: 4097, Array(repeating: RawEntry(), count: 4097)), .tooLarge)
        expectBatchRejected(batchBytes(count: 0xFFFF_FFFF, []), .tooLarge)
        expectBatchRejected([1, 0, 0, 0, 1, 0, 0], .truncated)  // short header
        expectBatchRejected(batchBytes(count: 3, [RawEntry(), RawEntry()]), .truncated)  // count > entries
        expectBatchRejected(batchBytes(count: 1, [RawEntry(), RawEntry()]), .trailingBytes)  // leftover entry
        expectBatchRejected(batchBytes([RawEntry()], extra: [0]), .trailingBytes)  // leftover byte
        expectBatchRejected(Array(batchBytes([RawEntry()]).dropLast()), .truncated)  // cut descriptor
        let lz4 = RawEntry(length: 100, encoding: 3, payload: 99)
        expectBatchRejected(batchBytes([lz4]), .truncated)  // cut payload
        expectBatchRejected(batchBytes([lz4, RawEntry()]).dropLast(25).map { $0 }, .truncated)
    }

    @Test func readerIsLazyAboutLaterEntries() throws {
        // A bad second entry is reported when reached; the first is usable.
        let bytes = batchBytes([RawEntry(page: 3), RawEntry(page: 99)])
        try bytes.withUnsafeBytesForTest { (payload) throws(ProtocolError) in
            var reader = try PageBatchReader(payload: payload, pageSize: 4096, pageCount: samplePageCount)
            #expect(try reader.next()?.page == 3)
            let error = #expect(throws: ProtocolError.self) { _ = try reader.next() }
            #expect(error?.code == .invalidField)
            #expect(error?.message.contains("page 99") == true)
        }
    }
}
