import FerryMigration
import FerryTestSupport
import FerryTransport
import Foundation
import Glibc
import Testing

/// Issue 13: `--json` writes a report on every outcome (docs/json-report.md), numbers as
/// numbers, keys that say their unit; `--json -` is stdout; a path that cannot be written is a
/// usage error before anything starts.
@Suite(.serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why)) struct JSONReportTests {
    /// The keys every report carries, and the JSON type of each (numbers stay numbers).
    static let numberKeys = [
        "schema_version", "image_bytes", "page_size_bytes", "pages_total", "vcpus", "total_ms", "setup_ms", "cpu_ms",
        "downtime_ms", "downtime_target_ms", "rounds", "wire_bytes", "hole_pages", "max_throttle_percent", "resumes",
        "run_for_ms", "prealloc_ms", "predicted_downtime_ms",
    ]
    static let roundNumberKeys = [
        "round", "pages", "wire_bytes", "duration_ms", "send_mb_per_s", "dirty_pages", "dirty_mb_per_s",
        "predicted_downtime_ms", "throttle_percent",
    ]

    /// Parses `text` as one JSON report and checks what every report must hold: the schema
    /// version, the outcome, UTC timestamps with milliseconds, `guest`, and typed numbers.
    static func report(_ text: String, _ what: String) throws -> [String: Any] {
        let object = try JSONSerialization.jsonObject(with: Data(text.utf8))
        let json = try #require(object as? [String: Any], "\(what) is not a JSON object: \(text)")
        #expect(json["schema_version"] as? Int == 1, "\(what)")
        #expect(
            MigrationOutcome(rawValue: json["outcome"] as? String ?? "") != nil, "\(what): \(json["outcome"] ?? "")")
        for key in ["started_at", "finished_at"] {
            let time = json[key] as? String ?? ""
            #expect(
                time.range(of: #"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"#, options: .regularExpression) != nil,
                "\(what): \(key) \(time)")
        }
        #expect(GuestLocation(rawValue: json["guest"] as? String ?? "") != nil, "\(what): guest \(json["guest"] ?? "")")
        for key in numberKeys {
            #expect(isNumber(json[key]), "\(what): \(key) is \(String(describing: json[key]))")
        }
        for round in json["per_round"] as? [[String: Any]] ?? [] {
            for key in roundNumberKeys { #expect(isNumber(round[key]), "\(what): per_round \(key)") }
            #expect(round["send_rate_m_bps"] == nil && round["dirty_rate_m_bps"] == nil)
        }
        #expect(isBoolean(json["verified"]) && isBoolean(json["authenticated"]), "\(what)")
        return json
    }

    /// A JSON number (not a string, not a Boolean: JSONSerialization gives both as NSNumber, a
    /// Boolean with type code "c").
    static func isNumber(_ value: Any?) -> Bool {
        guard let number = value as? NSNumber, !(value is String) else { return false }
        return String(cString: number.objCType) != "c"
    }

    static func isBoolean(_ value: Any?) -> Bool {
        guard let number = value as? NSNumber, !(value is String) else { return false }
        return String(cString: number.objCType) == "c"
    }

    static func error(_ json: [String: Any]) -> (message: String, code: String, exit: Int)? {
        guard let error = json["error"] as? [String: Any], let message = error["message"] as? String,
            let code = error["code"] as? String, let exit = error["exit_code"] as? Int
        else { return nil }
        return (message, code, exit)
    }

    static func port(of receiver: FerryProcess) throws -> Int {
        let listening = try #require(receiver.waitForStderrLine(containing: "listening on"))
        let afterHost = try #require(listening.range(of: "127.0.0.1:")).upperBound
        return try #require(Int(listening[afterHost...].prefix { $0.isNumber }))
    }

    static func file(_ path: String) throws -> String {
        try String(contentsOfFile: path, encoding: .utf8)
    }

    /// A migration that succeeds: `--json -` puts the source's report alone on stdout (the text
    /// report goes to stderr), the destination's file says the same outcome.
    @Test func successOnStdoutAndInAFile() throws {
        let scratch = Scratch("json-success")
        let image = scratch.file("vm.img")
        #expect(try FerryProcess.run(["image", "create", image, "--size", "8M"]).status == 0)
        let receiver = try FerryProcess([
            "receive", "--listen", "127.0.0.1:0", "--image", scratch.file("in.img"), "--accept-timeout", "60s",
            "--json", scratch.file("receive.json"),
        ])
        let port = try Self.port(of: receiver)
        let sent = try FerryProcess.run([
            "send", "--image", image, "--to", "127.0.0.1:\(port)", "--workload", "uniform:20MB/s", "-q",
            "--run-before", "100ms", "--json", "-",
        ])
        let received = receiver.wait()
        #expect(sent.status == 0, "\(sent.stderr)")
        #expect(received.status == 0, "\(received.stderr)")
        let source = try Self.report(sent.stdout, "send --json -")
        #expect(source["outcome"] as? String == "succeeded")
        #expect(source["guest"] as? String == "destination")
        #expect(source["role"] as? String == "source")
        #expect(source["error"] == nil)
        #expect((source["per_round"] as? [Any])?.isEmpty == false)
        #expect(sent.stderr.contains("source report: migrated"), "the text report goes to stderr: \(sent.stderr)")
        #expect(!sent.stdout.contains("source report"))
        let destination = try Self.report(try Self.file(scratch.file("receive.json")), "receive.json")
        #expect(destination["outcome"] as? String == "succeeded")
        #expect(destination["guest"] as? String == "destination")
        #expect(destination["session"] as? String == source["session"] as? String)
        try Self.expectForecast(source, sent.stderr)
    }

    /// The blackout's forecast adds up to the prediction, has the device state the setup read,
    /// and a downtime beyond max(target, 1.5 × predicted) is listed as the `total` miss.
    static func expectForecast(_ source: [String: Any], _ text: String) throws {
        let forecast = try #require(source["downtime_forecast"] as? [String: Any], "\(source)")
        let predicted = try #require(source["predicted_downtime_ms"] as? Double)
        #expect(abs((forecast["total_ms"] as? Double ?? -1) - predicted) < 0.01, "\(forecast)")
        #expect((forecast["device_state_bytes"] as? Int ?? 0) > 0, "the built-in guest's vCPU sections: \(forecast)")
        let misses = try #require(source["downtime_misses"] as? [[String: Any]], "\(source)")
        let downtime = try #require(source["downtime_ms"] as? Double)
        let target = try #require(source["downtime_target_ms"] as? Double)
        let beyond = downtime > max(target, 1.5 * predicted) && downtime > predicted + 1
        #expect(!beyond || misses.first?["part"] as? String == "total", "\(downtime) ms: \(misses)")
        #expect(text.contains("    forecast   pause vCPUs"), "\(text)")
    }

    /// VERIFIED held back 80 ms on its way to the source: the blackout misses its forecast, and
    /// both reports name the part (sending: COMPLETE → VERIFIED less the destination's digest)
    /// and the link as its cause.
    @Test func aBlackoutThatMissesItsForecastSaysWhere() throws {
        let scratch = Scratch("json-miss")
        let image = scratch.file("vm.img")
        #expect(try FerryProcess.run(["image", "create", image, "--size", "8M"]).status == 0)
        let receiver = try FerryProcess([
            "receive", "--listen", "127.0.0.1:0", "--image", scratch.file("in.img"), "--accept-timeout", "60s",
        ])
        let relay = try PhaseFaultRelay(
            upstreamPort: UInt16(try Self.port(of: receiver)), phase: .verified, fault: .hook { usleep(80_000) })
        defer { relay.stop() }
        let sent = try FerryProcess.run([
            "send", "--image", image, "--to", "127.0.0.1:\(relay.port)", "--workload", "uniform:5MB/s", "-q",
            "--json", "-",
        ])
        #expect(receiver.wait().status == 0)
        #expect(sent.status == 0, "\(sent.stderr)")
        #expect(relay.injected)
        let source = try Self.report(sent.stdout, "send --json -")
        try Self.expectForecast(source, sent.stderr)
        let misses = try #require(source["downtime_misses"] as? [[String: Any]])
        // Under load another part may miss too (the destination's resume): the two must.
        #expect(misses.prefix(2).map { $0["part"] as? String ?? "" } == ["total", "sending"], "\(misses)")
        let sending = try #require(misses.first { $0["part"] as? String == "sending" })
        #expect((sending["actual_ms"] as? Double ?? 0) >= 80, "\(sending)")
        #expect((sending["cause"] as? String)?.contains("took longer on the link") == true, "\(sending)")
        #expect(sent.stderr.contains("    missed     sending: "), "\(sent.stderr)")
    }

    /// Nothing listens: exit 5 and a report that says failed, why, and that the guest is on the source.
    @Test func connectionRefused() throws {
        let scratch = Scratch("json-refused-connection")
        let image = scratch.file("vm.img")
        #expect(try FerryProcess.run(["image", "create", image, "--size", "4M"]).status == 0)
        let port = try TCPListener(Endpoint(host: "127.0.0.1", port: 0)).port  // closed again at once
        let sent = try FerryProcess.run([
            "send", "--image", image, "--to", "127.0.0.1:\(port)", "-q", "--json", scratch.file("send.json"),
        ])
        #expect(sent.status == 5, "\(sent.stderr)")
        let json = try Self.report(try Self.file(scratch.file("send.json")), "send.json")
        #expect(json["outcome"] as? String == "failed")
        #expect(json["guest"] as? String == "source")
        let error = try #require(Self.error(json), "\(json)")
        #expect(error.code == "transport" && error.exit == 5)
        #expect(error.message.contains("127.0.0.1:\(port)"), "\(error.message)")
        #expect(json["image"] as? String == image)
    }

    /// Pre-copy that cannot meet a 1 µs target in 3 rounds: the source's report says
    /// not_converged (exit 4) with the rounds it ran; the destination's says aborted (exit 10).
    /// The cap keeps each round long enough (16 MiB at 40 MB/s) for the guest to dirty pages in
    /// it even under load: a round that finds nothing dirty switches over whatever the target.
    @Test func notConverged() throws {
        let scratch = Scratch("json-not-converged")
        let image = scratch.file("vm.img")
        #expect(try FerryProcess.run(["image", "create", image, "--size", "16M"]).status == 0)
        let receiver = try FerryProcess([
            "receive", "--listen", "127.0.0.1:0", "--image", scratch.file("in.img"), "--accept-timeout", "60s",
            "--json", scratch.file("receive.json"),
        ])
        let port = try Self.port(of: receiver)
        let sent = try FerryProcess.run([
            "send", "--image", image, "--to", "127.0.0.1:\(port)", "--workload", "uniform:80MB/s",
            "--downtime-ms", "0.001", "--max-rounds", "3", "--no-auto-converge", "--max-bandwidth", "40MB/s", "-q",
            "--json", "-",
        ])
        let received = receiver.wait()
        #expect(sent.status == 4, "\(sent.stderr)")
        #expect(received.status == 10, "\(received.stderr)")
        let source = try Self.report(sent.stdout, "send --json -")
        #expect(source["outcome"] as? String == "not_converged")
        #expect(source["guest"] as? String == "source")
        #expect(Self.error(source)?.code == "not_converged" && Self.error(source)?.exit == 4, "\(source)")
        #expect(source["rounds"] as? Int == 3, "what it ran is kept: \(source["rounds"] ?? "")")
        #expect((source["per_round"] as? [Any])?.count == 3)
        #expect((source["wire_bytes"] as? Int ?? 0) > 0)
        let steps = source["vcpu_steps"] as? [Int] ?? []
        #expect(steps.count == 2 && steps.allSatisfy { $0 > 0 }, "where the guest stopped: \(steps)")
        let destination = try Self.report(try Self.file(scratch.file("receive.json")), "receive.json")
        #expect(destination["outcome"] as? String == "aborted")
        #expect(destination["guest"] as? String == "not-here")
        #expect(Self.error(destination)?.exit == 10, "\(destination)")
        #expect((destination["per_round"] as? [Any])?.isEmpty == false)
    }

    /// The same guest that does not converge above, with `--postcopy-after 1`: it switches
    /// after one round, its stale pages follow, and both reports say so (docs/postcopy.md).
    @Test func postcopyAfterOneRound() throws {
        let scratch = Scratch()
        let image = scratch.file("vm.img")
        #expect(try FerryProcess.run(["image", "create", image, "--size", "16M"]).status == 0)
        let receiver = try FerryProcess([
            "receive", "--listen", "127.0.0.1:0", "--image", scratch.file("in.img"), "--accept-timeout", "60s",
            "--run-for", "200ms", "--json", scratch.file("receive.json"),
        ])
        let port = try Self.port(of: receiver)
        let sent = try FerryProcess.run([
            "send", "--image", image, "--to", "127.0.0.1:\(port)", "--workload", "uniform:80MB/s",
            "--downtime-ms", "0.001", "--max-rounds", "3", "--no-auto-converge", "--postcopy-after", "1", "--json",
            "-",
        ])
        let received = receiver.wait()
        #expect(sent.status == 0, "\(sent.stderr)")
        #expect(received.status == 0, "\(received.stderr)")
        let source = try Self.report(sent.stdout, "send --json -")
        #expect(source["outcome"] as? String == "succeeded" && source["guest"] as? String == "destination")
        let postcopy = try #require(source["postcopy"] as? [String: Any], "\(source)")
        #expect(postcopy["after_rounds"] as? Int == 1 && (postcopy["stale_pages"] as? Int ?? 0) > 0, "\(postcopy)")
        #expect((postcopy["reason"] as? String)?.contains("--postcopy-after 1") == true, "\(postcopy)")
        let destination = try Self.report(try Self.file(scratch.file("receive.json")), "receive.json")
        #expect(destination["verified"] as? Bool == true && destination["postcopy"] is [String: Any], "\(destination)")
        // The guest's progress: the source's part (until the switch), the destination's (the push, then after).
        let before = try #require(source["progress"] as? [String: Any], "\(source)")
        #expect((before["during_steps"] as? Int ?? 0) > 0 && before["during_s"] is Double, "\(before)")
        let after = try #require(destination["progress"] as? [String: Any], "\(destination)")
        #expect(after["postcopy_steps"] is Int && after["postcopy_s"] is Double, "\(after)")
        #expect((after["after_steps"] as? Int ?? 0) > 0, "the guest ran on at the destination: \(after)")
        let help = try FerryProcess.run(["send", "--help"])
        #expect(help.stdout.contains("--postcopy-after") && help.stdout.contains("--max-throttle"))
    }

    /// Keys that differ: the source is refused (exit 3) and its report says so.
    @Test func refusedByTheDestination() throws {
        let scratch = Scratch("json-refused")
        let image = scratch.file("vm.img")
        #expect(try FerryProcess.run(["image", "create", image, "--size", "4M"]).status == 0)
        for key in ["a.key", "b.key"] {
            #expect(try FerryProcess.run(["keygen", "--out", scratch.file(key)]).status == 0)
        }
        let receiver = try FerryProcess([
            "receive", "--listen", "127.0.0.1:0", "--image", scratch.file("in.img"), "--key-file",
            scratch.file("a.key"),
        ])
        defer {
            kill(receiver.process.processIdentifier, SIGKILL)
            _ = receiver.wait(timeout: 10)
        }
        let port = try Self.port(of: receiver)
        let sent = try FerryProcess.run([
            "send", "--image", image, "--to", "127.0.0.1:\(port)", "-q", "--key-file", scratch.file("b.key"),
            "--json", scratch.file("send.json"),
        ])
        #expect(sent.status == 3, "\(sent.stderr)")
        let json = try Self.report(try Self.file(scratch.file("send.json")), "send.json")
        #expect(json["outcome"] as? String == "refused")
        #expect(json["guest"] as? String == "source")
        #expect(Self.error(json)?.code == "refused" && Self.error(json)?.exit == 3, "\(json)")
    }

    /// A `--json` path that cannot be written is a usage error (exit 2) naming `--json` and why,
    /// before the guest starts (the image is untouched) or the destination is contacted.
    @Test(arguments: [
        ("no/such/dir/send.json", "does not exist"), (".", "is a directory"), ("", "an empty path"),
    ])
    func unwritablePathIsRefusedBeforeAnythingStarts(_ path: String, _ reason: String) throws {
        let scratch = Scratch("json-unwritable-\(reason.filter(\.isLetter))")
        let image = scratch.file("vm.img")
        #expect(try FerryProcess.run(["image", "create", image, "--size", "64K"]).status == 0)
        let before = try Data(contentsOf: URL(fileURLWithPath: image))
        let witness = try OptionValueCommandLineTests.Witness()
        let target = path.isEmpty ? "" : (path == "." ? scratch.path : scratch.file(path))
        let sent = try FerryProcess.run([
            "send", "--image", image, "--to", "127.0.0.1:\(witness.port)", "--workload", "uniform:100MB/s", "-q",
            "--json", target,
        ])
        #expect(sent.status == 2, "\(sent.stderr)")
        #expect(sent.stderr.contains("--json \(target): ") && sent.stderr.contains(reason), "\(sent.stderr)")
        #expect(!witness.connected, "the destination was contacted")
        #expect(try Data(contentsOf: URL(fileURLWithPath: image)) == before, "the guest ran")
        // receive, run and demo check it the same way, before listening or touching anything.
        let others = [
            ["receive", "--listen", "127.0.0.1:\(witness.port)", "--image", scratch.file("in.img")],
            ["run", "--image", image, "--steps", "1,1"],
            ["demo", "--size", "1M", "--dir", scratch.file("demo")],
        ]
        for arguments in others {
            let outcome = try FerryProcess.run(arguments + ["--json", target])
            #expect(outcome.status == 2, "\(arguments[0]): \(outcome.stderr)")
            #expect(outcome.stderr.contains("--json"), "\(arguments[0]): \(outcome.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: scratch.file("in.img")))
        #expect(!FileManager.default.fileExists(atPath: scratch.file("demo")))
    }

    /// A directory this user may not write to (the check runs as user nobody: root may write anywhere).
    @Test(
        .enabled(
            if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv"),
            "needs root and setpriv to run ferry as nobody"))
    func pathWithoutPermissionIsRefused() throws {
        let scratch = Scratch("json-permission")
        let locked = scratch.file("locked")
        try FileManager.default.createDirectory(atPath: locked, withIntermediateDirectories: true)
        chmod(scratch.path, 0o755)
        chmod(locked, 0o755)  // owned by root: nobody may not create files in it
        let nobody = ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        let sent = try FerryProcess.run(
            ["send", "--image", scratch.file("vm.img"), "--to", "127.0.0.1:9", "--json", locked + "/send.json"],
            prefix: nobody)
        try #require(sent.status != 126 && sent.status != 127, "nobody cannot run ferry here: \(sent.stderr)")
        #expect(sent.status == 2, "\(sent.stderr)")
        #expect(
            sent.stderr.contains("--json \(locked)/send.json: cannot be opened for writing (Permission denied)"),
            "\(sent.stderr)")
    }

    /// `ferry receive --serve --json -`: one document on stdout when the agent ends, holding each
    /// migration's report, the failed one's too (its exit code in its error); the per-migration
    /// lines go to stderr.
    @Test func serveReportsEveryMigration() throws {
        let scratch = Scratch("json-serve")
        let guests = scratch.file("guests")
        try FileManager.default.createDirectory(atPath: guests, withIntermediateDirectories: true)
        let image = scratch.file("vm.img")
        #expect(try FerryProcess.run(["image", "create", image, "--size", "8M"]).status == 0)
        let server = try FerryProcess([
            "receive", "--listen", "127.0.0.1:0", "--serve", guests, "--sessions", "2", "--json", "-",
        ])
        let port = try Self.port(of: server)
        let good = try FerryProcess.run(["send", "--image", image, "--to", "127.0.0.1:\(port)", "--name", "a", "-q"])
        let stuck = try FerryProcess.run([
            "send", "--image", image, "--to", "127.0.0.1:\(port)", "--name", "b", "--workload", "uniform:80MB/s",
            "--downtime-ms", "0.001", "--max-rounds", "2", "--no-auto-converge", "-q",
        ])
        let served = server.wait()
        #expect(good.status == 0 && stuck.status == 4, "\(good.stderr) \(stuck.stderr)")
        #expect(served.status == 10, "the first failed migration's code: \(served.stderr)")
        #expect(served.stderr.contains("guest a: migrated into"), "\(served.stderr)")
        let document = try #require(
            try JSONSerialization.jsonObject(with: Data(served.stdout.utf8)) as? [String: Any], "\(served.stdout)")
        #expect(document["schema_version"] as? Int == 1 && document["role"] as? String == "server")
        #expect(document["outcome"] as? String == "aborted")
        #expect(Self.error(document)?.exit == 10, "\(document)")
        let migrations = try #require(document["migrations"] as? [[String: Any]])
        #expect(migrations.map { $0["outcome"] as? String } == ["succeeded", "aborted"])
        #expect(migrations.map { $0["guest"] as? String } == ["destination", "not-here"])
        #expect(Self.error(migrations[1])?.exit == 10, "\(migrations[1])")
        for migration in migrations {
            let text = String(decoding: try JSONSerialization.data(withJSONObject: migration), as: UTF8.self)
            _ = try Self.report(text, "serve migration")
        }
    }

    /// `ferry run` reports too: the steps it ran on success, the error on failure.
    @Test func runWritesAReport() throws {
        let scratch = Scratch("json-run")
        let image = scratch.file("vm.img")
        #expect(try FerryProcess.run(["image", "create", image, "--size", "1M"]).status == 0)
        let ran = try FerryProcess.run([
            "run", "--image", image, "--workload", "uniform:10MB/s", "--vcpus", "2", "--steps", "100,200", "--json",
            "-",
        ])
        #expect(ran.status == 0, "\(ran.stderr)")
        let json = try Self.report(ran.stdout, "run --json -")
        #expect(json["outcome"] as? String == "succeeded" && json["role"] as? String == "run")
        #expect(json["vcpu_steps"] as? [Int] == [100, 200])
        #expect(ran.stderr.contains("ran uniform:10MB/s on"), "the text goes to stderr: \(ran.stderr)")

        let missing = try FerryProcess.run([
            "run", "--image", scratch.file("none.img"), "--steps", "1,1", "--json", scratch.file("run.json"),
        ])
        #expect(missing.status != 0 && missing.status != 2, "\(missing.stderr)")
        let failed = try Self.report(try Self.file(scratch.file("run.json")), "run.json")
        #expect(failed["outcome"] as? String == "failed")
        #expect(Self.error(failed)?.exit == Int(missing.status), "\(failed)")
    }

    /// `ferry demo --json -` on a small image: the source's report on stdout.
    @Test func demoWritesTheSourceReport() throws {
        let scratch = Scratch("json-demo")
        let demo = try FerryProcess.run([
            "demo", "--size", "8M", "--workload", "uniform:20MB/s", "--run-before", "100ms", "--run-for", "100ms",
            "--dir", scratch.file("demo"), "-q", "--json", "-",
        ])
        #expect(demo.status == 0, "\(demo.stderr)")
        let json = try Self.report(demo.stdout, "demo --json -")
        #expect(json["outcome"] as? String == "succeeded" && json["guest"] as? String == "destination")
        #expect(demo.stderr.contains("transparency check: passed"), "\(demo.stderr)")
    }

    /// A migration that succeeded exits 0 even when its report cannot be written after all
    /// (/dev/full takes the open, not the bytes); stderr says so.
    @Test func unwritableReportAfterASuccessIsAWarning() throws {
        let scratch = Scratch("json-warning")
        let image = scratch.file("vm.img")
        #expect(try FerryProcess.run(["image", "create", image, "--size", "4M"]).status == 0)
        let receiver = try FerryProcess([
            "receive", "--listen", "127.0.0.1:0", "--image", scratch.file("in.img"),
            "--accept-timeout", "60s", "--json", "/dev/full",
        ])
        let port = try Self.port(of: receiver)
        let sent = try FerryProcess.run([
            "send", "--image", image, "--to", "127.0.0.1:\(port)", "-q", "--json", "/dev/full",
        ])
        let received = receiver.wait()
        for (side, outcome) in [("send", sent), ("receive", received)] {
            #expect(outcome.status == 0, "\(side): \(outcome.stderr)")
            #expect(
                outcome.stderr.contains("warning: the migration succeeded, but its JSON report could not be written"),
                "\(side): \(outcome.stderr)")
            #expect(outcome.stderr.contains("No space left on device"), "\(side): \(outcome.stderr)")
        }
        #expect(try filesEqual(image, scratch.file("in.img")))
    }
}

