import FerryCodec
import FerryDiskMove
import FerryProtocol
import FerrySystem
import FerryTestSupport
import FerryTransport
import Foundation
import Testing

/// A source that breaks Protocol.md section 10, written with the frame layer directly: the
/// destination must abort with the right reason and leave nothing behind.
@Suite("Disk move: a hostile source")
struct DiskMoveHostileTests {
    /// Connects to a fresh receiver, offers a 1 MiB disk of 16 blocks, and returns the connection
    /// after `DISK_ACCEPT`.
    static func offer(_ receiver: ReceiverRun, blocks: UInt64 = 4) throws -> FramedConnection {
        let connection = FramedConnection(
            try TCPStream.connect(Endpoint(host: "127.0.0.1", port: receiver.port), timeoutMs: 5000))
        try connection.stream.setReceiveTimeout(ms: 10_000)
        try connection.send(
            DiskHello(
                blockSize: 65536, diskSize: 1 << 20, allocatedBytes: 1 << 18, blocksToSend: blocks,
                sourceName: "hostile", diskName: "x.img"))
        let reply = try connection.receive()
        #expect(reply.type == .diskAccept)
        return connection
    }

    /// A `DISK_BLOCK` payload: block `index` of 64 KiB bytes `fill`, raw, with its true hash
    /// unless `hash` is given.
    static func block(_ index: UInt64, fill: UInt8, hash: UInt64? = nil, dataBytes: Int = 65536) -> [UInt8] {
        let data = [UInt8](repeating: fill, count: 65536)
        var payload = [UInt8](repeating: 0, count: DiskMoveLimits.blockHeaderSize)
        let value = hash ?? data.withUnsafeBytes { PageHash.hash($0) }
        payload.withUnsafeMutableBytes {
            DiskBlockHeader(index: index, hash: value, encoding: .raw).encode(to: $0.baseAddress!)
        }
        return payload + data.prefix(dataBytes)
    }

    /// Sends `payloads` as `DISK_BLOCK`s and returns the destination's `ABORT` (reason, message).
    static func abortAfter(_ payloads: [[UInt8]], on connection: FramedConnection) throws -> (UInt16, String) {
        for payload in payloads {
            try payload.withUnsafeBytes { try connection.send(.diskBlock, payload: $0) }
        }
        do {
            _ = try connection.receive()
        } catch {
            return (error.abortReason ?? 0, error.message)
        }
        Issue.record("the destination did not abort")
        return (0, "")
    }

    @Test(
        "blocks out of order, a raw block of the wrong length, a wrong hash: ABORT with its reason, no .partial",
        arguments: ["order", "length", "hash"])
    func hostileBlocks(_ fault: String) throws {
        let scratch = Scratch()
        let target = scratch.file("target.img")
        let receiver = try ReceiverRun(path: target)
        let connection = try Self.offer(receiver)
        defer { connection.close() }
        let payloads: [[UInt8]]
        switch fault {
        case "order": payloads = [Self.block(5, fill: 1), Self.block(3, fill: 2)]
        case "length": payloads = [Self.block(1, fill: 1, dataBytes: 1000)]
        default: payloads = [Self.block(2, fill: 7, hash: 42)]
        }
        let (reason, message) = try Self.abortAfter(payloads, on: connection)
        let received = receiver.thread.result()
        print("\(fault): ABORT \(AbortReason.name(wireValue: reason)): \(message)")
        #expect(reason == (fault == "hash" ? AbortReason.verification : .protocolViolation).rawValue)
        #expect(throws: DiskMoveError.self) { try received.get() }
        #expect(!FileManager.default.fileExists(atPath: target))
        #expect(!FileManager.default.fileExists(atPath: target + ".partial"))
    }

