import FerryDiskMove
import FerryGuest
import FerryProtocol
import FerrySystem
import FerryTestSupport
import FerryTransport
import Foundation
import Logging
import Synchronization
import Testing

let testLogger: Logger = {
    var logger = Logger(label: "test.diskmove")
    logger.logLevel = .warning
    return logger
}()

/// A 256 MiB disk, about 10% allocated with the standard page mix: 16 windows of 2.5 MiB kept
/// from a generated image (whose zero pages are holes already), the rest punched out.
func makeSparseDisk(_ path: String, size: Int = 256 << 20) throws {
    try ImageGenerator.create(
        path: path, size: size, mix: try ImageMix.parse("zero=35,sparse=10,text=30,random=25"), seed: 7,
        pageSize: 4096, overwrite: true)
    try SparseDisk.punch(path: path, windows: 16, keepBytes: 5 << 19)
}

/// A receiver on its own thread, listening on a loopback port.
struct ReceiverRun {
    let port: UInt16
    let thread: BackgroundThread<DiskMoveReport>

    init(
        path: String, security: ConnectionSecurity = .none, acceptTimeoutMs: Int = 20_000, resumeWindowMs: Int = 30_000,
        base: String? = nil
    ) throws {
        let listener = try TCPListener(try Endpoint.parse("127.0.0.1:0"))
        port = listener.port
        var options = DiskReceiveOptions(path: path, security: security, acceptTimeoutMs: acceptTimeoutMs)
        options.resumeWindowMs = resumeWindowMs
        options.base = base
        thread = BackgroundThread { [options] in
            defer { listener.close() }
            return try DiskReceiver(listener: listener, options: options, logger: testLogger).run()
        }
    }
}

func send(_ path: String, port: UInt16, security: ConnectionSecurity = .none, streams: Int = 1) -> Result<
    DiskMoveReport, DiskMoveError
> {
    do throws(DiskMoveError) {
        var options = DiskSendOptions(
            path: path, destination: Endpoint(host: "127.0.0.1", port: port), security: security)
        options.streams = streams
        return .success(try DiskSender(options: options, logger: testLogger).run())
    } catch {
        return .failure(error)
    }
}

@Suite("Disk move")
struct DiskMoveTests {
    @Test("the extent map sends exactly the blocks that intersect an extent (brute force)")
    func extentMapMatchesBruteForce() {
        var random = SplitMix64(seed: 42)
        for _ in 0..<200 {
            let blockSize = 1 << Int(12 + random.next() % 5)
            let size = Int(1 + random.next() % UInt64(40 * blockSize))
            var extents: [Range<Int>] = []
            var cursor = Int(random.next() % UInt64(3 * blockSize))
            while cursor < size {
                let end = min(size, cursor + 1 + Int(random.next() % UInt64(2 * blockSize)))
                extents.append(cursor..<end)
                cursor = end + 1 + Int(random.next() % UInt64(3 * blockSize))
            }
            let map = DiskExtentMap(diskSize: size, blockSize: blockSize, extents: extents)
            let expected = (0..<map.blockCount).filter { block in
                let range = block * blockSize..<min(size, (block + 1) * blockSize)
                return extents.contains { $0.overlaps(range) }
            }
            #expect(map.blocks == expected)
            #expect(map.allocatedBytes == extents.reduce(0) { $0 + $1.count })
        }
    }

    @Test("a 256 MiB disk, 10% allocated, moves equal, sparse, and within 1.05 x its LZ4 size")
    func movesSparseDisk() throws {
        let scratch = Scratch()
        let source = scratch.file("source.img")
        let target = scratch.file("target.img")
        try makeSparseDisk(source)
        let reference = try SparseDisk.lz4Reference(source)
        let receiver = try ReceiverRun(path: target)
        let sent = try send(source, port: receiver.port).get()
        let received = try receiver.thread.wait()
        #expect(try filesEqual(source, target))
        let (sourceUsed, targetUsed) = (SparseDisk.usedBytes(source), SparseDisk.usedBytes(target))
        print(
            "disk move: disk \(sent.diskSize) B, allocated \(sent.allocatedBytes) B (du source \(sourceUsed), destination \(targetUsed)), "
                + "wire \(sent.wireBytes) B, LZ4 reference \(reference.compressed) B (ratio "
                + String(format: "%.3f", Double(sent.wireBytes) / Double(reference.compressed)) + "), "
                + "blocks \(sent.blocksSent)/\(sent.blockCount), "
                + String(format: "%.2f s, %.0f MB/s", sent.seconds, sent.megabytesPerSecond))
        #expect(reference.allocated == sent.allocatedBytes)
        #expect(Double(sent.allocatedBytes) / Double(sent.diskSize) > 0.08)
        #expect(Double(sent.allocatedBytes) / Double(sent.diskSize) < 0.12)
        #expect(abs(targetUsed - sourceUsed) <= sourceUsed / 20)
        #expect(Double(sent.wireBytes) <= 1.05 * Double(reference.compressed))
        #expect(received.digest == sent.digest)
        #expect(!FileManager.default.fileExists(atPath: target + ".partial"))
    }

