import FerryTestSupport
import Foundation
import Glibc
import Testing

/// Image locks between real `ferry` processes (issue 13): a second agent on an image in use is
/// refused, naming the holder, before it writes a byte; a killed holder's lock is gone at once.
@Suite(.serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why)) struct ImageLockCLITests {
    /// The tester's case: a second `ferry send` on an image the first is migrating. It exits 9
    /// naming the first's PID while the first's guest runs, its guest never starts (the first
    /// migration's destination image equals the source image afterwards, byte for byte: a write
    /// by the second guest would have reached the source file behind the first's tracker).
    @Test func secondSendOnOneImageIsRefusedBeforeItsGuestRuns() throws {
        let scratch = Scratch("lock-two-sends")
        let image = scratch.file("source.img")
        let received = scratch.file("received.img")
        #expect(try FerryProcess.run(["image", "create", image, "--size", "32M", "--seed", "3"]).status == 0)
        let receiver = try FerryProcess([
            "receive", "--listen", "127.0.0.1:0", "--image", received, "--accept-timeout", "60s",
        ])
        let port = try #require(listeningPort(receiver))
        let first = try FerryProcess([
            "send", "--image", image, "--to", "127.0.0.1:\(port)", "--workload", "uniform:20MB/s",
            "--run-before", "3s", "-q",
        ])
        #expect(waitForFile(image + ".lock", timeout: 1), "the first sender takes the lock (its guest runs 3 s)")
        let second = try FerryProcess.run([
            "send", "--image", image, "--to", "127.0.0.1:\(port)", "--workload", "uniform:200MB/s",
        ])
        #expect(first.process.isRunning, "the second sender was refused while the first's guest ran")
        #expect(second.status == 9, "\(second.stderr)")
        #expect(second.stderr.contains(image), "\(second.stderr)")
        #expect(second.stderr.contains("PID \(first.process.processIdentifier)"), "\(second.stderr)")
        #expect(second.stderr.contains("ferry send --image \(image)"), "the holder's command line: \(second.stderr)")
        #expect(second.stderr.contains("wait for PID \(first.process.processIdentifier) to finish, or stop it"))
        let firstOutcome = first.wait()
        let receiverOutcome = receiver.wait()
        #expect(firstOutcome.status == 0, "\(firstOutcome.stderr)")
        #expect(receiverOutcome.status == 0, "\(receiverOutcome.stderr)")
        #expect(firstOutcome.stdout.contains("verified     yes"), "\(firstOutcome.stdout)")
        #expect(try filesEqual(image, received), "the migrated image must equal the source image (cmp)")
        #expect(!FileManager.default.fileExists(atPath: image + ".lock"), "the sidecar goes with the lock")
    }

    /// Two `ferry receive --image` on one path: the second exits 9 naming the first before it
    /// listens or touches `PATH.partial`; the first still receives its guest.
    @Test func secondReceiveOnOneImageIsRefused() throws {
        let scratch = Scratch("lock-two-receives")
        let image = scratch.file("source.img")
        let received = scratch.file("received.img")
        #expect(try FerryProcess.run(["image", "create", image, "--size", "16M", "--seed", "4"]).status == 0)
        let receiver = try FerryProcess([
            "receive", "--listen", "127.0.0.1:0", "--image", received, "--accept-timeout", "60s",
        ])
        let port = try #require(listeningPort(receiver))
        let second = try FerryProcess.run([
            "receive", "--listen", "127.0.0.1:0", "--image", received, "--accept-timeout", "5s",
        ])
        #expect(second.status == 9, "\(second.stderr)")
        #expect(!second.stderr.contains("listening on"), "\(second.stderr)")
        #expect(second.stderr.contains(received + ".partial"), "\(second.stderr)")
        #expect(second.stderr.contains("PID \(receiver.process.processIdentifier)"), "\(second.stderr)")
        #expect(second.stderr.contains("ferry receive"), "\(second.stderr)")
        let sender = try FerryProcess.run([
            "send", "--image", image, "--to", "127.0.0.1:\(port)", "--workload", "uniform:10MB/s",
            "--run-before", "100ms", "-q",
        ])
        let receiverOutcome = receiver.wait()
        #expect(sender.status == 0, "\(sender.stderr)")
        #expect(receiverOutcome.status == 0, "\(receiverOutcome.stderr)")
        #expect(try filesEqual(image, received))
        #expect(!FileManager.default.fileExists(atPath: received + ".partial"))
    }

    /// `kill -9` of the holder drops its lock at once; its sidecar stays behind, names a dead
    /// process, and blocks nobody: `ferry run` gets in. While that run holds the image, another
    /// `ferry run` is refused (exit 9, the live holder's PID named, not the dead one's), and so is
    /// `ferry image create --force` on it.
    @Test func lockOfAKilledHolderLetsTheNextAgentIn() throws {
        let scratch = Scratch("lock-kill")
        let image = scratch.file("guest.img")
        #expect(try FerryProcess.run(["image", "create", image, "--size", "16M", "--seed", "6"]).status == 0)
        let holder = try FerryProcess([
            "send", "--image", image, "--to", "127.0.0.1:1", "--workload", "uniform:10MB/s", "--run-before", "60s",
        ])
        try #require(waitForFile(image + ".lock"))
        kill(holder.process.processIdentifier, SIGKILL)
        let killed = holder.wait()
        #expect(killed.signal == SIGKILL)
        let stale = try String(contentsOfFile: image + ".lock", encoding: .utf8)
        #expect(stale.hasPrefix("pid \(holder.process.processIdentifier) "), "the sidecar stays behind: \(stale)")

        let runner = try FerryProcess([
            "run", "--image", image, "--workload", "uniform:10MB/s", "--duration", "3s",
        ])
        try #require(waitForFile(image + ".lock", naming: runner.process.processIdentifier))
        let overwrite = try FerryProcess.run(["image", "create", image, "--size", "16M", "--force"])
        #expect(overwrite.status == 9, "image create --force refuses an image in use: \(overwrite.stderr)")
        #expect(overwrite.stderr.contains("PID \(runner.process.processIdentifier)"), "\(overwrite.stderr)")
        let refused = try FerryProcess.run([
            "run", "--image", image, "--workload", "uniform:10MB/s", "--steps", "100,100",
        ])
        #expect(refused.status == 9, "\(refused.stderr)")
        #expect(refused.stderr.contains("PID \(runner.process.processIdentifier)"), "\(refused.stderr)")
        #expect(!refused.stderr.contains("PID \(holder.process.processIdentifier)"), "a dead holder is not blamed")
        let ran = runner.wait()
        #expect(ran.status == 0, "\(ran.stderr)")
    }

    /// `ferry receive --serve DIR` locks each guest's `DIR/NAME.img`: a source whose image there
    /// is in use (`ferry run` on it) is refused as busy (exit 3) with the holder's PID, and the
    /// image is left as it was.
    @Test func serveRefusesAGuestWhoseImageIsInUse() throws {
        let scratch = Scratch("lock-serve")
        let guests = scratch.file("guests")
        try FileManager.default.createDirectory(atPath: guests, withIntermediateDirectories: true)
        let image = scratch.file("alpha.img")
        let served = guests + "/alpha.img"
        #expect(try FerryProcess.run(["image", "create", image, "--size", "16M", "--seed", "7"]).status == 0)
        #expect(try FerryProcess.run(["image", "create", served, "--size", "16M", "--seed", "8"]).status == 0)
        let receiver = try FerryProcess([
            "receive", "--listen", "127.0.0.1:0", "--serve", guests, "--force", "--sessions", "1",
        ])
        let port = try #require(listeningPort(receiver))
        let runner = try FerryProcess(["run", "--image", served, "--workload", "idle", "--duration", "4s"])
        try #require(waitForFile(served + ".lock"))
        let sender = try FerryProcess.run([
            "send", "--image", image, "--to", "127.0.0.1:\(port)", "--name", "alpha", "-q",
        ])
        #expect(sender.status == 3, "\(sender.stderr)")
        #expect(sender.stderr.contains("PID \(runner.process.processIdentifier)"), "\(sender.stderr)")
        #expect(!FileManager.default.fileExists(atPath: served + ".partial"))
        _ = runner.wait()
        kill(receiver.process.processIdentifier, SIGKILL)
        _ = receiver.wait()
    }

    private func listeningPort(_ receiver: FerryProcess) -> Int? {
        guard let line = receiver.waitForStderrLine(containing: "listening on"),
            let afterHost = line.range(of: "127.0.0.1:")?.upperBound
        else { return nil }
        return Int(line[afterHost...].prefix { $0.isNumber })
    }

    /// Waits (up to `timeout` seconds) until `path` exists, and with `pid` until it names that process.
    private func waitForFile(_ path: String, naming pid: Int32? = nil, timeout: Double = 20) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let text = try? String(contentsOfFile: path, encoding: .utf8),
                pid.map({ text.hasPrefix("pid \($0) ") }) ?? true
            {
                return true
            }
            usleep(10_000)
        }
        return false
    }
}