    @Test(
        "onto an older copy: a DISK_DELTA whose counts do not make the disk, or a block before it: ABORT protocol, the old copy as it was",
        arguments: ["counts", "block"])
    func hostileDelta(_ fault: String) throws {
        let scratch = Scratch()
        let target = scratch.file("target.img")
        let old = Data((0..<(1 << 19)).map { UInt8(truncatingIfNeeded: $0 / 4096) })
        try old.write(to: URL(fileURLWithPath: target))
        let receiver = try ReceiverRun(path: target, base: target)
        let connection = try Self.offer(receiver)
        defer { connection.close() }
        let frame = try connection.receive()
        #expect(frame.type == .diskBaseHashes)
        let hashes = try DiskBaseHashes(payload: frame.payload)
        #expect(hashes.firstBlock == 0 && hashes.hashes.count == 16)
        #expect(hashes.hashes[0] == old.prefix(65536).withUnsafeBytes { PageHash.hash($0) })
        #expect(hashes.hashes[15] == PageHash.zeroPage(pageSize: 65536))  // past the old copy's end: zeros
        let payloads: [[UInt8]]
        if fault == "counts" {
            try connection.send(DiskDelta(blocksToSend: 4, blocksUnchanged: 4))
            payloads = []
        } else {
            payloads = [Self.block(1, fill: 1)]
        }
        let (reason, message) = try Self.abortAfter(payloads, on: connection)
        print("delta \(fault): ABORT \(AbortReason.name(wireValue: reason)): \(message)")
        #expect(reason == AbortReason.protocolViolation.rawValue)
        #expect(throws: DiskMoveError.self) { try receiver.thread.result().get() }
        #expect(try Data(contentsOf: URL(fileURLWithPath: target)) == old)
        #expect(!FileManager.default.fileExists(atPath: target + ".partial"))
    }

    @Test("DISK_END with fewer blocks than announced fails verification; nothing is renamed")
    func fewerBlocksThanAnnounced() throws {
        let scratch = Scratch()
        let target = scratch.file("target.img")
        let receiver = try ReceiverRun(path: target)
        let connection = try Self.offer(receiver, blocks: 2)
        defer { connection.close() }
        try Self.block(0, fill: 9).withUnsafeBytes { try connection.send(.diskBlock, payload: $0) }
        try connection.send(DiskEnd(blocksSent: 1, digest: 0))
        var reason: UInt16 = 0
        do {
            _ = try connection.receive()
        } catch {
            reason = error.abortReason ?? 0
        }
        _ = receiver.thread.result()
        #expect(reason == AbortReason.verification.rawValue)
        #expect(!FileManager.default.fileExists(atPath: target))
        #expect(!FileManager.default.fileExists(atPath: target + ".partial"))
    }

