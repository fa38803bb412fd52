import FerryCodec
import FerryGuestMigration
import FerryKVMMigration
import FerryProtocol
import FerrySystem
import FerryTransport
import Foundation
import Testing

@testable import FerryMigration

/// The destination's data path over a real loopback connection: the table of a PAGE_BATCH is
/// read first, then the payloads are scattered straight into guest memory.
@Suite struct InPlaceReceiveTests {
    let pageSize = systemPageSize

    /// A connected pair of framed connections on 127.0.0.1.
    func connectedPair() throws -> (sender: FramedConnection, receiver: FramedConnection) {
        let listener = try TCPListener(try Endpoint.parse("127.0.0.1:0"))
        defer { listener.close() }
        let client = try TCPStream.connect(Endpoint(host: "127.0.0.1", port: listener.port), timeoutMs: 2000)
        let server = try listener.accept(timeoutMs: 2000)
        try server.setReceiveTimeout(ms: 5000)
        return (FramedConnection(client), FramedConnection(server))
    }

    /// Receives the next frame, which must be a PAGE_BATCH, into `sink`.
    func receiveBatch(_ connection: FramedConnection, _ sink: PageSink) throws -> Int {
        switch try connection.receive(direct: .pageBatch) {
        case .direct(_, let type, let length):
            #expect(type == .pageBatch)
            return try sink.receive(batchLength: length, from: connection)
        case .frame(let frame):
            Issue.record("expected a PAGE_BATCH, got \(frame.type)")
            return 0
        }
    }

    /// Pages of four kinds across several chunks: runs of adjacent raw pages (one scatter
    /// target each), LZ4 pages, words pages and zero pages over previously written memory (both
    /// must clear what was there); the destination ends
    /// up byte-identical with hashes that match, and the next frame is read in step.
    @Test func batchLandsInPlaceAcrossChunks() throws {
        let pageCount = 600
        let source = UnsafeMutableRawPointer.allocate(byteCount: pageCount * pageSize, alignment: pageSize)
        let destination = UnsafeMutableRawPointer.allocate(byteCount: pageCount * pageSize, alignment: pageSize)
        defer {
            source.deallocate()
            destination.deallocate()
        }
        for page in 0..<pageCount {
            let bytes = (source + page * pageSize).assumingMemoryBound(to: UInt8.self)
            switch page % 7 {
            case 0:  // zero
                for i in 0..<pageSize { bytes[i] = 0 }
            case 1, 2:  // compressible
                for i in 0..<pageSize { bytes[i] = UInt8(truncatingIfNeeded: i / 64 + page) }
            case 4:  // mostly zero
                for i in 0..<pageSize { bytes[i] = 0 }
                for word in [3, 200, 511] {
                    (source + page * pageSize).storeBytes(
                        of: UInt64(page) &* 0x9E37_79B9 | 1, toByteOffset: word * 8, as: UInt64.self)
                }
            default:
                for i in 0..<pageSize {
                    bytes[i] = UInt8(truncatingIfNeeded: (i &* 2_654_435_761 &+ page &* 97) >> 7)
                }
            }
        }
        // Garbage in the destination: zero pages must be written over it.
        destination.initializeMemory(as: UInt8.self, repeating: 0xEE, count: pageCount * pageSize)
        let hashTable = PageHashTable(pageCount: pageCount)
        let sink = PageSink(
            memory: GuestMemory(base: destination, size: pageCount * pageSize, pageSize: pageSize),
            pageCount: pageCount, hashTable: hashTable)
        let buffer = UnsafeMutableRawBufferPointer.allocate(
            byteCount: PageBatchWriter.bufferSize(pageSize: pageSize), alignment: 64)
        defer { buffer.deallocate() }

        let (sender, receiver) = try connectedPair()
        defer {
            sender.close()
            receiver.close()
        }
        let encoder = PageEncoder(pageSize: pageSize, mode: .lz4)
        let segments = UnsafeMutableBufferPointer<UnsafeRawBufferPointer>.allocate(
            capacity: ProtocolLimits.maxEntriesPerBatch + 2)
        defer { segments.deallocate() }
        var writer = PageBatchWriter(buffer: buffer, pageSize: pageSize, segments: segments)
        var counts = EncodingCounts()

        // First batch: every page raw (inline, 0x11 bytes), so every page counts as written and
        // the zero pages of the second batch must really be stored.
        writer.reset(round: 0)
        for page in 0..<pageCount {
            let slot = writer.payloadSlot
            slot.initializeMemory(as: UInt8.self, repeating: 0x11, count: pageSize)
            writer.commitEntry(
                page: UInt64(page), hash: PageHash.hash(slot, count: pageSize), encoding: .raw, length: pageSize)
        }
        var batch = writer.finishGathered()
        let firstReceive = BackgroundThread { try self.receiveBatch(receiver, sink) }
        try sender.send(.pageBatch, gather: batch.parts, length: batch.length)
        #expect(try firstReceive.wait() == pageCount)
        #expect(sink.staleCount == 0)

        // Second batch: the real pages, raw ones straight from `source` (gathered).
        writer.reset(round: 1)
        for page in 0..<pageCount {
            let pagePointer = UnsafeRawPointer(source + page * pageSize)
            encoder.mode = page % 7 == 3 ? .none : .lz4
            let encoded = encoder.encodeInPlace(page: pagePointer, slot: writer.payloadSlot)
            if encoded.encoding == .raw && page % 7 != 3 {
                let lz = encoder.encode(page: pagePointer, into: writer.payloadSlot)
                writer.commitEntry(page: UInt64(page), hash: lz.hash, encoding: lz.encoding, length: lz.length)
                if lz.encoding == .lz4 { counts.lz4 += 1 } else { counts.raw += 1 }
            } else if encoded.encoding == .raw {
                writer.commitExternalEntry(page: UInt64(page), hash: encoded.hash, payload: pagePointer)
                counts.raw += 1
            } else {
                writer.commitEntry(
                    page: UInt64(page), hash: encoded.hash, encoding: encoded.encoding, length: encoded.length)
                if encoded.encoding == .words { counts.words += 1 } else { counts.zero += 1 }
            }
        }
        #expect(counts.zero > 50 && counts.words > 50 && counts.lz4 > 100 && counts.raw > 50)
        batch = writer.finishGathered()
        let secondReceive = BackgroundThread { try self.receiveBatch(receiver, sink) }
        try sender.send(.pageBatch, gather: batch.parts, length: batch.length)
        try sender.send(StreamRoundEnd(round: 1, batches: 1, pages: UInt64(pageCount)))
        #expect(try secondReceive.wait() == pageCount)
        #expect(memcmp(source, destination, pageCount * pageSize) == 0, "destination differs from the source")
        #expect(sink.staleCount == 0)
        for page in [0, 1, 3, 599] {
            #expect(hashTable[page] == PageHash.hash(source + page * pageSize, count: pageSize))
        }
        // The frame after the batch is read in step.
        let end = try receiver.receive(StreamRoundEnd.self)
        #expect(end.round == 1)
    }

