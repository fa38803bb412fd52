import FerryTestSupport
import Foundation
import Testing

/// The progress `ferry send` and `ferry receive` print on stderr: a bar redrawn in place on a
/// terminal, plain lines on a pipe, the destination's per-round counts, one send rate.
@Suite(.serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why)) struct ProgressDisplayTests {
    /// A migration of a `size` image capped at `cap` with the sender's stderr on `capture`;
    /// returns the sender's stderr, the receiver's, and both JSON reports.
    private func migrate(
        stderr capture: OutputCapture, scratch: Scratch, size: String, cap: String
    ) throws -> Migration {
        let image = scratch.file("source.img")
        let created = try FerryProcess.run(["image", "create", image, "--size", size, "--seed", "7"])
        #expect(created.status == 0, "\(created.stderr)")
        let receiver = try FerryProcess([
            "receive", "--listen", "127.0.0.1:0", "--image", scratch.file("received.img"),
            "--json", scratch.file("receive.json"), "--accept-timeout", "60s",
        ])
        let listening = try #require(receiver.waitForStderrLine(containing: "listening on"))
        let afterHost = try #require(listening.range(of: "127.0.0.1:")).upperBound
        let port = try #require(Int(listening[afterHost...].prefix { $0.isNumber }))
        let sender = try FerryProcess(
            [
                "send", "--image", image, "--to", "127.0.0.1:\(port)", "--workload", "uniform:10MB/s",
                "--run-before", "100ms", "--max-bandwidth", cap, "--json", scratch.file("send.json"),
            ], standardError: capture.write)
        capture.closeWriteEnd()
        let sent = sender.wait()
        let received = receiver.wait()
        let senderStderr = capture.finish()
        #expect(sent.status == 0, "\(senderStderr)")
        #expect(received.status == 0, "\(received.stderr)")
        return Migration(
            senderStderr: senderStderr, receiverStderr: received.stderr,
            source: try Self.report(scratch.file("send.json")),
            destination: try Self.report(scratch.file("receive.json")))
    }

    struct Migration {
        var senderStderr: String
        var receiverStderr: String
        var source: [String: Any]
        var destination: [String: Any]

        /// `per_round` of a report: (round, pages, send MB/s), the final round included.
        static func rounds(_ report: [String: Any]) -> [(round: Int, pages: Int, rateMBps: Double)] {
            ((report["per_round"] as? [[String: Any]]) ?? []).map {
                let rate = $0["send_mb_per_s"] as? Double
                return (($0["round"] as? Int) ?? -1, ($0["pages"] as? Int) ?? -1, rate ?? -1)
            }
        }
    }

    private static func report(_ path: String) throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    /// Numbers captured by the first group of `pattern` in each match.
    private static func numbers(_ pattern: String, in text: String) throws -> [Double] {
        let regex = try NSRegularExpression(pattern: pattern, options: [.anchorsMatchLines])
        let range = NSRange(text.startIndex..., in: text)
        return regex.matches(in: text, range: range).compactMap { match in
            Range(match.range(at: 1), in: text).flatMap { Double(text[$0]) }
        }
    }

    /// stderr on a terminal: the bar is redrawn in place (carriage return, erase line) with
    /// percentages, wire bytes, elapsed time, ETA and rate; each round's end gets a line. Under
    /// `--max-bandwidth 10MB/s` the bar's rate and the report's agree (within 20%) with the cap.
    @Test func terminalShowsARedrawnBar() throws {
        let terminal = try OutputCapture.terminal()
        let migration = try migrate(stderr: terminal, scratch: Scratch("progress-tty"), size: "48M", cap: "10MB/s")
        let text = migration.senderStderr
        let redraws = text.components(separatedBy: "\r\u{1B}[K[source] round 0 [").count - 1
        #expect(redraws >= 4, "round 0 at 10 MB/s lasts about two seconds: several redraws\n\(text)")
        let percents = try Self.numbers(#"round 0 \[[#.]+\] (\d+)%  "#, in: text)
        #expect(percents.contains { $0 > 0 && $0 < 100 }, "\(text)")
        #expect(percents == percents.sorted(), "round 0's percentage only grows: \(percents)")
        #expect(text.contains("MB wire  elapsed "))
        #expect(text.contains("  ETA "))
        #expect(text.contains("[source] round 0 done: "))

        // One rate: the bar's (measured after a second of sending, over the last two) and the
        // report's agree near the round's end, and neither exceeds the cap (a busy machine may
        // keep both below it).
        let barRates = try Self.numbers(#"round 0 \[[#.]+\] .* (\d+\.?\d*) MB/s"#, in: text)
        let reported = try #require(Migration.rounds(migration.source).first).rateMBps
        #expect(reported <= 10.5 && reported >= 5, "report's round 0 rate \(reported) MB/s under a 10 MB/s cap")
        #expect(barRates.allSatisfy { $0 <= 12 }, "\(barRates)")
        let last = try #require(barRates.last, "\(text)")
        #expect(abs(last - reported) <= 0.2 * reported, "bar \(barRates), report \(reported)")
    }

    /// stderr on a pipe: no carriage return or escape, plain lines (a live one at most every few
    /// seconds, one per round's end); the live rate and the report's agree with the cap; the
    /// destination's line for each round counts the pages the source sent in it.
    @Test func pipeGetsPlainLinesAndOneRate() throws {
        let pipe = try OutputCapture.pipe()
        // Round 0 takes about five seconds: a second plain line comes during it, with a rate.
        let migration = try migrate(stderr: pipe, scratch: Scratch("progress-pipe"), size: "96M", cap: "8MB/s")
        let text = migration.senderStderr
        #expect(!text.contains("\r"), "\(text.debugDescription)")
        #expect(!text.contains("\u{1B}"), "\(text.debugDescription)")
        let live = text.split(separator: "\n").filter { $0.hasPrefix("[source] round ") && $0.contains(" pages), ") }
        #expect(live.count >= 2, "round 0 lasts about five seconds: two plain live lines\n\(text)")
        let totalSeconds = (migration.source["total_ms"] as? Double ?? 0) / 1000
        let sourceRounds = Migration.rounds(migration.source)
        #expect(live.count <= sourceRounds.count + Int(totalSeconds / 3) + 1, "\(live)")
        #expect(text.contains("[source] round 0 done: "))

        // One rate: the live line's and the report's round 0 within the cap.
        let liveRates = try Self.numbers(#"round 0: .* (\d+\.?\d*) MB/s$"#, in: live.joined(separator: "\n"))
        #expect(!liveRates.isEmpty, "\(live)")
        let reported = try #require(sourceRounds.first).rateMBps
        #expect(reported <= 8.4 && reported >= 4, "report's round 0 rate \(reported) MB/s under an 8 MB/s cap")
        #expect(liveRates.allSatisfy { $0 <= 9.6 && $0 >= 4 }, "\(liveRates)")

        // The destination: pages each round carried, as the source's report counts them.
        let destinationRounds = Migration.rounds(migration.destination)
        #expect(destinationRounds.count == sourceRounds.count)
        let pageCount = migration.source["pages_total"] as? Int ?? 0
        for round in sourceRounds.dropLast() {
            #expect(
                migration.receiverStderr.contains("[destination] round \(round.round): \(round.pages) pages ("),
                "source sent \(round.pages) pages in round \(round.round)\n\(migration.receiverStderr)")
        }
        #expect(sourceRounds.dropFirst().dropLast().allSatisfy { $0.pages < pageCount })
    }
}
