import FerryDiskMove
import FerrySystem
import FerryTestSupport
import FerryTransport
import Foundation
import Glibc
import Synchronization
import Testing

/// A disk that moved and changed on the destination: `original` (the source's copy, kept),
/// `moved` (the destination's, changed afterwards), and the bytes of the blocks that changed.
struct ChangedDisk {
    let original: String
    let moved: String
    let changedBlocks: Int
    let blockSize = ChangedDisk.blockSize
    static let blockSize = 65536

    var changedBytes: Int { changedBlocks * blockSize }

    /// Moves a 256 MiB disk, ~10% allocated, then changes 1% of the moved copy's blocks: 39 blocks
    /// get new random bytes (data and hole blocks alike), one data block becomes a hole and one
    /// hole becomes data.
    init(in scratch: Scratch) throws {
        original = scratch.file("original.img")
        moved = scratch.file("moved.img")
        try makeSparseDisk(original)
        let receiver = try ReceiverRun(path: moved)
        _ = try send(original, port: receiver.port).get()
        _ = try receiver.thread.wait()
        let blockSize = Self.blockSize
        let blockCount = (256 << 20) / blockSize
        let extents = try SparseDisk.dataExtents(moved)
        let isData = { (block: Int) in
            extents.contains { $0.overlaps(block * 65536..<(block + 1) * 65536) }
        }
        var random = SplitMix64(seed: 15)
        var chosen = Set<Int>()
        while chosen.count < 39 { chosen.insert(Int(random.next() % UInt64(blockCount))) }
        let punched = (0..<blockCount).first { isData($0) && !chosen.contains($0) }!
        let filled = (0..<blockCount).first { !isData($0) && !chosen.contains($0) && $0 != punched }!
        let file = try PositionedFile(updating: moved)
        var bytes = [UInt8](repeating: 0, count: blockSize)
        for block in chosen.sorted() + [filled] {
            for index in bytes.indices { bytes[index] = UInt8(truncatingIfNeeded: random.next()) }
            try bytes.withUnsafeBytes { try file.write($0, at: block * blockSize) }
        }
        try file.punchHole(at: punched * blockSize, count: blockSize)
        try file.sync()
        changedBlocks = chosen.count + 2
    }
}

@Suite("Disk move onto an older copy")
struct DiskDeltaTests {
    @Test("migrating back after 1% of the blocks changed sends <= 1.1 x the changed bytes; equal and as sparse")
    func migrateBack() throws {
        let scratch = Scratch()
        let disk = try ChangedDisk(in: scratch)
        #expect(try !filesEqual(disk.original, disk.moved))
        // Back onto the original: PATH is the older copy (ferry disk receive --update).
        let receiver = try ReceiverRun(path: disk.original, base: disk.original)
        let sent = try send(disk.moved, port: receiver.port).get()
        let received = try receiver.thread.wait()
        let (movedUsed, backUsed) = (SparseDisk.usedBytes(disk.moved), SparseDisk.usedBytes(disk.original))
        print(
            "migrate back: \(disk.changedBlocks) blocks changed (\(disk.changedBytes) B); sent \(sent.blocksSent) blocks, "
                + "\(sent.blocksUnchanged) unchanged; wire \(sent.wireBytesSent) B ("
                + String(format: "%.3f", Double(sent.wireBytesSent) / Double(disk.changedBytes))
                + " x changed), hash table back \(sent.baseHashBytes) B; base copy \(received.baseCopy); "
                + String(
                    format: "hashing: source %.3f s, destination %.3f s (copy, hash, verify); total %.2f s",
                    sent.baseSeconds, received.baseSeconds, sent.seconds)
                + "; du \(movedUsed) vs \(backUsed)")
        #expect(try filesEqual(disk.moved, disk.original))
        #expect(sent.blocksSent == disk.changedBlocks)
        #expect(received.blocksUnchanged == sent.blockCount - disk.changedBlocks)
        #expect(Double(sent.wireBytesSent) <= 1.1 * Double(disk.changedBytes))
        #expect(abs(backUsed - movedUsed) <= movedUsed / 20)
        #expect(received.digest == sent.digest)
        #expect(!FileManager.default.fileExists(atPath: disk.original + ".partial"))
    }