    @Test("on 4 encrypted streams the disk moves equal and as sparse; a flipped bit on stream 2 fails it")
    func severalStreams() throws {
        let scratch = Scratch()
        let source = scratch.file("source.img")
        let target = scratch.file("target.img")
        try makeSparseDisk(source)
        let key = SharedKey.random()
        let receiver = try ReceiverRun(path: target, security: ConnectionSecurity(key: key))
        let sent = try send(
            source, port: receiver.port, security: ConnectionSecurity(key: key, encrypt: true), streams: 4
        ).get()
        let received = try receiver.thread.wait()
        print(
            "4 streams: wire \(sent.wireBytes) B (destination counted \(received.wireBytes)), blocks \(sent.blocksSent), "
                + String(format: "%.2f s", sent.seconds))
        #expect(try filesEqual(source, target))
        #expect(received.blocksSent == sent.blocksSent)
        #expect(received.digest == sent.digest)
        #expect(abs(SparseDisk.usedBytes(target) - SparseDisk.usedBytes(source)) <= SparseDisk.usedBytes(source) / 20)

        let flipped = scratch.file("flipped.img")
        let second = try ReceiverRun(path: flipped)
        let seen = Atomic<Int>(0)
        let relay = try Relay(to: second.port) { frame in
            // The third connection is stream 2; its 20th block gets a flipped bit.
            guard frame.connection.id == 2, frame.direction == .toDestination, frame.type == 27 else { return .forward }
            return seen.add(1, ordering: .relaxed).newValue == 20 ? .corrupt(.lastByte) : .forward
        }
        defer { relay.stop() }
        let failed = send(source, port: relay.port, streams: 4)
        let outcome = second.thread.result()
        #expect(throws: DiskMoveError.self) { try failed.get() }
        if case .failure(let sourceError) = failed { print("flipped on stream 2: source: \(sourceError.message)") }
        guard case .failure(let error as DiskMoveError) = outcome else {
            Issue.record("the destination must fail: \(outcome)")
            return
        }
        print("flipped on stream 2: destination: \(error.message)")
        #expect(error.code == .verification)
        #expect(!FileManager.default.fileExists(atPath: flipped))
        #expect(!FileManager.default.fileExists(atPath: flipped + ".partial"))
    }

    @Test("a flipped bit in a block fails verification: no disk, no .partial, the source names the block")
    func flippedBitFailsVerification() throws {
        let scratch = Scratch()
        let source = scratch.file("source.img")
        let target = scratch.file("target.img")
        try makeSparseDisk(source)
        let receiver = try ReceiverRun(path: target)
        let seen = Atomic<Int>(0)
        let relay = try Relay(to: receiver.port) { frame in
            guard frame.direction == .toDestination, frame.type == 27 else { return .forward }
            return seen.add(1, ordering: .relaxed).newValue == 100 ? .corrupt(.lastByte) : .forward
        }
        defer { relay.stop() }
        let sent = send(source, port: relay.port)
        let received = receiver.thread.result()
        guard case .failure(let error) = sent else {
            Issue.record("the source must fail")
            return
        }
        print("source: \(error.code): \(error.message)")
        #expect(error.message.contains("block "))
        #expect(error.peerReason == .verification)
        guard case .failure(let destinationError as DiskMoveError) = received else {
            Issue.record("the destination must fail: \(received)")
            return
        }
        #expect(destinationError.code == .verification)
        #expect(!FileManager.default.fileExists(atPath: target))
        #expect(!FileManager.default.fileExists(atPath: target + ".partial"))
    }

    @Test("a connection cut halfway resumes: the disk moves equal, resending at most 5% of the disk")
    func cutConnectionResumes() throws {
        let scratch = Scratch()
        let source = scratch.file("source.img")
        let target = scratch.file("target.img")
        try makeSparseDisk(source)
        let receiver = try ReceiverRun(path: target)
        let relay = try Relay(to: receiver.port)
        defer { relay.stop() }
        relay.cut(afterBytes: 7 << 20)  // about half of the ~14.8 MB the move puts on the wire
        let sent = try send(source, port: relay.port).get()
        let received = try receiver.thread.wait()
        let resentBytes = sent.blocksResent * sent.blockSize
        print(
            "resume: cut after 7 MiB of \(sent.wireBytes) wire bytes; resumed \(sent.resumes)x, \(sent.blocksResent) blocks "
                + "(\(resentBytes) B of disk, "
                + String(format: "%.2f%%", Double(resentBytes) * 100 / Double(sent.diskSize))
                + ") sent again; \(relay.cutCount) cut")
        #expect(relay.cutCount == 1)
        #expect(sent.resumes == 1)
        #expect(received.resumes == 1)
        #expect(resentBytes <= sent.diskSize / 20)
        #expect(try filesEqual(source, target))
        #expect(!FileManager.default.fileExists(atPath: target + ".partial"))
    }