    @Test("DISK_HELLO with a bad block size, or more allocated bytes than the disk has, is malformed")
    func helloRejections() throws {
        #expect(throws: ProtocolError.self) {
            let hello = DiskHello(
                blockSize: 65536, diskSize: 1 << 20, allocatedBytes: 1 << 18, blocksToSend: 4, sourceName: "s",
                diskName: "d")
            var payload = hello.encodedPayload()
            payload[12] = 0x01  // block_size 65537
            _ = try payload.withUnsafeBytes { try DiskHello(payload: $0) }
        }
        #expect(throws: ProtocolError.self) {
            let hello = DiskHello(
                blockSize: 65536, diskSize: 1 << 20, allocatedBytes: 1 << 18, blocksToSend: 4, sourceName: "s",
                diskName: "d")
            var payload = hello.encodedPayload()
            payload[24...31] = [0, 0, 0x20, 0, 0, 0, 0, 0]  // allocated_bytes 2 MiB > disk_size
            _ = try payload.withUnsafeBytes { try DiskHello(payload: $0) }
        }
    }

    @Test("while a move waits for its resume, another DISK_HELLO is refused busy and a stranger's DISK_RESUME too")
    func heldMoveRefusesOthers() throws {
        let scratch = Scratch()
        let target = scratch.file("target.img")
        let receiver = try ReceiverRun(path: target, resumeWindowMs: 2000)
        let first = try Self.offer(receiver)
        try Self.block(0, fill: 3).withUnsafeBytes { try first.send(.diskBlock, payload: $0) }
        first.close()  // lost: the receiver holds the move for its resume window
        Thread.sleep(forTimeInterval: 0.3)
        #expect(FileManager.default.fileExists(atPath: target + ".partial"))
        for firstFrame in ["hello", "resume"] {
            let other = FramedConnection(
                try TCPStream.connect(Endpoint(host: "127.0.0.1", port: receiver.port), timeoutMs: 5000))
            defer { other.close() }
            try other.stream.setReceiveTimeout(ms: 10_000)
            if firstFrame == "hello" {
                try other.send(
                    DiskHello(
                        blockSize: 65536, diskSize: 1 << 20, allocatedBytes: 1 << 18, blocksToSend: 4,
                        sourceName: "other", diskName: "y.img"))
            } else {
                try other.send(DiskResume(moveID: 1, moveToken: SessionToken(low: 1, high: 2)))
            }
            let reply = try other.receive()
            #expect(reply.type == .refuse)
            #expect(try Refuse(payload: reply.payload).reason == .busy)
        }
        #expect(FileManager.default.fileExists(atPath: target + ".partial"))
        // No resume within the window: the move fails and its partial copy goes.
        #expect(throws: DiskMoveError.self) { try receiver.thread.wait() }
        #expect(!FileManager.default.fileExists(atPath: target + ".partial"))
    }

    @Test("a move of 2 streams whose second never joins fails when the join time passes; no .partial")
    func streamNeverJoins() throws {
        let scratch = Scratch()
        let target = scratch.file("target.img")
        let listener = try TCPListener(try Endpoint.parse("127.0.0.1:0"))
        var options = DiskReceiveOptions(path: target, acceptTimeoutMs: 20_000)
        options.joinTimeoutMs = 1000
        let receiver = BackgroundThread { [options] in
            defer { listener.close() }
            return try DiskReceiver(listener: listener, options: options, logger: testLogger).run()
        }
        let connection = FramedConnection(
            try TCPStream.connect(Endpoint(host: "127.0.0.1", port: listener.port), timeoutMs: 5000))
        defer { connection.close() }
        try connection.stream.setReceiveTimeout(ms: 10_000)
        try connection.send(
            DiskHello(
                blockSize: 65536, diskSize: 1 << 20, allocatedBytes: 1 << 18, blocksToSend: 4, streamCount: 2,
                sourceName: "half", diskName: "x.img"))
        #expect(try connection.receive().type == .diskAccept)
        let outcome = receiver.result()
        guard case .failure(let error as DiskMoveError) = outcome else {
            Issue.record("the destination must fail: \(outcome)")
            return
        }
        print("stream never joins: \(error.message)")
        #expect(error.message.contains("only 1 of the source's 2 streams joined"))
        #expect(!FileManager.default.fileExists(atPath: target + ".partial"))
    }

    @Test(
        "a destination whose base hashes skip blocks, or that chooses a version never offered: the source fails (protocol)",
        arguments: ["gap", "version"])
    func hostileDestination(_ fault: String) throws {
        let scratch = Scratch()
        let source = scratch.file("source.img")
        try makeSparseDisk(source, size: 8 << 20)
        let listener = try TCPListener(try Endpoint.parse("127.0.0.1:0"))
        let destination = BackgroundThread {
            defer { listener.close() }
            let connection = FramedConnection(try listener.accept(timeoutMs: 10_000))
            defer { connection.close() }
            try connection.stream.setReceiveTimeout(ms: 10_000)
            #expect(try connection.receive().type == .diskHello)
            try connection.send(
                DiskAccept(
                    version: fault == "version" ? 3 : 2, flags: DiskAccept.baseFlag, freeBytes: 1 << 30, moveID: 1,
                    moveToken: SessionToken.random(), destinationName: "hostile"))
            try connection.send(DiskBaseHashes(firstBlock: 0, hashes: [1, 2]))
            try connection.send(DiskBaseHashes(firstBlock: 5, hashes: [3]))  // blocks 2 … 4 are missing
            _ = try? connection.receive()
        }
        let sent = send(source, port: listener.port)
        _ = destination.result()
        guard case .failure(let error) = sent else {
            Issue.record("the source must fail")
            return
        }
        print("hostile destination \(fault): \(error.message)")
        #expect(error.code == .protocolViolation)
        #expect(error.message.contains(fault == "gap" ? "DISK_BASE_HASHES covers blocks from 5" : "version 3"))
    }
}