    @Test("a flipped bit on the way back fails the move and leaves the older copy as it was")
    func flippedBitKeepsOldCopy() throws {
        let scratch = Scratch()
        let disk = try ChangedDisk(in: scratch)
        let kept = scratch.file("kept.img")
        try Host.run(["/usr/bin/cp", "--sparse=always", disk.original, kept])
        let receiver = try ReceiverRun(path: disk.original, base: disk.original)
        let seen = Atomic<Int>(0)
        let relay = try Relay(to: receiver.port) { frame in
            guard frame.direction == .toDestination, frame.type == 27 else { return .forward }
            return seen.add(1, ordering: .relaxed).newValue == 10 ? .corrupt(.lastByte) : .forward
        }
        defer { relay.stop() }
        let sent = send(disk.moved, port: relay.port)
        let received = receiver.thread.result()
        guard case .failure(let error) = sent, case .failure(let destinationError as DiskMoveError) = received else {
            Issue.record("both sides must fail: \(sent), \(received)")
            return
        }
        print("flipped on the way back: source: \(error.message)")
        #expect(destinationError.code == .verification)
        #expect(try filesEqual(disk.original, kept))
        #expect(SparseDisk.usedBytes(disk.original) == SparseDisk.usedBytes(kept))
        #expect(!FileManager.default.fileExists(atPath: disk.original + ".partial"))
    }

    @Test("--base elsewhere: the old copy is only read, the new disk lands at PATH")
    func baseElsewhere() throws {
        let scratch = Scratch()
        let disk = try ChangedDisk(in: scratch)
        let kept = scratch.file("kept.img")
        try Host.run(["/usr/bin/cp", "--sparse=always", disk.original, kept])
        let target = scratch.file("new.img")
        let receiver = try ReceiverRun(path: target, base: disk.original)
        let sent = try send(disk.moved, port: receiver.port, streams: 3).get()
        _ = try receiver.thread.wait()
        #expect(sent.blocksSent == disk.changedBlocks)
        #expect(try filesEqual(disk.moved, target))
        #expect(try filesEqual(disk.original, kept))
    }

    @Test("a version-1 source onto an older copy gets a full move, equal")
    func versionOneSourceMovesInFull() throws {
        let scratch = Scratch()
        let disk = try ChangedDisk(in: scratch)
        let receiver = try ReceiverRun(path: disk.original, base: disk.original)
        var options = DiskSendOptions(path: disk.moved, destination: Endpoint(host: "127.0.0.1", port: receiver.port))
        options.highestVersion = 1
        let sent = try DiskSender(options: options, logger: testLogger).run()
        let received = try receiver.thread.wait()
        let map = try DiskExtentMap.map(path: disk.moved, diskSize: sent.diskSize, blockSize: sent.blockSize)
        #expect(sent.blocksSent == map.blocks.count)
        #expect(sent.blocksUnchanged == 0)
        #expect(received.baseCopy.isEmpty)
        #expect(try filesEqual(disk.moved, disk.original))
    }

    @Test("a cut halfway through the move back resumes: equal, resending only what was in flight")
    func cutMoveBackResumes() throws {
        let scratch = Scratch()
        let disk = try ChangedDisk(in: scratch)
        let receiver = try ReceiverRun(path: disk.original, base: disk.original)
        let relay = try Relay(to: receiver.port)
        defer { relay.stop() }
        relay.cut(afterBytes: 32_800 + 1_300_000, going: .toDestination)  // the hash table goes the other way
        let sent = try send(disk.moved, port: relay.port).get()
        let received = try receiver.thread.wait()
        print(
            "move back cut at ~50%: resumed \(sent.resumes)x, \(sent.blocksResent) blocks sent again, "
                + "\(sent.blocksSent) blocks, wire \(sent.wireBytesSent) B")
        #expect(relay.cutCount == 1)
        #expect(received.resumes == 1)
        #expect(sent.blocksSent == disk.changedBlocks)
        // In flight: what the socket buffers (source, relay) held when the cut came, up to all
        // of the ~1.3 MB sent so far; issue 15's bound is 5% of the disk.
        #expect(sent.blocksResent <= 21)
        #expect(sent.blocksResent * sent.blockSize <= sent.diskSize / 20)
        #expect(try filesEqual(disk.moved, disk.original))
        #expect(!FileManager.default.fileExists(atPath: disk.original + ".partial"))
    }
}