    @Test(
        "a stream cut halfway resumes every stream: the disk moves equal, resending at most 5% of the disk",
        arguments: [2, 0])
    func cutStreamResumes(stream: Int) throws {
        let scratch = Scratch()
        let source = scratch.file("source.img")
        let target = scratch.file("target.img")
        try makeSparseDisk(source)
        let receiver = try ReceiverRun(path: target)
        let seen = Atomic<Int>(0)
        let relay = try Relay(to: receiver.port) { frame in
            // Connection N is stream N of 4; it is cut at its 80th block (~50% of its share).
            guard frame.connection.id == stream, frame.direction == .toDestination, frame.type == 27 else {
                return .forward
            }
            return seen.add(1, ordering: .relaxed).newValue == 80 ? .cut : .forward
        }
        defer { relay.stop() }
        let sent = try send(source, port: relay.port, streams: 4).get()
        let received = try receiver.thread.wait()
        let resentBytes = sent.blocksResent * sent.blockSize
        print(
            "resume with 4 streams: stream \(stream) cut at its 80th block; resumed \(sent.resumes)x, \(sent.blocksResent) blocks "
                + "(\(resentBytes) B of disk, "
                + String(format: "%.2f%%", Double(resentBytes) * 100 / Double(sent.diskSize))
                + ") sent again; " + String(format: "%.2f s", sent.seconds))
        #expect(relay.cutCount == 1)
        #expect(sent.resumes == 1)
        #expect(received.resumes == 1)
        #expect(received.blocksSent == sent.blocksSent)
        #expect(resentBytes <= sent.diskSize / 20)
        #expect(try filesEqual(source, target))
        #expect(!FileManager.default.fileExists(atPath: target + ".partial"))
    }

    @Test(
        "a connection cut with no resume: the source fails, the destination removes its .partial, PATH untouched",
        arguments: [1, 4])
    func cutConnectionLeavesNothing(streams: Int) throws {
        let scratch = Scratch()
        let source = scratch.file("source.img")
        let target = scratch.file("target.img")
        try makeSparseDisk(source)
        try Data("old copy".utf8).write(to: URL(fileURLWithPath: target))
        let listener = try TCPListener(try Endpoint.parse("127.0.0.1:0"))
        var options = DiskReceiveOptions(path: target, overwrite: true, acceptTimeoutMs: 20_000)
        options.resumeWindowMs = 2000
        let receiver = BackgroundThread { [options] in
            defer { listener.close() }
            return try DiskReceiver(listener: listener, options: options, logger: testLogger).run()
        }
        let relay = try Relay(to: listener.port, options: Relay.Options(afterCut: .stopListening))
        defer { relay.stop() }
        relay.cut(afterBytes: 6 << 20)
        let sent = send(source, port: relay.port, streams: streams)
        let received = receiver.result()
        #expect(throws: (any Error).self) { try sent.get() }
        #expect(throws: (any Error).self) { try received.get() }
        #expect(try String(contentsOfFile: target, encoding: .utf8) == "old copy")
        #expect(!FileManager.default.fileExists(atPath: target + ".partial"))
    }

    @Test("an existing PATH is refused before any block, and PATH is untouched")
    func existingDiskRefused() throws {
        let scratch = Scratch()
        let source = scratch.file("source.img")
        let target = scratch.file("target.img")
        try makeSparseDisk(source, size: 8 << 20)
        try Data("keep me".utf8).write(to: URL(fileURLWithPath: target))
        let receiver = try ReceiverRun(path: target)
        let sent = send(source, port: receiver.port)
        _ = receiver.thread.result()
        guard case .failure(let error) = sent else {
            Issue.record("the source must be refused")
            return
        }
        #expect(error.code == .refused)
        #expect(error.message.contains("exists"))
        #expect(try String(contentsOfFile: target, encoding: .utf8) == "keep me")
    }

    @Test("a wrong key is refused: nothing is written")
    func wrongKeyRefused() throws {
        let scratch = Scratch()
        let source = scratch.file("source.img")
        let target = scratch.file("target.img")
        try makeSparseDisk(source, size: 8 << 20)
        let receiver = try ReceiverRun(
            path: target, security: ConnectionSecurity(key: SharedKey.random()), acceptTimeoutMs: 1500)
        let sent = send(source, port: receiver.port, security: ConnectionSecurity(key: SharedKey.random()))
        let received = receiver.thread.result()
        guard case .failure(let error) = sent else {
            Issue.record("the source must be refused")
            return
        }
        #expect(error.code == .refused)
        // The receiver closed the stranger's connection and listened on until its accept timeout.
        #expect(throws: (any Error).self) { try received.get() }
        #expect(!FileManager.default.fileExists(atPath: target))
        #expect(!FileManager.default.fileExists(atPath: target + ".partial"))
    }

    @Test("with a key and --encrypt the disk moves equal")
    func encryptedMove() throws {
        let scratch = Scratch()
        let source = scratch.file("source.img")
        let target = scratch.file("target.img")
        try makeSparseDisk(source, size: 32 << 20)
        let key = SharedKey.random()
        let receiver = try ReceiverRun(path: target, security: ConnectionSecurity(key: key))
        let sent = try send(source, port: receiver.port, security: ConnectionSecurity(key: key, encrypt: true)).get()
        _ = try receiver.thread.wait()
        #expect(sent.security.contains("encrypted"))
        #expect(try filesEqual(source, target))
    }
}
