import FerryTestSupport
import Foundation
import Glibc
import Testing

/// Issue 19, item 2: while a post-copy push runs, `ferry status` on the destination says how far it
/// got; `--max-bandwidth` holds the push as it holds the pre-copy rounds; and a source that stops
/// during the push is noticed by the destination (`ferry receive --stall-timeout`) and resumed.
@Suite(.serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why)) struct PostcopyStatusTests {
    /// A receiver and a sender that switches to post-copy after one round of a 32 MiB guest
    /// dirtying 400 MB/s, its push held to 8 MB/s (seconds long); the receiver's port.
    static func start(_ scratch: Scratch, receiving extra: [String] = []) throws -> (FerryProcess, FerryProcess, Int) {
        let image = scratch.file("vm.img")
        #expect(try FerryProcess.run(["image", "create", image, "--size", "32M"]).status == 0)
        let receiver = try FerryProcess(
            [
                "receive", "--listen", "127.0.0.1:0", "--image", scratch.file("in.img"), "--accept-timeout", "60s",
                "--run-for", "200ms", "--json", scratch.file("receive.json"),
            ] + extra)
        let port = try JSONReportTests.port(of: receiver)
        let sender = try FerryProcess([
            "send", "--image", image, "--to", "127.0.0.1:\(port)", "--workload", "uniform:400MB/s",
            "--downtime-ms", "0.001", "--no-auto-converge", "--postcopy-after", "1", "--max-bandwidth", "8MB/s",
            "-q", "--json", scratch.file("send.json"),
        ])
        return (receiver, sender, port)
    }

    static func report(_ path: String) throws -> [String: Any] {
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path)))
        return try #require(object as? [String: Any], "\(path)")
    }

    /// The source stopped (SIGSTOP) for 3 s during the push, longer than the destination's
    /// `--stall-timeout 1s`: the destination counts the connection lost and waits for `RESUME`;
    /// the source, continued, finds it closed, reconnects and finishes. Before, the destination
    /// waited for a stopped source however long, the guest's faulting vCPUs with it.
    @Test func aStoppedSourceIsNoticedAndResumed() throws {
        let scratch = Scratch()
        let (receiver, sender, port) = try Self.start(scratch, receiving: ["--stall-timeout", "1s"])
        let deadline = Date().addingTimeInterval(60)
        var pushing = false
        while !pushing && sender.process.isRunning && Date() < deadline {
            let status = try FerryProcess.run(["status", "--connect", "127.0.0.1:\(port)"], timeout: 30)
            pushing = status.stdout.contains("post-copy:")
            if !pushing { usleep(100_000) }
        }
        try #require(pushing, "no post-copy push seen")
        kill(sender.process.processIdentifier, SIGSTOP)
        sleep(3)
        kill(sender.process.processIdentifier, SIGCONT)
        let sent = sender.wait()
        let received = receiver.wait()
        #expect(sent.status == 0, "\(sent.stderr)")
        #expect(received.status == 0, "\(received.stderr)")
        let source = try Self.report(scratch.file("send.json"))
        let destination = try Self.report(scratch.file("receive.json"))
        #expect((destination["resumes"] as? Int ?? 0) >= 1, "\(destination)")
        #expect((source["resumes"] as? Int ?? 0) >= 1 && source["guest"] as? String == "destination", "\(source)")
        #expect(destination["verified"] as? Bool == true)
    }

    @Test func statusFollowsThePushAndTheBandwidthCapHoldsIt() throws {
        let scratch = Scratch()
        let (receiver, sender, port) = try Self.start(scratch)
        var lines: [String] = []
        let deadline = Date().addingTimeInterval(90)
        while sender.process.isRunning && Date() < deadline {
            let status = try FerryProcess.run(["status", "--connect", "127.0.0.1:\(port)"], timeout: 30)
            if let line = status.stdout.split(separator: "\n").first(where: { $0.contains("post-copy:") }) {
                lines.append(String(line))
            }
            usleep(300_000)
        }
        let sent = sender.wait()
        #expect(sent.status == 0, "\(sent.stderr)")
        #expect(receiver.wait().status == 0)
        // "… resumed (2 s)  post-copy: the guest runs here; N of M stale pages arrived (P%), …"
        let arrived = lines.compactMap { line -> (Int, Int)? in
            guard let range = line.range(of: #"(\d+) of (\d+) stale pages arrived"#, options: .regularExpression)
            else { return nil }
            let numbers = line[range].split(separator: " ").compactMap { Int($0) }
            return numbers.count == 2 ? (numbers[0], numbers[1]) : nil
        }
        #expect(arrived.count >= 2, "ferry status during the push: \(lines)")
        #expect(lines.allSatisfy { $0.contains(" resumed ") }, "\(lines)")
        if let first = arrived.first, let last = arrived.last {
            #expect(last.0 > first.0 && last.0 <= last.1, "the push moves on: \(arrived)")
        }
        // The push kept to 8 MB/s (the limiter's 10 ms burst allowance aside).
        let report = try Self.report(scratch.file("receive.json"))
        let postcopy = try #require(report["postcopy"] as? [String: Any], "\(report)")
        let wire = try #require(postcopy["wire_bytes"] as? Double ?? (postcopy["wire_bytes"] as? Int).map(Double.init))
        let seconds = try #require(postcopy["duration_ms"] as? Double) / 1000
        #expect(wire > 4e6, "\(postcopy)")
        #expect(wire / seconds <= 8e6 * 1.1, "the push moved \(wire / seconds / 1e6) MB/s: \(postcopy)")
        print("post-copy status: \(lines.count) answers during the push, \(arrived); push \(wire / seconds / 1e6) MB/s")
    }
}
