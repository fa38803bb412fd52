import FerryTestSupport
import Foundation
import Glibc
import Testing

/// Ctrl-C and SIGTERM on real `ferry send` and `ferry receive` processes (issue 13, item 2):
/// the side that is signalled sends `ABORT` (reason `cancelled`), the other side stops at once
/// (no resume wait), the guest ends in exactly one place, and the signalled process exits
/// 128 + the signal with the JSON outcome `cancelled`. The blackout and handoff rows are in the
/// fault matrix (`FaultMatrixTests`, rows "SIGINT source" and "SIGINT destination").
@Suite(.serialized, .tags(.slow), .skippable(.slow), .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct SignalTests {
    /// A source whose guest writes while round 0 crawls at 4 MB/s over a 32 MiB image (~8 s).
    struct SlowMigration {
        let scratch: Scratch
        let base: String
        let source: String
        let target: String
        let receiver: FerryProcess
        let sender: FerryProcess
        let sourceJSON: String
        let destinationJSON: String
        static let workload = "uniform:1MB/s"

        /// `serve`: the destination is `ferry receive --serve DIR` (the image is DIR/source.img).
        init(_ name: String, serve: Bool = false) throws {
            scratch = Scratch(name)
            base = scratch.file("base.img")
            source = scratch.file("source.img")
            target = serve ? scratch.file("served/source.img") : scratch.file("received.img")
            sourceJSON = scratch.file("source.json")
            destinationJSON = scratch.file("destination.json")
            let created = try FerryProcess.run(["image", "create", base, "--size", "32M", "--seed", "9"])
            try #require(created.status == 0, "\(created.stderr)")
            try FileManager.default.copyItem(atPath: base, toPath: source)
            if serve {
                try FileManager.default.createDirectory(
                    atPath: scratch.file("served"), withIntermediateDirectories: true)
            }
            receiver = try FerryProcess(
                ["receive", "--listen", "127.0.0.1:0", "--json", destinationJSON, "-q"]
                    + (serve ? ["--serve", scratch.file("served")] : ["--image", target, "--accept-timeout", "30s"]))
            let port = try #require(FaultMatrixTests.listeningPort(receiver), "the receiver did not start")
            sender = try FerryProcess([
                "send", "--image", source, "--to", "127.0.0.1:\(port)", "--workload", Self.workload, "--vcpus", "2",
                "--max-bandwidth", "4MB/s", "--json", sourceJSON, "-q",
            ])
            // Round 0 is under way once the destination has a partial image and a second has passed.
            Thread.sleep(forTimeInterval: 1.5)
        }

        func json(_ path: String) throws -> [String: Any] {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        }

        /// The source's image equals a `ferry run` of the same guest to the steps the source
        /// reported: the guest was stopped cleanly, nothing half written.
        func expectSourceImageConsistent() throws {
            let steps = try #require(try json(sourceJSON)["vcpu_steps"] as? [Int], "no vcpu_steps in the report")
            let reference = scratch.file("reference.img")
            try FileManager.default.copyItem(atPath: base, toPath: reference)
            let ran = try FerryProcess.run([
                "run", "--image", reference, "--workload", Self.workload, "--vcpus", "2",
                "--steps", steps.map(String.init).joined(separator: ","),
            ])
            #expect(ran.status == 0, "\(ran.stderr)")
            #expect(try filesEqual(source, reference), "the source image is not the reference run's to steps \(steps)")
        }
    }

    @Test(arguments: [SIGINT, SIGTERM])
    func aSignalledSourceAbortsAndKeepsItsGuest(signal: Int32) throws {
        let run = try SlowMigration("signal-send-\(signal)")
        let signalledAt = Date()
        kill(run.sender.process.processIdentifier, signal)
        let received = run.receiver.wait(timeout: 30)
        let destinationAfter = Date().timeIntervalSince(signalledAt)
        let sent = run.sender.wait(timeout: 30)
        #expect(destinationAfter < 5, "the destination took \(destinationAfter) s (its resume timeout is 30 s)")
        #expect(sent.signal == nil && sent.status == 128 + signal, "\(sent.status) \(sent.stderr)")
        #expect(sent.stderr.contains("cancelled (\(signal == SIGINT ? "SIGINT" : "SIGTERM"))"), "\(sent.stderr)")
        #expect(sent.stderr.contains("was stopped cleanly"), "\(sent.stderr)")
        #expect(received.status == 10, "the destination reports the source's ABORT: \(received.stderr)")
        #expect(received.stderr.contains("cancelled"), "\(received.stderr)")
        #expect(!FileManager.default.fileExists(atPath: run.target + ".partial"))
        #expect(!FileManager.default.fileExists(atPath: run.target))
        let report = try run.json(run.sourceJSON)
        #expect(report["outcome"] as? String == "cancelled")
        #expect(report["guest"] as? String == "source")
        #expect((report["error"] as? [String: Any])?["exit_code"] as? Int == Int(128 + signal))
        try run.expectSourceImageConsistent()
        print(
            "\(signal == SIGINT ? "SIGINT" : "SIGTERM") on ferry send in round 0: destination done after \(String(format: "%.2f", destinationAfter)) s, source exit \(sent.status)"
        )
    }

    @Test(arguments: [false, true])
    func anInterruptedDestinationAbortsAndTheSourceKeepsItsGuest(serve: Bool) throws {
        let run = try SlowMigration("signal-receive-\(serve)", serve: serve)
        let signalledAt = Date()
        kill(run.receiver.process.processIdentifier, SIGINT)
        let received = run.receiver.wait(timeout: 30)
        let sent = run.sender.wait(timeout: 30)
        let sourceAfter = Date().timeIntervalSince(signalledAt)
        #expect(sourceAfter < 5, "the source took \(sourceAfter) s to notice")
        #expect(received.signal == nil && received.status == 130, "\(received.status) \(received.stderr)")
        #expect(sent.status == 10, "the source reports the destination's ABORT: \(sent.stderr)")
        #expect(sent.stderr.contains("cancelled (SIGINT)"), "the ABORT's reason reaches the source: \(sent.stderr)")
        #expect(sent.stderr.contains("was stopped cleanly"), "\(sent.stderr)")
        #expect(!FileManager.default.fileExists(atPath: run.target + ".partial"))
        #expect(!FileManager.default.fileExists(atPath: run.target))
        let report = try run.json(run.destinationJSON)
        #expect(report["outcome"] as? String == "cancelled")
        if serve {
            let migrations = report["migrations"] as? [[String: Any]]
            #expect(migrations?.count == 1 && migrations?.first?["outcome"] as? String == "cancelled", "\(report)")
        }
        #expect((try run.json(run.sourceJSON))["outcome"] as? String == "aborted")
        try run.expectSourceImageConsistent()
    }

    /// A signal while the guest runs before migrating (`--run-before`) ends the wait: the
    /// migration never starts, the guest is stopped cleanly.
    @Test func aSignalDuringRunBeforeEndsIt() throws {
        let scratch = Scratch("signal-run-before")
        let image = scratch.file("vm.img")
        #expect(try FerryProcess.run(["image", "create", image, "--size", "8M"]).status == 0)
        let sender = try FerryProcess([
            "send", "--image", image, "--to", "127.0.0.1:1", "--workload", "uniform:1MB/s", "--run-before", "60s", "-q",
        ])
        Thread.sleep(forTimeInterval: 0.5)
        let signalledAt = Date()
        kill(sender.process.processIdentifier, SIGINT)
        let sent = sender.wait(timeout: 20)
        #expect(Date().timeIntervalSince(signalledAt) < 3)
        #expect(sent.signal == nil && sent.status == 130, "\(sent.status) \(sent.stderr)")
        #expect(sent.stderr.contains("was stopped cleanly"), "\(sent.stderr)")
    }

    /// A destination that no source has reached yet, and a `--serve` one, end on SIGTERM at once.
    @Test func anIdleDestinationEndsOnSIGTERM() throws {
        let scratch = Scratch("signal-idle")
        let directory = scratch.file("served")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for mode in [["--image", scratch.file("one.img")], ["--serve", directory]] {
            let receiver = try FerryProcess(["receive", "--listen", "127.0.0.1:0", "-q"] + mode)
            _ = try #require(FaultMatrixTests.listeningPort(receiver), "the receiver did not start")
            kill(receiver.process.processIdentifier, SIGTERM)
            let ended = receiver.wait(timeout: 10)
            #expect(ended.signal == nil && ended.status == 143, "\(mode[0]): \(ended.status) \(ended.stderr)")
            #expect(ended.stderr.contains("cancelled (SIGTERM)"), "\(ended.stderr)")
        }
    }
}