/// Issue 13: exit codes as `ferry --help` documents them, and `ferry --version`.
@Suite(.enabled(if: FerryProcess.built.met, FerryProcess.built.why)) struct ExitCodeTests {
    @Test func versionPrintsAndExitsZero() throws {
        let outcome = try FerryProcess.run(["--version"])
        #expect(outcome.status == 0, "\(outcome.stderr)")
        #expect(
            outcome.stdout.range(
                of: #"^ferry \d+\.\d+\.\d+ \(migration protocol \d+\)\n$"#, options: .regularExpression)
                != nil, "\(outcome.stdout)")
    }

    /// Every usage error exits 2: an unknown option, a value that does not parse, options that
    /// do not go together (a failed `validate()`), for every command.
    @Test(arguments: [
        ["image", "create", "/tmp/x.img", "--no-such-option"], ["image", "create"],
        ["image", "create", "/tmp/ferry-never.img", "--size", "1000"],
        ["image", "create", "/tmp/ferry-never.img", "--size", "1M", "--mix", "zero=200"],
        ["send", "--image", "x.img", "--to", "127.0.0.1:9", "--encrypt"],
        ["send", "--image", "x.img", "--to", "127.0.0.1:9", "--cipher", "rot13"],
        ["receive", "--image", "a.img", "--require-encryption"],
        ["announce", "--dev", "lo", "--guest-mac", "zz", "--guest-ip", "10.0.0.1"],
        ["send", "--no-such-option"], ["send", "--image", "x.img", "--to", "nohost"],
        ["send", "--image", "x.img", "--to", "127.0.0.1:9", "--guest-mac", "zz"],
        ["send", "--image", "x.img", "--to", "127.0.0.1:9", "--guest-ip", "1.2.3"],
        ["send", "--image", "x.img", "--to", "127.0.0.1:9", "--name", "../escape"],
        ["send", "--image", "x.img", "--to", "127.0.0.1:9", "--compress", "zip"],
        ["send", "--image", "x.img", "--to", "127.0.0.1:9", "--guest", "qemu"],
        ["receive", "--no-such-option"], ["receive"], ["receive", "--image", "a.img", "--serve", "/tmp"],
        ["receive", "--image", "a.img", "--listen", "nohost"], ["receive", "--serve", "/tmp", "--prealloc", "1M"],
        ["receive", "--image", "a.img", "--guest-mac", "zz"],
        ["run", "--no-such-option"], ["run", "--image", "x.img"],
        ["run", "--image", "x.img", "--steps", "1", "--vcpus", "0"],
        ["demo", "--no-such-option"], ["demo", "--guest", "qemu"], ["demo", "--size", "0"],
        ["status", "--no-such-option"], ["status", "--connect", "nohost"], ["status", "--session", "xyz"],
        ["status", "--guest", "../x"], ["status", "--session", "1", "--commit"],
        ["announce", "--no-such-option"], ["keygen", "--no-such-option"], ["no-such-command"],
    ])
    func usageErrorsExitTwo(_ arguments: [String]) throws {
        let outcome = try FerryProcess.run(arguments, timeout: 30)
        #expect(outcome.status == 2, "\(arguments): \(outcome.stderr)")
        #expect(outcome.signal == nil)
    }
}