    /// A raw page whose bytes do not match the hash sent is stale until a matching copy arrives.
    @Test func mismatchedRawPageIsStaleUntilResent() throws {
        let pageCount = 4
        let destination = UnsafeMutableRawPointer.allocate(byteCount: pageCount * pageSize, alignment: pageSize)
        let page = UnsafeMutableRawPointer.allocate(byteCount: pageSize, alignment: pageSize)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        let segments = UnsafeMutableBufferPointer<UnsafeRawBufferPointer>.allocate(capacity: 8)
        defer {
            destination.deallocate()
            page.deallocate()
            buffer.deallocate()
            segments.deallocate()
        }
        page.initializeMemory(as: UInt8.self, repeating: 0x42, count: pageSize)
        let sink = PageSink(
            memory: GuestMemory(base: destination, size: pageCount * pageSize, pageSize: pageSize),
            pageCount: pageCount, hashTable: PageHashTable(pageCount: pageCount))
        let (sender, receiver) = try connectedPair()
        defer {
            sender.close()
            receiver.close()
        }
        var writer = PageBatchWriter(buffer: buffer, pageSize: pageSize, maxEntries: 4, segments: segments)
        for offset: UInt64 in [5, 0] {
            writer.reset(round: 0)
            writer.commitExternalEntry(page: 2, hash: PageHash.hash(page, count: pageSize) ^ offset, payload: page)
            let batch = writer.finishGathered()
            try sender.send(.pageBatch, gather: batch.parts, length: batch.length)
            #expect(try receiveBatch(receiver, sink) == 1)
            #expect(sink.staleCount == (offset == 0 ? 0 : 1))
            #expect(sink.firstStalePage == (offset == 0 ? nil : 2))
        }
        #expect(memcmp(destination + 2 * pageSize, page, pageSize) == 0)
    }

