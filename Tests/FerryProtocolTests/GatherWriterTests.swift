import Testing

@testable import FerryProtocol

/// Gather mode: raw pages stay where they are and are stitched into the frame when it is sent.
/// The bytes on the wire must be exactly what the plain (copying) writer produces.
@Suite struct GatherWriterTests {
    let pageSize = 4096

    @Test(arguments: [1, 2, 7, 300])
    func gatheredBatchEqualsCopiedBatch(entries: Int) throws {
        let pages = UnsafeMutableRawBufferPointer.allocate(byteCount: entries * pageSize, alignment: 4096)
        defer { pages.deallocate() }
        for index in 0..<(entries * pageSize) { pages[index] = UInt8(truncatingIfNeeded: index &* 31 &+ index >> 12) }
        let plainBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 64)
        let gatherBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 64)
        let segments = UnsafeMutableBufferPointer<UnsafeRawBufferPointer>.allocate(capacity: 2 * entries + 3)
        defer {
            plainBuffer.deallocate()
            gatherBuffer.deallocate()
            segments.deallocate()
        }
        var plain = PageBatchWriter(buffer: plainBuffer, pageSize: pageSize)
        var gather = PageBatchWriter(buffer: gatherBuffer, pageSize: pageSize, segments: segments)
        plain.reset(round: 5)
        gather.reset(round: 5)
        for entry in 0..<entries {
            let page = UnsafeRawPointer(pages.baseAddress! + entry * pageSize)
            // Every third entry is a zero marker, the rest raw (external in gather mode).
            if entry % 3 == 1 {
                plain.commitEntry(page: UInt64(entry), hash: 99, encoding: .zero, length: 0)
                gather.commitEntry(page: UInt64(entry), hash: 99, encoding: .zero, length: 0)
            } else {
                plain.payloadSlot.copyMemory(from: page, byteCount: pageSize)
                plain.commitEntry(page: UInt64(entry), hash: UInt64(entry) * 3, encoding: .raw, length: pageSize)
                gather.commitExternalEntry(page: UInt64(entry), hash: UInt64(entry) * 3, payload: page)
            }
        }
        #expect(gather.byteCount == plain.byteCount)
        let expected = Array(plain.finish())
        let gathered = gather.finishGathered()
        #expect(gathered.length == expected.count)
        #expect(gathered.parts[0].count == 0, "slot 0 is left for the frame header")
        var joined: [UInt8] = []
        for part in gathered.parts.dropFirst() { joined += part }
        #expect(joined == expected)
        try joined.withUnsafeBytes { bytes in
            var reader = try PageBatchReader(payload: bytes, pageSize: pageSize, pageCount: UInt64(entries))
            var seen = 0
            while try reader.next() != nil { seen += 1 }
            #expect(seen == entries)
        }
    }

    @Test func gatherWriterRespectsTheFrameLimit() {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        let segments = UnsafeMutableBufferPointer<UnsafeRawBufferPointer>.allocate(capacity: 2 * 4096 + 3)
        let page = UnsafeMutableRawPointer.allocate(byteCount: pageSize, alignment: 4096)
        defer {
            buffer.deallocate()
            segments.deallocate()
            page.deallocate()
        }
        var writer = PageBatchWriter(buffer: buffer, pageSize: pageSize, segments: segments)
        writer.reset(round: 0)
        var entries = 0
        while writer.hasRoomForPage {
            writer.commitExternalEntry(page: UInt64(entries), hash: 0, payload: page)
            entries += 1
        }
        // External pages do not use the buffer, but the frame limit still bounds the batch.
        #expect(writer.byteCount <= ProtocolLimits.maxFramePayload)
        #expect(
            writer.byteCount + 24 + pageSize > ProtocolLimits.maxFramePayload
                || entries == ProtocolLimits.maxEntriesPerBatch)
    }
}
