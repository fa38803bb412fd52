import FerryTestSupport
import Foundation
import Glibc
import Synchronization
import Testing

/// `ferry disk send` / `ferry disk receive` as a user runs them: real processes, sockets, files.
@Suite("ferry disk send/receive", .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct DiskMoveCLITests {
    /// `ferry image create` a 256 MiB disk with the standard page mix (zero pages are holes), then
    /// keeps 16 windows of 2.5 MiB: about 10% of the disk allocated.
    static func makeDisk(_ path: String, size: String = "256M") throws {
        let created = try FerryProcess.run(["image", "create", path, "--size", size, "--seed", "5"])
        #expect(created.status == 0, "\(created.stderr)")
        try SparseDisk.punch(path: path, windows: 16, keepBytes: 5 << 19)
    }

    /// Starts `ferry disk receive` on a free port; returns it with the port it printed.
    static func startReceiver(_ arguments: [String]) throws -> (FerryProcess, Int) {
        let receiver = try FerryProcess(["disk", "receive", "--listen", "127.0.0.1:0"] + arguments)
        let line = try #require(receiver.waitForStderrLine(containing: "listening on"), "no listening line")
        let port = try #require(
            line.split(separator: " ").first { $0.hasPrefix("127.0.0.1:") }.flatMap {
                Int($0.split(separator: ":")[1].trimmingCharacters(in: .punctuationCharacters))
            })
        return (receiver, port)
    }

    static func json(_ path: String) throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    @Test(
        "--max-bandwidth holds the move to its rate (one stream and four: the streams share it)",
        arguments: [1, 4])
    func maxBandwidth(streams: Int) throws {
        let scratch = Scratch()
        let (source, target) = (scratch.file("source.img"), scratch.file("target.img"))
        try Self.makeDisk(source)
        let (receiver, port) = try Self.startReceiver(["--disk", target])
        let rate = 40e6  // bytes per second; unlimited, this disk moves in under 0.1 s
        let began = Date()
        let sent = try FerryProcess.run(
            [
                "disk", "send", "--disk", source, "--to", "127.0.0.1:\(port)", "--json", scratch.file("send.json"),
                "--streams", "\(streams)", "--max-bandwidth", "40MB/s",
            ])
        let seconds = Date().timeIntervalSince(began)
        #expect(receiver.wait(timeout: 60).status == 0)
        #expect(sent.status == 0, "\(sent.stderr)")
        #expect(try filesEqual(source, target))
        let wire = Double(try #require(try Self.json(scratch.file("send.json"))["wire_bytes"] as? Int))
        print(
            String(
                format: "--max-bandwidth 40MB/s, %d stream(s): %.0f bytes in %.2f s (%.1f MB/s)", streams, wire,
                seconds, wire / seconds / 1e6))
        // The limiter allows a 10 ms burst; the rest of the wire bytes wait for the rate.
        #expect(seconds >= 0.9 * wire / rate, "\(wire) bytes in \(seconds) s: faster than 40 MB/s")
    }

    @Test("--update: a disk moved back onto its older copy sends only the changed blocks; --base must exist")
    func updateOlderCopy() throws {
        let scratch = Scratch()
        let (old, changed) = (scratch.file("old.img"), scratch.file("changed.img"))
        try Self.makeDisk(old)
        #expect(
            try FerryProcess.run([
                "disk", "receive", "--listen", "127.0.0.1:0", "--disk", changed, "--base", scratch.file("none.img"),
            ]).status == 2)
        let (first, firstPort) = try Self.startReceiver(["--disk", changed])
        #expect(try FerryProcess.run(["disk", "send", "--disk", old, "--to", "127.0.0.1:\(firstPort)"]).status == 0)
        #expect(first.wait(timeout: 60).status == 0)
        let file = try FileHandle(forUpdating: URL(fileURLWithPath: changed))
        for block in [3, 700, 2000] {  // a data block, and blocks in holes
            try file.seek(toOffset: UInt64(block) << 16)
            try file.write(contentsOf: Data((0..<65536).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ block) }))
        }
        try file.close()
        let (receiver, port) = try Self.startReceiver([
            "--disk", old, "--update", "--json", scratch.file("receive.json"),
        ])
        let sent = try FerryProcess.run(
            ["disk", "send", "--disk", changed, "--to", "127.0.0.1:\(port)", "--json", scratch.file("send.json")])
        let received = receiver.wait(timeout: 60)
        #expect(sent.status == 0, "\(sent.stderr)")
        #expect(received.status == 0, "\(received.stderr)")
        #expect(try filesEqual(old, changed))
        let report = try Self.json(scratch.file("send.json"))
        #expect(report["blocks_sent"] as? Int == 3)
        #expect(report["blocks_unchanged"] as? Int == 4093)
        #expect(!((try Self.json(scratch.file("receive.json"))["base_copy"] as? String) ?? "").isEmpty)
        #expect(sent.stdout.contains("onto the older copy"))
    }

    @Test(
        "a sparse 256 MiB disk moves equal, as sparse, within 1.05 x its LZ4 size; both print the report",
        arguments: [1, 4])
    func movesDisk(streams: Int) throws {
        let scratch = Scratch()
        let (source, target) = (scratch.file("source.img"), scratch.file("target.img"))
        try Self.makeDisk(source)
        let (receiver, port) = try Self.startReceiver(["--disk", target, "--json", scratch.file("receive.json")])
        let sent = try FerryProcess.run(
            [
                "disk", "send", "--disk", source, "--to", "127.0.0.1:\(port)", "--json", scratch.file("send.json"),
                "--streams", "\(streams)",
            ])
        let received = receiver.wait(timeout: 60)
        #expect(sent.status == 0, "\(sent.stderr)")
        #expect(received.status == 0, "\(received.stderr)")
        #expect(try filesEqual(source, target))
        let report = try Self.json(scratch.file("send.json"))
        let wire = try #require(report["wire_bytes"] as? Int)
        let reference = try SparseDisk.lz4Reference(source)
        let (sourceUsed, targetUsed) = (SparseDisk.usedBytes(source), SparseDisk.usedBytes(target))
        print(sent.stdout, terminator: "")
        print(
            "\(streams) stream(s): du: source \(sourceUsed) B, destination \(targetUsed) B; wire \(wire) B vs LZ4 of the allocated data \(reference.compressed) B ("
                + String(format: "%.3f", Double(wire) / Double(reference.compressed)) + ")")
        #expect(report["outcome"] as? String == "ok")
        #expect(report["allocated_bytes"] as? Int == reference.allocated)
        #expect(abs(targetUsed - sourceUsed) <= sourceUsed / 20)
        #expect(Double(wire) <= 1.05 * Double(reference.compressed))
        #expect(sent.stdout.contains("wire \(wire) bytes"))
        #expect(received.stdout.contains("received \(target)"))
        #expect(try Self.json(scratch.file("receive.json"))["outcome"] as? String == "ok")
    }

    @Test(
        "a destination on a 16 MiB tmpfs refuses before any block, naming both numbers",
        .enabled(if: Requirement.mount.met, Requirement.mount.why))
    func smallDestinationRefuses() throws {
        let scratch = Scratch()
        let source = scratch.file("source.img")
        try Self.makeDisk(source)
        let small = scratch.file("small")
        try FileManager.default.createDirectory(atPath: small, withIntermediateDirectories: true)
        let mount = try #require(Host.tool("mount"))
        guard (try? Host.run([mount, "-t", "tmpfs", "-o", "size=16M", "tmpfs", small])) != nil else {
            print("skipped: mount -t tmpfs failed here")
            return
        }
        defer { _ = try? Host.run([Host.tool("umount") ?? "/usr/bin/umount", "-l", small], mustSucceed: false) }
        let target = small + "/target.img"
        let (receiver, port) = try Self.startReceiver(["--disk", target])
        let blocks = Atomic<Int>(0)
        let relay = try Relay(to: UInt16(port)) { frame in
            if frame.direction == .toDestination && frame.type == WireType.diskBlock {
                blocks.add(1, ordering: .relaxed)
            }
            return .forward
        }
        defer { relay.stop() }
        let sent = try FerryProcess.run(["disk", "send", "--disk", source, "--to", "127.0.0.1:\(relay.port)"])
        let received = receiver.wait(timeout: 30)
        print("source: \(sent.stderr)", terminator: "")
        let allocated = try SparseDisk.lz4Reference(source).allocated
        #expect(sent.status == 3)
        #expect(received.status == 3)
        #expect(sent.stderr.contains("\(allocated) bytes allocated"))
        #expect(sent.stderr.contains("bytes free"))
        #expect(blocks.load(ordering: .relaxed) == 0)
        #expect(!FileManager.default.fileExists(atPath: target))
        #expect(!FileManager.default.fileExists(atPath: target + ".partial"))
    }

    @Test("a flipped payload bit fails verification: no disk, no .partial, the source names the block")
    func flippedBit() throws {
        let scratch = Scratch()
        let (source, target) = (scratch.file("source.img"), scratch.file("target.img"))
        try Self.makeDisk(source)
        let (receiver, port) = try Self.startReceiver(["--disk", target])
        let blocks = Atomic<Int>(0)
        let relay = try Relay(to: UInt16(port)) { frame in
            guard frame.direction == .toDestination && frame.type == WireType.diskBlock else { return .forward }
            return blocks.add(1, ordering: .relaxed).newValue == 300 ? WireFault.flipPayloadBit.verdict : .forward
        }
        defer { relay.stop() }
        let sent = try FerryProcess.run(["disk", "send", "--disk", source, "--to", "127.0.0.1:\(relay.port)"])
        let received = receiver.wait(timeout: 30)
        print("source: \(sent.stderr)", terminator: "")
        #expect(sent.status == 6)
        #expect(received.status == 6)
        #expect(sent.stderr.contains("block "))
        #expect(sent.stderr.contains("damaged in transit"))
        #expect(!FileManager.default.fileExists(atPath: target))
        #expect(!FileManager.default.fileExists(atPath: target + ".partial"))
    }

    @Test("a wrong key is refused; the receiver listens on until its accept timeout and writes nothing")
    func wrongKey() throws {
        let scratch = Scratch()
        let (source, target) = (scratch.file("source.img"), scratch.file("target.img"))
        try Self.makeDisk(source, size: "16M")
        for key in ["a.key", "b.key"] {
            #expect(try FerryProcess.run(["keygen", "--out", scratch.file(key)]).status == 0)
        }
        let (receiver, port) = try Self.startReceiver([
            "--disk", target, "--key-file", scratch.file("a.key"), "--accept-timeout", "3s",
        ])
        let sent = try FerryProcess.run([
            "disk", "send", "--disk", source, "--to", "127.0.0.1:\(port)", "--key-file", scratch.file("b.key"),
        ])
        let received = receiver.wait(timeout: 30)
        print("source: \(sent.stderr)", terminator: "")
        #expect(sent.status == 3)
        #expect(sent.stderr.contains("key"))
        #expect(received.status == 5)
        #expect(!FileManager.default.fileExists(atPath: target))
        #expect(!FileManager.default.fileExists(atPath: target + ".partial"))
    }

    @Test("a connection cut at about 50% resumes; at most 5% of the disk is sent again")
    func cutResumes() throws {
        let scratch = Scratch()
        let (source, target) = (scratch.file("source.img"), scratch.file("target.img"))
        try Self.makeDisk(source)
        let (receiver, port) = try Self.startReceiver(["--disk", target, "--resume-timeout", "10s"])
        let relay = try Relay(to: UInt16(port))
        defer { relay.stop() }
        relay.cut(afterBytes: 7 << 20)  // about half of the ~14.8 MB on the wire
        let sent = try FerryProcess.run([
            "disk", "send", "--disk", source, "--to", "127.0.0.1:\(relay.port)", "--json", scratch.file("send.json"),
        ])
        let received = receiver.wait(timeout: 30)
        #expect(sent.status == 0, "\(sent.stderr)")
        #expect(received.status == 0, "\(received.stderr)")
        let report = try Self.json(scratch.file("send.json"))
        let resent = try #require(report["blocks_resent"] as? Int) * (try #require(report["block_size"] as? Int))
        let size = try #require(report["disk_size"] as? Int)
        print(
            "resume: \(relay.cutCount) cut at 7 MiB; resumes \(report["resumes"] ?? "?"), resent \(resent) B of a \(size)-byte disk ("
                + String(format: "%.2f%%", Double(resent) * 100 / Double(size)) + ")")
        #expect(relay.cutCount == 1)
        #expect(report["resumes"] as? Int == 1)
        #expect(resent <= size / 20)
        #expect(try filesEqual(source, target))
        #expect(!FileManager.default.fileExists(atPath: target + ".partial"))
    }

    /// A move slowed by a relay (4 ms per block: about 2.6 s) so that a process can be killed in it.
    static func slowMove(_ scratch: Scratch, receiverArguments: [String] = []) throws -> (
        receiver: FerryProcess, sender: FerryProcess, relay: Relay, target: String
    ) {
        let (source, target) = (scratch.file("source.img"), scratch.file("target.img"))
        try makeDisk(source)
        let (receiver, port) = try startReceiver(["--disk", target] + receiverArguments)
        let relay = try Relay(to: UInt16(port)) { frame in
            frame.type == WireType.diskBlock ? .delay(milliseconds: 4) : .forward
        }
        let sender = try FerryProcess(["disk", "send", "--disk", source, "--to", "127.0.0.1:\(relay.port)"])
        return (receiver, sender, relay, target)
    }

    @Test("kill -9 of the source mid-move: the destination waits --resume-timeout, then removes .partial (exit 5)")
    func sourceKilled() throws {
        let scratch = Scratch()
        let move = try Self.slowMove(scratch, receiverArguments: ["--resume-timeout", "1s"])
        defer { move.relay.stop() }
        Thread.sleep(forTimeInterval: 1.0)
        #expect(FileManager.default.fileExists(atPath: move.target + ".partial"))
        kill(move.sender.process.processIdentifier, SIGKILL)
        let sent = move.sender.wait(timeout: 10)
        let received = move.receiver.wait(timeout: 30)
        print("destination: \(received.stderr.split(separator: "\n").last ?? "")")
        #expect(sent.signal == SIGKILL)
        #expect(received.status == 5)
        #expect(received.stderr.contains("did not resume"))
        #expect(!FileManager.default.fileExists(atPath: move.target))
        #expect(!FileManager.default.fileExists(atPath: move.target + ".partial"))
    }

    @Test("kill -9 of the destination mid-move: the source's attempts to resume fail, exit 5, no PATH")
    func destinationKilled() throws {
        let scratch = Scratch()
        let move = try Self.slowMove(scratch)
        defer { move.relay.stop() }
        Thread.sleep(forTimeInterval: 1.0)
        kill(move.receiver.process.processIdentifier, SIGKILL)
        // Its attempts back off for about 11 s in all; on a loaded machine each one's connect and
        // refusal take longer, so the wait is generous (a kill at the deadline would read as 9).
        let sent = move.sender.wait(timeout: 120)
        _ = move.receiver.wait(timeout: 10)
        print("source: \(sent.stderr.split(separator: "\n").last ?? "")")
        #expect(sent.status == 5)
        #expect(sent.stderr.contains("attempts to resume failed"))
        #expect(!FileManager.default.fileExists(atPath: move.target))
    }

    @Test(
        "SIGINT/SIGTERM to either side mid-move: it exits 130/143, the other is told (exit 10), no .partial, no PATH",
        arguments: [("destination", SIGINT), ("source", SIGTERM)])
    func operatorCancel(_ victim: String, _ signal: Int32) throws {
        let scratch = Scratch()
        let move = try Self.slowMove(scratch)
        defer { move.relay.stop() }
        Thread.sleep(forTimeInterval: 1.0)
        let (cancelled, other) = victim == "source" ? (move.sender, move.receiver) : (move.receiver, move.sender)
        kill(cancelled.process.processIdentifier, signal)
        let cancelledOutcome = cancelled.wait(timeout: 30)
        let otherOutcome = other.wait(timeout: 30)
        let name = signal == SIGINT ? "SIGINT" : "SIGTERM"
        print("\(victim) got \(name); the other side: \(otherOutcome.stderr.split(separator: "\n").last ?? "")")
        #expect(cancelledOutcome.status == 128 + signal, "\(cancelledOutcome.stderr)")
        #expect(otherOutcome.status == 10, "\(otherOutcome.stderr)")
        #expect(otherOutcome.stderr.contains("cancelled (\(name))"))
        #expect(!FileManager.default.fileExists(atPath: move.target))
        #expect(!FileManager.default.fileExists(atPath: move.target + ".partial"))
    }

    @Test("a move longer than a second shows progress with an ETA on stderr")
    func progressWithETA() throws {
        let scratch = Scratch()
        let (source, target) = (scratch.file("source.img"), scratch.file("target.img"))
        try Self.makeDisk(source)
        let (receiver, port) = try Self.startReceiver(["--disk", target])
        let relay = try Relay(to: UInt16(port)) { frame in
            frame.type == WireType.diskBlock ? .delay(milliseconds: 4) : .forward
        }
        defer { relay.stop() }
        let sent = try FerryProcess.run(["disk", "send", "--disk", source, "--to", "127.0.0.1:\(relay.port)"])
        _ = receiver.wait(timeout: 30)
        let line = sent.stderr.split(separator: "\n").first { $0.contains("[disk send]") }
        print("progress: \(line ?? "none")")
        #expect(sent.status == 0, "\(sent.stderr)")
        #expect(line?.contains("ETA") == true)
        #expect(try filesEqual(source, target))
    }
}
