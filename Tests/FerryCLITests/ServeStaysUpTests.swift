import FerryTestSupport
import Foundation
import Glibc
import Testing

/// Issue 13, item 6: a destination that stays. `ferry receive --serve` keeps serving after a
/// migration failed, receives the next guest, and answers `ferry status` for both.
@Suite(.serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why)) struct ServeStaysUpTests {
    @Test func servesOnAfterAFailureAndAnswersForBoth() throws {
        let scratch = Scratch("serve-stays")
        let guests = scratch.file("guests")
        try FileManager.default.createDirectory(atPath: guests, withIntermediateDirectories: true)
        #expect(try FerryProcess.run(["image", "create", scratch.file("lost.img"), "--size", "16M"]).status == 0)
        #expect(try FerryProcess.run(["image", "create", scratch.file("kept.img"), "--size", "4M"]).status == 0)
        let receiver = try FerryProcess([
            "receive", "--listen", "127.0.0.1:0", "--serve", guests, "--resume-timeout", "1s",
        ])
        defer {
            kill(receiver.process.processIdentifier, SIGKILL)
            _ = receiver.wait(timeout: 10)
        }
        let listening = try #require(receiver.waitForStderrLine(containing: "listening on"))
        let afterHost = try #require(listening.range(of: "127.0.0.1:")).upperBound
        let port = try #require(Int(listening[afterHost...].prefix { $0.isNumber }))

        // The first source dies during round 0 (kill -9): the destination waits out its resume
        // timeout, discards the guest and serves on.
        let doomed = try FerryProcess([
            "send", "--image", scratch.file("lost.img"), "--to", "127.0.0.1:\(port)", "--max-bandwidth", "2MB/s",
            "-q",
        ])
        Thread.sleep(forTimeInterval: 1)
        kill(doomed.process.processIdentifier, SIGKILL)
        _ = doomed.wait(timeout: 10)
        var lostState = ""
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline && !lostState.contains("discarded") {
            Thread.sleep(forTimeInterval: 0.5)
            lostState = try FerryProcess.run(["status", "--connect", "\(port)", "--guest", "lost"]).stdout
        }
        #expect(lostState.contains("guest lost  discarded"), "\(lostState)")

        let sent = try FerryProcess.run(["send", "--image", scratch.file("kept.img"), "--to", "\(port)", "-q"])
        #expect(sent.status == 0, "\(sent.stderr)")
        #expect(FileManager.default.fileExists(atPath: "\(guests)/kept.img"))
        #expect(!FileManager.default.fileExists(atPath: "\(guests)/lost.img.partial"))

        let lost = try FerryProcess.run(["status", "--connect", ":\(port)", "--guest", "lost"])
        #expect(lost.status == 0 && lost.stdout.contains("guest lost  discarded"), "\(lost.stdout)\(lost.stderr)")
        let kept = try FerryProcess.run(["status", "--connect", "\(port)", "--guest", "kept"])
        #expect(kept.status == 0 && kept.stdout.contains("guest kept  resumed"), "\(kept.stdout)\(kept.stderr)")
    }
}
