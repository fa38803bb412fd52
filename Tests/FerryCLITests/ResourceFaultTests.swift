import FerryTestSupport
import Foundation
import Glibc
import Synchronization
import Testing

/// The faults of issue 4 that are not tied to a frame: a second source at a busy destination, the
/// destination's disk full (a small tmpfs), and the image file resized under the source. Same
/// invariants as the matrix (`FaultMatrixTests.judge`); prints the "other faults" table. A test
/// of the matrix's serialized suite, so that the two never run at once (memory on a shared host).
extension FaultMatrixTests {
    typealias Matrix = FaultMatrixTests

    struct Row: Sendable {
        var fault: String
        var when: String
        var outcome: String
    }

    @Test func otherFaults() throws {
        let started = Date()
        let scratch = Scratch("other-faults")
        let base = scratch.file("base.img")
        let dense = scratch.file("dense.img")
        #expect(try FerryProcess.run(["image", "create", base, "--size", "32M", "--seed", "7"]).status == 0)
        // Every page holds data, so a received image takes its whole size on tmpfs.
        #expect(
            try FerryProcess.run(["image", "create", dense, "--size", "32M", "--seed", "8", "--mix", "random=100"])
                .status == 0)
        let cases: [(String, String, @Sendable () throws -> (String, [String]))] = [
            ("second source, busy destination", "round 0", { try Self.busy(base: base) }),
            ("disk too small", "handshake", { try Self.diskTooSmall(base: base) }),
            ("disk filled by someone else", "handshake", { try Self.diskFilled(base: dense) }),
            ("two guests, disk for one (--serve)", "handshake", { try Self.diskForOne(base: dense) }),
            ("image truncated under the source", "round 0", { try Self.resized(base: base, to: 16 << 20) }),
            ("image extended under the source", "round 0", { try Self.resized(base: base, to: 40 << 20) }),
            ("network partition (silent: no FIN, no RST)", "round 0", { try Self.partition(base: dense) }),
            ("bit flip in DEVICE_STATE (vCPU 0's step)", "blackout", { try Self.registerFlip(base: base) }),
        ]
        let rows = Mutex<[Int: Row]>([:])
        runConcurrently(cases.count, width: 3) { index in
            let (fault, when, body) = cases[index]
            let outcome: String
            do {
                let (text, problems) = try body()
                outcome = text
                for problem in problems { Issue.record("\(fault): \(problem)") }
            } catch {
                outcome = "test failed: \(error)"
                Issue.record("\(fault): \(error)")
            }
            rows.withLock { $0[index] = Row(fault: fault, when: when, outcome: outcome) }
        }
        var table = "| fault | when | outcome |\n|---|---|---|\n"
        for index in cases.indices {
            if let row = rows.withLock({ $0[index] }) { table += "| \(row.fault) | \(row.when) | \(row.outcome) |\n" }
        }
        print("Other faults (\(String(format: "%.1f", Date().timeIntervalSince(started))) s):\n" + table)
        if let path = ProcessInfo.processInfo.environment["FERRY_FAULT_MATRIX_OUT"] {
            try? table.write(toFile: path + ".other", atomically: true, encoding: .utf8)
        }
    }

    static func startReceiver(_ arguments: [String], acceptTimeout: String = "30s") throws -> (FerryProcess, UInt16) {
        let receiver = try FerryProcess(
            ["receive", "--listen", "127.0.0.1:0", "--accept-timeout", acceptTimeout, "-q"] + arguments)
        guard let port = Matrix.listeningPort(receiver) else {
            throw Matrix.ProxyFailure(description: "receiver did not start: \(receiver.wait(timeout: 1).stderr)")
        }
        return (receiver, port)
    }

    /// A second source arrives while the first one's round 0 runs: refused as busy, its guest runs
    /// on; the first migration is not disturbed.
    static func busy(base: String) throws -> (String, [String]) {
        let scratch = Scratch("busy")
        let source = scratch.file("source.img")
        let second = scratch.file("second.img")
        let target = scratch.file("received.img")
        try FileManager.default.copyItem(atPath: base, toPath: source)
        try FileManager.default.copyItem(atPath: base, toPath: second)
        let (receiver, port) = try startReceiver(["--image", target])
        let secondOutcome = Mutex<FerryProcess.Outcome?>(nil)
        let proxy = try PhaseFaultRelay(
            upstreamPort: port, phase: .roundZero,
            fault: .hook {
                let outcome = try? FerryProcess.run(
                    ["send", "--image", second, "--to", "127.0.0.1:\(port)", "--workload", "uniform:5MB/s", "-q"],
                    timeout: 20)
                secondOutcome.withLock { $0 = outcome }
            })
        defer { proxy.stop() }
        let sent = try FerryProcess.run(
            ["send", "--image", source, "--to", "127.0.0.1:\(proxy.port)"] + Matrix.sendOptions, timeout: 30)
        let received = receiver.wait(timeout: 10)
        var result = Matrix.judge(
            sent: sent, received: received, source: source, target: target, compareBytes: true,
            injected: proxy.injected, reached: proxy.phasesReached)
        guard let other = secondOutcome.withLock({ $0 }) else {
            return (result.outcome, result.problems + ["the second source did not run"])
        }
        if other.status != 3 || !other.stderr.contains("busy")
            || !other.stderr.contains("guest ran on the source until now")
        {
            result.problems.append(
                "the second source must be refused as busy and keep its guest: exit \(other.status), \(other.stderr)")
        }
        return (
            "first: \(result.outcome); second: refused busy, keeps its guest (exit \(other.status))", result.problems
        )
    }

    /// A tmpfs of `size` at `scratch/disk`, or the reason it cannot be had here.
    static func mountTmpfs(_ scratch: Scratch, size: String) -> (String?, String?) {
        let directory = scratch.file("disk")
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        guard Requirement.mount.met, let mount = Host.tool("mount") else {
            return (nil, "skipped: \(Requirement.mount.why.rawValue)")
        }
        do {
            try Host.run([mount, "-t", "tmpfs", "-o", "size=\(size)", "tmpfs", directory])
        } catch {
            return (nil, "skipped: cannot mount a tmpfs here: \(error)")
        }
        return (directory, nil)
    }

    static func unmount(_ directory: String) {
        if let umount = Host.tool("umount") { _ = try? Host.run([umount, "-l", directory], mustSucceed: false) }
    }

    /// The destination's directory is smaller than the image: refused at HELLO (reason `disk`).
    /// The refusal does not end the one-shot destination (issue 11, finding 7): it waits on for a
    /// source it can take, until its accept timeout (4 s here).
    static func diskTooSmall(base: String) throws -> (String, [String]) {
        let scratch = Scratch("disk-small")
        let (mounted, skip) = mountTmpfs(scratch, size: "16m")
        guard let directory = mounted else {
            print(skip!)
            return (skip!, [])
        }
        defer { unmount(directory) }
        let source = scratch.file("source.img")
        let target = directory + "/received.img"
        try FileManager.default.copyItem(atPath: base, toPath: source)
        let (receiver, port) = try startReceiver(["--image", target], acceptTimeout: "4s")
        let sent = try FerryProcess.run(
            ["send", "--image", source, "--to", "127.0.0.1:\(port)"] + Matrix.sendOptions, timeout: 30)
        let received = receiver.wait(timeout: 10)
        var result = Matrix.judge(
            sent: sent, received: received, source: source, target: target, compareBytes: true,
            injected: true, reached: [])
        if sent.status != 3 || !sent.stderr.contains("disk") {
            result.problems.append("expected a refusal for disk space: \(sent.stderr)")
        }
        if received.signal != nil || !received.stderr.contains("established a migration")
            || !received.stderr.contains("only")
        {
            result.problems.append(
                "the destination must log the refusal and wait on until its accept timeout: \(received.stderr)")
        }
        return ("refused (disk); destination waits on until --accept-timeout; " + result.outcome, result.problems)
    }

    /// Another program fills the destination's disk while the source sends GUEST_CONFIG: the
    /// destination could take the guest at HELLO, but not any more when the session is
    /// established (its first page batch) and promises the space. The session was never
    /// established, so the one-shot destination logs it and waits on until its accept timeout.
    static func diskFilled(base: String) throws -> (String, [String]) {
        let scratch = Scratch("disk-filled")
        let (mounted, skip) = mountTmpfs(scratch, size: "40m")
        guard let directory = mounted else {
            print(skip!)
            return (skip!, [])
        }
        defer { unmount(directory) }
        let source = scratch.file("source.img")
        let target = directory + "/received.img"
        try FileManager.default.copyItem(atPath: base, toPath: source)
        let (receiver, port) = try startReceiver(["--image", target], acceptTimeout: "6s")
        let proxy = try PhaseFaultRelay(
            upstreamPort: port, phase: .handshake,
            fault: .hook {
                // Leaves 8 MiB of the 40: less than the 32 MiB image.
                _ = FileManager.default.createFile(
                    atPath: directory + "/filler", contents: Data(repeating: 0x5A, count: 32 << 20))
            })
        defer { proxy.stop() }
        let sent = try FerryProcess.run(
            ["send", "--image", source, "--to", "127.0.0.1:\(proxy.port)"] + Matrix.sendOptions, timeout: 30)
        let received = receiver.wait(timeout: 20)
        var result = Matrix.judge(
            sent: sent, received: received, source: source, target: target, compareBytes: true,
            injected: proxy.injected, reached: proxy.phasesReached)
        if received.signal == nil && !received.stderr.contains(directory) {
            result.problems.append("the destination's message must name the directory that is full: \(received.stderr)")
        }
        return (result.outcome, result.problems)
    }

    /// `--serve` with room for one guest: the second guest's HELLO arrives while the first one
    /// waits to send its GUEST_CONFIG. Without a key a HELLO promises nothing (issue 11, finding
    /// 7): the second is established first (its first page batch arrives while the first's
    /// GUEST_CONFIG is held), promised the disk, and migrates; the first, whose GUEST_CONFIG goes
    /// on once the second is done, finds no room (aborted, `disk:`) or the destination already
    /// gone (`--sessions 1`); either way it keeps its guest and leaves no image.
    static func diskForOne(base: String) throws -> (String, [String]) {
        let scratch = Scratch("disk-one")
        let (mounted, skip) = mountTmpfs(scratch, size: "44m")
        guard let directory = mounted else {
            print(skip!)
            return (skip!, [])
        }
        defer { unmount(directory) }
        let first = scratch.file("first.img")
        let second = scratch.file("second.img")
        try FileManager.default.copyItem(atPath: base, toPath: first)
        try FileManager.default.copyItem(atPath: base, toPath: second)
        let (receiver, port) = try startReceiver(["--serve", directory, "--max-sessions", "2", "--sessions", "1"])
        let secondOutcome = Mutex<FerryProcess.Outcome?>(nil)
        let proxy = try PhaseFaultRelay(
            upstreamPort: port, phase: .handshake,
            fault: .hook {
                let outcome = try? FerryProcess.run(
                    [
                        "send", "--image", second, "--to", "127.0.0.1:\(port)", "--name", "second",
                        "--workload", "uniform:5MB/s", "-q",
                    ], timeout: 20)
                secondOutcome.withLock { $0 = outcome }
            })
        defer { proxy.stop() }
        let sent = try FerryProcess.run(
            ["send", "--image", first, "--to", "127.0.0.1:\(proxy.port)", "--name", "first"] + Matrix.sendOptions,
            timeout: 30)
        let received = receiver.wait(timeout: 20)
        var problems: [String] = []
        let other = secondOutcome.withLock { $0 }
        let firstKept = sent.stderr.contains("guest ran on the source until now")
        let secondMigrated = other?.status == 0 && received.stdout.contains("guest second: migrated")
        if received.signal != nil { problems.append("the serving destination died of signal \(received.signal!)") }
        if !secondMigrated {
            problems.append(
                "the second guest must migrate: \(other?.stderr ?? "did not run") / \(received.stdout) \(received.stderr)"
            )
        }
        if !firstKept || sent.status == 0 {
            problems.append("the first guest must find no room and keep running: exit \(sent.status), \(sent.stderr)")
        }
        if FileManager.default.fileExists(atPath: directory + "/first.img")
            || FileManager.default.fileExists(atPath: directory + "/first.img.partial")
        {
            problems.append("the guest that found no room left an image")
        }
        if secondMigrated && !((try? filesEqual(second, directory + "/second.img")) ?? false) {
            problems.append("second.img differs from its source")
        }
        let outcome =
            "second (established first): \(secondMigrated ? "migrated" : "FAILED (D \(Matrix.ending(received)))"); "
            + "first: \(firstKept ? "not received (\(received.stderr.contains("disk:") ? "no room: disk" : "the destination was done")), keeps its guest (exit \(sent.status))" : "lost")"
        return (outcome, problems)
    }

    /// The connection goes silent in round 0, as behind a partition: the proxy stops reading and
    /// forwarding on it and closes nothing. The source's writes stall; after `--stall-timeout`
    /// (2 s here) it counts the connection as lost and resumes on a new one (the proxy relays new
    /// connections), and the migration completes, verified.
    static func partition(base: String) throws -> (String, [String]) {
        let scratch = Scratch("partition")
        let source = scratch.file("source.img")
        let target = scratch.file("received.img")
        try FileManager.default.copyItem(atPath: base, toPath: source)
        let (receiver, port) = try startReceiver(["--image", target])
        let proxy = try PhaseFaultRelay(upstreamPort: port, phase: .roundZero, fault: .blackhole)
        defer { proxy.stop() }
        let sent = try FerryProcess.run(
            ["send", "--image", source, "--to", "127.0.0.1:\(proxy.port)", "--stall-timeout", "2s"]
                + Matrix.sendOptions, timeout: 30)
        let received = receiver.wait(timeout: 10)
        var result = Matrix.judge(
            sent: sent, received: received, source: source, target: target, compareBytes: true,
            injected: proxy.injected, reached: proxy.phasesReached)
        if !sent.stderr.contains("reconnecting") {
            result.problems.append("the source must notice the stall and resume: \(sent.stderr)")
        }
        if !result.outcome.hasPrefix("migrated") {
            result.problems.append("expected a resumed migration: \(result.outcome)")
        }
        return ("stall noticed after 2 s, resumed on a new connection: " + result.outcome, result.problems)
    }

    /// One bit of vCPU 0's `step` register flipped in DEVICE_STATE: `COMPLETE.state_digest` covers
    /// GUEST_CONFIG and DEVICE_STATE like the page digest covers the pages, so the destination does
    /// not verify, and the source keeps its guest.
    static func registerFlip(base: String) throws -> (String, [String]) {
        let scratch = Scratch("register-flip")
        let source = scratch.file("source.img")
        let target = scratch.file("received.img")
        try FileManager.default.copyItem(atPath: base, toPath: source)
        let (receiver, port) = try startReceiver(["--image", target])
        // DEVICE_STATE payload: section_count (2), reserved (6), vCPU 0's section header (16), then its step.
        let proxy = try PhaseFaultRelay(upstreamPort: port, phase: .blackout, fault: .flipPayloadByte(24))
        defer { proxy.stop() }
        let sent = try FerryProcess.run(
            ["send", "--image", source, "--to", "127.0.0.1:\(proxy.port)"] + Matrix.sendOptions, timeout: 30)
        let received = receiver.wait(timeout: 10)
        var result = Matrix.judge(
            sent: sent, received: received, source: source, target: target, compareBytes: true,
            injected: proxy.injected, reached: proxy.phasesReached)
        if !result.outcome.hasPrefix("source keeps guest") {
            result.problems.append("a damaged DEVICE_STATE must not migrate: \(result.outcome)")
        }
        if !received.stderr.contains("state digest") {
            result.problems.append("the destination must name the state digest mismatch: \(received.stderr)")
        }
        return (result.outcome, result.problems)
    }

    /// The image file is truncated (or extended) to `bytes` while the source runs round 0.
    static func resized(base: String, to bytes: Int) throws -> (String, [String]) {
        let scratch = Scratch("resized-\(bytes)")
        let source = scratch.file("source.img")
        let target = scratch.file("received.img")
        try FileManager.default.copyItem(atPath: base, toPath: source)
        let (receiver, port) = try startReceiver(["--image", target])
        let proxy = try PhaseFaultRelay(
            upstreamPort: port, phase: .roundZero, fault: .hook { _ = truncate(source, off_t(bytes)) })
        defer { proxy.stop() }
        let sent = try FerryProcess.run(
            ["send", "--image", source, "--to", "127.0.0.1:\(proxy.port)"] + Matrix.sendOptions, timeout: 30)
        let received = receiver.wait(timeout: 10)
        var result = Matrix.judge(
            sent: sent, received: received, source: source, target: target, compareBytes: true,
            injected: proxy.injected, reached: proxy.phasesReached, extraBytes: max(0, bytes - Matrix.imageBytes))
        if bytes < Matrix.imageBytes && sent.signal == nil && !sent.stderr.contains("size") {
            result.problems.append("the source must say that the image file changed size: \(sent.stderr)")
        }
        return (result.outcome, result.problems)
    }
}
