import FerryTestSupport
import Foundation
import Testing

@Suite(.serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why)) struct CommandLineTests {
    /// `ferry send` and `ferry receive` as two processes with `--run-for 0`: the two image files are
    /// identical (cmp), both reports say verified, and the JSON reports carry the documented fields.
    @Test func sendAndReceiveLeaveIdenticalImages() throws {
        let scratch = Scratch("send-receive")
        let image = scratch.file("source.img")
        let received = scratch.file("received.img")
        let created = try FerryProcess.run(["image", "create", image, "--size", "48M", "--seed", "5"])
        #expect(created.status == 0, "\(created.stderr)")

        let receiver = try FerryProcess([
            "receive", "--listen", "127.0.0.1:0", "--image", received,
            "--json", scratch.file("receive.json"), "--accept-timeout", "60s",
        ])
        let listening = try #require(receiver.waitForStderrLine(containing: "listening on"))
        let port = try #require(
            listening.split(separator: ":").last.flatMap { Int($0.split(separator: ",").first ?? "") })
        let sender = try FerryProcess.run([
            "send", "--image", image, "--to", "127.0.0.1:\(port)", "--workload", "uniform:30MB/s",
            "--vcpus", "3", "--run-before", "200ms", "--json", scratch.file("send.json"),
        ])
        let receiverOutcome = receiver.wait()
        #expect(sender.status == 0, "\(sender.stderr)")
        #expect(receiverOutcome.status == 0, "\(receiverOutcome.stderr)")
        #expect(sender.stdout.contains("source report: migrated"))
        #expect(receiverOutcome.stdout.contains("destination report: migrated"))
        #expect(try filesEqual(image, received), "destination image must equal the source image (cmp)")

        for name in ["send.json", "receive.json"] {
            let data = try Data(contentsOf: URL(fileURLWithPath: scratch.file(name)))
            let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
            for key in [
                "total_ms", "setup_ms", "downtime_ms", "downtime_parts", "rounds", "verified", "wire_bytes", "pages",
                "per_round",
            ] {
                #expect(json[key] != nil, "\(name) lacks \(key)")
            }
            #expect(json["verified"] as? Bool == true)
            #expect((json["per_round"] as? [Any])?.isEmpty == false)
            #expect((json["downtime_ms"] as? Double ?? 0) > 0)
        }
    }

    /// `ferry receive --serve DIR` takes two guests at once, each into DIR/NAME.img, and exits
    /// after `--sessions 2`; a guest name that would leave the directory is refused by the sender.
    @Test func serveReceivesTwoGuestsIntoADirectory() throws {
        let scratch = Scratch("serve")
        let guests = scratch.file("guests")
        try FileManager.default.createDirectory(atPath: guests, withIntermediateDirectories: true)
        for (name, seed) in [("alpha", "1"), ("beta", "2")] {
            #expect(
                try FerryProcess.run(["image", "create", scratch.file(name + ".img"), "--size", "24M", "--seed", seed])
                    .status == 0)
        }
        let receiver = try FerryProcess([
            "receive", "--listen", "127.0.0.1:0", "--serve", guests, "--sessions", "2",
            "--max-sessions", "2", "--json", scratch.file("serve.json"),
        ])
        let listening = try #require(receiver.waitForStderrLine(containing: "listening on"))
        let afterHost = try #require(listening.range(of: "127.0.0.1:")).upperBound
        let port = try #require(Int(listening[afterHost...].prefix { $0.isNumber }))
        let senders = try ["alpha", "beta"].map { name in
            try FerryProcess([
                "send", "--image", scratch.file(name + ".img"), "--to", "127.0.0.1:\(port)",
                "--workload", "uniform:10MB/s", "--run-before", "100ms", "-q",
            ])
        }
        let outcomes = senders.map { $0.wait() }
        let served = receiver.wait()
        for outcome in outcomes { #expect(outcome.status == 0, "\(outcome.stderr)") }
        #expect(served.status == 0, "\(served.stderr)")
        for name in ["alpha", "beta"] {
            #expect(served.stdout.contains("guest \(name): migrated into \(guests)/\(name).img"), "\(served.stdout)")
            #expect(try filesEqual(scratch.file(name + ".img"), guests + "/" + name + ".img"))
        }
        let data = try Data(contentsOf: URL(fileURLWithPath: scratch.file("serve.json")))
        let document = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(document["schema_version"] as? Int == 1 && document["outcome"] as? String == "succeeded")
        let migrations = try #require(document["migrations"] as? [[String: Any]], "\(document)")
        #expect(migrations.count == 2)
        #expect(migrations.allSatisfy { $0["outcome"] as? String == "succeeded" && $0["wire_bytes"] is Int })

        let escape = try FerryProcess.run([
            "send", "--image", scratch.file("alpha.img"), "--to", "127.0.0.1:\(port)",
            "--name", "../escape",
        ])
        #expect(escape.status == 2, "a bad --name is a usage error: \(escape.stderr)")
        #expect(escape.stderr.contains("--name ../escape"), "\(escape.stderr)")
    }

    /// `ferry status` asks a serving destination where its migrations stand: a migrated guest is
    /// `resumed` (by name, and by the session id the sender's report prints), an unknown session
    /// is `unknown`, and a malformed session id is a usage error.
    @Test func statusReportsWhereAGuestRuns() throws {
        let scratch = Scratch("status")
        let guests = scratch.file("guests")
        try FileManager.default.createDirectory(atPath: guests, withIntermediateDirectories: true)
        #expect(try FerryProcess.run(["image", "create", scratch.file("gamma.img"), "--size", "16M"]).status == 0)
        let receiver = try FerryProcess(["receive", "--listen", "127.0.0.1:0", "--serve", guests])
        defer {
            kill(receiver.process.processIdentifier, SIGKILL)
            _ = receiver.wait(timeout: 10)
        }
        let listening = try #require(receiver.waitForStderrLine(containing: "listening on"))
        let afterHost = try #require(listening.range(of: "127.0.0.1:")).upperBound
        let port = try #require(Int(listening[afterHost...].prefix { $0.isNumber }))
        let sent = try FerryProcess.run([
            "send", "--image", scratch.file("gamma.img"), "--to", "127.0.0.1:\(port)", "-q",
            "--json", scratch.file("send.json"),
        ])
        #expect(sent.status == 0, "\(sent.stderr)")
        let sentJSON =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: scratch.file("send.json"))))
            as? [String: Any]
        let sessionLine = try #require(sent.stdout.split(separator: "\n").first { $0.contains("session ") })
        let session = try #require(sessionLine.split(separator: " ").last.map(String.init))
        let tokenLine = try #require(sent.stdout.split(separator: "\n").first { $0.contains("token ") })
        let token = try #require(tokenLine.split(separator: " ").dropFirst().first.map(String.init))
        #expect(sentJSON?["session_token"] as? String == token && token.count == 32, "\(sentJSON ?? [:])")

        // Anyone learns the state; only the token holder the session id.
        let byName = try FerryProcess.run(["status", "--connect", "127.0.0.1:\(port)", "--guest", "gamma"])
        #expect(byName.status == 0, "\(byName.stderr)")
        #expect(byName.stdout.contains("session (hidden)  guest gamma  resumed"), "\(byName.stdout)")
        let withToken = try FerryProcess.run([
            "status", "--connect", "127.0.0.1:\(port)", "--guest", "gamma", "--token", token,
        ])
        #expect(withToken.stdout.contains("session \(session)  guest gamma  resumed"), "\(withToken.stdout)")
        let byID = try FerryProcess.run(["status", "--connect", "127.0.0.1:\(port)", "--session", session, "--json"])
        let answer = try #require(
            try JSONSerialization.jsonObject(with: Data(byID.stdout.utf8)) as? [String: Any], "\(byID.stdout)")
        #expect(answer["schema_version"] as? Int == 1)
        let rows = try #require(answer["sessions"] as? [[String: Any]], "\(byID.stdout)")
        #expect(rows.first?["state"] as? String == "resumed", "\(byID.stdout)")
        // Numbers are JSON numbers; the session id (shown: the source's session named) a hex string.
        #expect(JSONReportTests.isNumber(rows.first?["pages"]) && JSONReportTests.isNumber(rows.first?["age_s"]))
        #expect(rows.first?["pages"] as? Int == 4096, "16 MiB in 4 KiB pages: \(byID.stdout)")
        #expect(rows.first?["session"] is NSNull || rows.first?["session"] as? String == session, "\(byID.stdout)")
        let unknown = try FerryProcess.run(["status", "--connect", "127.0.0.1:\(port)", "--session", "0x1234"])
        #expect(unknown.stdout.contains("unknown"), "\(unknown.stdout)")
        let bad = try FerryProcess.run(["status", "--connect", "127.0.0.1:\(port)", "--session", "xyz"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("--session xyz"), "\(bad.stderr)")
    }

    /// Deciding a handoff in the source's place needs the session token (Protocol.md section 6):
    /// `--commit` or `--discard` without `--token` is a usage error before anything is sent, and
    /// so is a token that is not 32 hex digits.
    @Test func statusCommitNeedsTheToken() throws {
        let session = "0123456789abcdef"
        for decision in ["--commit", "--discard"] {
            let outcome = try FerryProcess.run(["status", "--connect", "127.0.0.1:9", "--session", session, decision])
            #expect(outcome.status == 2, "\(outcome.stderr)")
            #expect(
                outcome.stderr.contains("\(decision) needs --token: the session token is in the source's report"),
                "\(outcome.stderr)")
        }
        let short = try FerryProcess.run([
            "status", "--connect", "127.0.0.1:9", "--session", session, "--commit", "--token", "abc",
        ])
        #expect(short.status == 2, "\(short.stderr)")
        #expect(short.stderr.contains("--token abc: give the session token as 32 hex digits"), "\(short.stderr)")
    }

    @Test func imageSizeMustBeAMultipleOfThePageSize() throws {
        let scratch = Scratch("bad-size")
        let outcome = try FerryProcess.run(["image", "create", scratch.file("x.img"), "--size", "1000"])
        #expect(outcome.status == 2)
        #expect(outcome.stderr.contains("multiple of the page size"))
        #expect(!FileManager.default.fileExists(atPath: scratch.file("x.img")))
    }

    @Test func receiveRefusesToOverwriteWithoutForce() throws {
        let scratch = Scratch("exists")
        _ = FileManager.default.createFile(atPath: scratch.file("taken.img"), contents: Data([1, 2, 3]))
        let outcome = try FerryProcess.run(["receive", "--listen", "127.0.0.1:0", "--image", scratch.file("taken.img")])
        #expect(outcome.status == 9)
        #expect(outcome.stderr.contains("--force"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: scratch.file("taken.img"))) == Data([1, 2, 3]))
    }

    @Test func sendToNobodySaysSoAndKeepsTheImage() throws {
        let scratch = Scratch("nobody")
        let image = scratch.file("source.img")
        #expect(try FerryProcess.run(["image", "create", image, "--size", "4M"]).status == 0)
        // Bind and close a port so that nothing listens on it.
        let outcome = try FerryProcess.run([
            "send", "--image", image, "--to", "127.0.0.1:1", "--workload", "uniform:10MB/s",
        ])
        #expect(outcome.status == 5)
        #expect(outcome.stderr.contains("127.0.0.1:1"))
        #expect(outcome.stderr.contains("guest ran on the source until now"))
    }

    /// The destination dies during pre-copy: `ferry send` says it lost the connection, tries
    /// `--reconnect-attempts` times, gives up with exit code 5 and stops its guest cleanly.
    @Test func sendReconnectsThenGivesUpWhenTheDestinationDies() throws {
        let scratch = Scratch("reconnect")
        let image = scratch.file("source.img")
        #expect(try FerryProcess.run(["image", "create", image, "--size", "32M"]).status == 0)
        let receiver = try FerryProcess([
            "receive", "--listen", "127.0.0.1:0", "--image", scratch.file("received.img"),
            "--accept-timeout", "60s",
        ])
        let listening = try #require(receiver.waitForStderrLine(containing: "listening on"))
        let port = try #require(
            listening.split(separator: ":").last.flatMap { Int($0.split(separator: ",").first ?? "") })
        // 32 MiB at 8 MB/s: pre-copy lasts seconds; the receiver is killed during it.
        let sender = try FerryProcess([
            "send", "--image", image, "--to", "127.0.0.1:\(port)", "--workload", "uniform:5MB/s",
            "--max-bandwidth", "8MB/s", "--reconnect-attempts", "2",
        ])
        Thread.sleep(forTimeInterval: 1)
        kill(receiver.process.processIdentifier, SIGKILL)
        _ = receiver.wait()
        let outcome = sender.wait()
        #expect(outcome.status == 5, "\(outcome.stderr)")
        #expect(outcome.stderr.contains("reconnecting (attempt 1/2)"), "\(outcome.stderr)")
        #expect(outcome.stderr.contains("reconnecting (attempt 2/2)"), "\(outcome.stderr)")
        #expect(outcome.stderr.contains("could not resume in 2 attempt(s)"), "\(outcome.stderr)")
        #expect(outcome.stderr.contains("guest ran on the source until now"), "\(outcome.stderr)")
    }

    @Test func badWorkloadIsAUsageError() throws {
        let scratch = Scratch("workload")
        let image = scratch.file("source.img")
        #expect(try FerryProcess.run(["image", "create", image, "--size", "4M"]).status == 0)
        let outcome = try FerryProcess.run([
            "send", "--image", image, "--to", "127.0.0.1:9", "--workload", "uniform:fast",
        ])
        #expect(outcome.status == 2)
        #expect(outcome.stderr.contains("uniform:fast") || outcome.stderr.contains("fast"))
    }
}