    /// Hand-built hostile batches: each is refused with a protocol error naming the problem,
    /// before any payload byte is written to guest memory.
    @Test(arguments: [
        ("duplicate", "appears twice"),
        ("short", "announce"),
        ("long", "bytes after the payloads"),
        ("wrongStream", "belongs to stream"),
        ("badPage", "beyond the image"),
    ])
    func hostileTablesAreRejected(_ kind: String, _ expected: String) throws {
        let pageCount = 1024
        let destination = UnsafeMutableRawPointer.allocate(byteCount: pageCount * pageSize, alignment: pageSize)
        defer { destination.deallocate() }
        destination.initializeMemory(as: UInt8.self, repeating: 0xAB, count: pageCount * pageSize)
        let sink = PageSink(
            memory: GuestMemory(base: destination, size: pageCount * pageSize, pageSize: pageSize),
            pageCount: pageCount, hashTable: PageHashTable(pageCount: pageCount),
            stripes: PageStripes(streamCount: 2), stream: 0)
        var entries: [(page: UInt64, length: Int, encoding: UInt8)] = [(1, pageSize, 2), (2, pageSize, 2)]
        var extra = 0
        switch kind {
        case "duplicate": entries.append((1, 0, 1))
        case "short": extra = -1
        case "long": extra = 1
        case "wrongStream": entries.append((600, 0, 1))
        default: entries.append((UInt64(pageCount), 0, 1))
        }
        var bytes: [UInt8] = []
        func le<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
        le(UInt32(0))
        le(UInt32(entries.count))
        for entry in entries {
            le(entry.page)
            le(UInt64(0))
            le(UInt32(entry.length))
            le(UInt32(entry.encoding))
        }
        let payloadBytes = entries.reduce(0) { $0 + $1.length } + extra
        bytes += [UInt8](repeating: 0x5A, count: payloadBytes)

        let (sender, receiver) = try connectedPair()
        defer {
            sender.close()
            receiver.close()
        }
        try bytes.withUnsafeBytes { try sender.send(.pageBatch, payload: $0) }
        let error = #expect(throws: ProtocolError.self) { _ = try receiveBatch(receiver, sink) }
        #expect(error?.message.contains(expected) == true, "\(error?.message ?? "no error")")
        let untouched = UnsafeRawBufferPointer(start: destination, count: pageCount * pageSize).allSatisfy {
            $0 == 0xAB
        }
        #expect(untouched, "a rejected batch wrote to guest memory")
        // The connection is now out of step: the next receive fails instead of misreading.
        #expect(throws: TransportError.self) { _ = try receiver.receive() }
    }

    /// The peer vanishing in the middle of the payloads is a transport error, not a hang or a
    /// crash.
    @Test func peerClosingMidPayloadIsPeerClosed() throws {
        let pageCount = 8
        let destination = UnsafeMutableRawPointer.allocate(byteCount: pageCount * pageSize, alignment: pageSize)
        defer { destination.deallocate() }
        let sink = PageSink(
            memory: GuestMemory(base: destination, size: pageCount * pageSize, pageSize: pageSize),
            pageCount: pageCount, hashTable: PageHashTable(pageCount: pageCount))
        let (sender, receiver) = try connectedPair()
        defer { receiver.close() }
        // A frame header announcing 2 raw pages, the table, then only half of the first page.
        var bytes: [UInt8] = []
        func le<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
        let length = 8 + 2 * 24 + 2 * pageSize
        le(FrameType.pageBatch.rawValue)
        le(UInt16(0))
        le(UInt32(length))
        le(UInt64(0))
        le(UInt32(0))
        le(UInt32(2))
        for page: UInt64 in [3, 4] {
            le(page)
            le(UInt64(0))
            le(UInt32(pageSize))
            le(UInt32(2))
        }
        bytes += [UInt8](repeating: 1, count: pageSize / 2)
        try bytes.withUnsafeBytes { try sender.stream.writeAll($0) }
        sender.stream.shutdownWrite()
        let error = #expect(throws: TransportError.self) { _ = try receiveBatch(receiver, sink) }
        #expect(error?.code == .peerClosed, "\(error?.message ?? "")")
        #expect(error?.message.contains("mid-frame") == true, "\(error?.message ?? "")")
        sender.close()
    }
}
