import FerryMigration
import FerryTestSupport
import FerryTransport
import Foundation
import Glibc
import Testing

@testable import ferry

/// Issue 11, finding 5: durations and numbers are checked when the command line is parsed. `inf`,
/// `1e30`, `nan` and negative values used to crash `ferry send` and `ferry receive` with SIGILL
/// ("Double value cannot be converted to Int"), some after the guest had started.
@Suite struct DurationOptionTests {
    @Test(arguments: [
        ("0", 0.0), ("10", 10), ("500ms", 0.5), ("1.5s", 1.5), ("2m", 120), ("1h", 3600), ("720h", 2_592_000),
    ])
    func durationsParse(_ text: String, _ seconds: Double) throws {
        let value = try DurationOption.parse(text)
        #expect(value.seconds == seconds)
        #expect(value.text == text)
    }

    @Test(arguments: [
        ("inf", "not a finite duration"), ("infs", "not a finite duration"), ("nan", "not a finite duration"),
        ("-inf", "not a finite duration"), ("1e30", "longer than 30 days"), ("1e30s", "longer than 30 days"),
        ("1e19", "longer than 30 days"), ("721h", "longer than 30 days"), ("-1", "cannot be negative"),
        ("-0.5s", "cannot be negative"), ("soon", "not a duration"), ("", "not a duration"), ("5 s", "not a duration"),
    ])
    func badDurationsAreRefusedWithTheAcceptedRange(_ text: String, _ reason: String) {
        let error = #expect(throws: OptionValueError.self) { try DurationOption.parse(text) }
        #expect(error?.description.contains(reason) == true, "\(text): \(error?.description ?? "")")
        #expect(error?.description.contains("give 0 to 30 days") == true, "\(text): \(error?.description ?? "")")
    }

    @Test func aTighterBoundIsStated() {
        let error = #expect(throws: OptionValueError.self) { try DurationOption.parse("2h", upTo: 3600) }
        #expect(error?.description.contains("longer than 1 h; give 0 to 1 h") == true, "\(error?.description ?? "")")
        #expect(DurationOption(seconds: DurationOption.maximumSeconds).milliseconds == 2_592_000_000)
    }

    @Test func numbersAndCountsAreBounded() throws {
        let downtime = NumberOption.real(0...3_600_000, unit: "ms")
        #expect(try downtime("0.001") == 0.001)
        for bad in ["nan", "inf", "-1", "3600001", "1e300", "fast"] {
            #expect(throws: OptionValueError.self, "\(bad)") { try downtime(bad) }
        }
        let vcpus = NumberOption.count(1...64)
        #expect(try vcpus("64") == 64)
        for bad in ["0", "65", "-3", "2.5", "99999999999999999999"] {
            #expect(throws: OptionValueError.self, "\(bad)") { try vcpus(bad) }
        }
        let batch = SizeOption.within(64 << 10, 16 << 20, "64KiB to 16MiB")
        #expect(try batch("2MiB").bytes == 2 << 20)
        #expect(throws: OptionValueError.self) { try batch("1KiB") }
        #expect(throws: OptionValueError.self) { try batch("99999999999999999999T") }
        #expect(try RateOption.bandwidth("1GB/s").bytesPerSecond(pageSize: 4096) == 1e9)
        #expect(throws: OptionValueError.self) { try RateOption.bandwidth("1000pages/s") }
        #expect(throws: OptionValueError.self) { try RateOption.bandwidth("9999999999999999GB/s") }  // > 1 PB/s
    }

    /// A NaN or infinity in a report is written as null instead of failing the JSON (the migration
    /// succeeded; its report must not turn that into exit 1).
    @Test func nonFiniteReportNumbersAreWrittenAsNull() throws {
        var report = MigrationReport(
            role: "source", image: "x.img", imageBytes: 4096, pageSize: 4096, vcpus: 1, workload: "idle")
        report.downtimeTargetMs = .nan
        report.predictedDowntimeMs = .infinity
        report.downtimeMs = 1.5
        // The marker inside a string stays a string.
        report.error = ReportedError(message: "not ferry:non-finite-number", code: "internal")
        let json = try #require(try JSONSerialization.jsonObject(with: report.json()) as? [String: Any])
        #expect(json["downtime_target_ms"] is NSNull)
        #expect(json["predicted_downtime_ms"] is NSNull)
        #expect(json["downtime_ms"] as? Double == 1.5)
        #expect((json["error"] as? [String: Any])?["message"] as? String == "not ferry:non-finite-number")
    }
}

/// The same values on the command line: a usage error (exit 2) naming the option, the value and
/// the accepted range, before anything else happens.
@Suite(.serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why)) struct OptionValueCommandLineTests {
    /// A listening socket that counts the connections made to it (none may be).
    final class Witness {
        let listener: TCPListener
        init() throws { listener = try TCPListener(Endpoint(host: "127.0.0.1", port: 0)) }
        var port: UInt16 { listener.port }
        var connected: Bool { (try? listener.accept(timeoutMs: 0)) != nil }
    }

    /// `ferry send` with each value that crashed it: exit 2, the option and value named, no
    /// connection to the destination, and the image untouched although the workload writes to
    /// it as soon as the guest starts.
    @Test(arguments: [
        ["--handoff-timeout", "inf"], ["--handoff-timeout", "1e30"], ["--stall-timeout", "infs"],
        ["--run-before", "1e30s"],
        ["--timeout", "nan"], ["--downtime-ms", "nan", "--json", "/dev/null"], ["--downtime-ms=-1"], ["--timeout=-5s"],
        ["--max-bandwidth", "99999999999999999GB/s"], ["--max-rounds", "0"], ["--streams", "17"], ["--vcpus", "65"],
        ["--batch-bytes", "1KiB"], ["--reconnect-attempts", "0"],
    ])
    func sendRefusesBadValuesBeforeTheGuestStarts(_ bad: [String]) throws {
        let scratch = Scratch("bad-send-\(bad[0].dropFirst(2).prefix { $0 != "=" })")
        let image = scratch.file("vm.img")
        #expect(try FerryProcess.run(["image", "create", image, "--size", "64K"]).status == 0)
        let before = try Data(contentsOf: URL(fileURLWithPath: image))
        let witness = try Witness()
        let outcome = try FerryProcess.run(
            [
                "send", "--image", image, "--to", "127.0.0.1:\(witness.port)",
                "--workload", "uniform:100MB/s", "-q",
            ] + bad, timeout: 30)
        #expect(outcome.signal == nil, "killed by signal \(outcome.signal ?? 0): \(outcome.stderr)")
        #expect(outcome.status == 2, "\(bad): \(outcome.stderr)")
        let option = String(bad[0].prefix { $0 != "=" })
        let value = bad[0].contains("=") ? String(bad[0].drop { $0 != "=" }.dropFirst()) : bad[1]
        #expect(
            outcome.stderr.contains("The value '\(value)' is invalid for '\(option) <"), "\(bad): \(outcome.stderr)")
        #expect(
            outcome.stderr.contains("give ") || outcome.stderr.contains("more than 10^15 bytes/s"),
            "the accepted range: \(outcome.stderr)")
        #expect(!witness.connected, "\(bad): the source connected before its options were checked")
        #expect(
            try Data(contentsOf: URL(fileURLWithPath: image)) == before, "\(bad): the guest ran and wrote to the image")
    }

    /// `ferry receive` likewise: exit 2 before it listens or creates anything.
    @Test(arguments: [
        ["--accept-timeout", "inf"], ["--handoff-timeout", "1e19"], ["--resume-timeout=-1s"], ["--run-for", "nan"],
        ["--max-sessions", "0"], ["--prealloc", "0"],
    ])
    func receiveRefusesBadValuesBeforeListening(_ bad: [String]) throws {
        let scratch = Scratch("bad-receive-\(bad[0].dropFirst(2).prefix { $0 != "=" })")
        let outcome = try FerryProcess.run(
            ["receive", "--listen", "127.0.0.1:0", "--image", scratch.file("in.img")] + bad, timeout: 30)
        #expect(outcome.signal == nil, "killed by signal \(outcome.signal ?? 0): \(outcome.stderr)")
        #expect(outcome.status == 2, "\(bad): \(outcome.stderr)")
        let option = String(bad[0].prefix { $0 != "=" })
        #expect(outcome.stderr.contains("is invalid for '\(option) <"), "\(bad): \(outcome.stderr)")
        #expect(!outcome.stderr.contains("listening on"), "\(outcome.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path).isEmpty)
    }

    /// Other usage errors exit 2 too (ArgumentParser's default is 64), and help is not an error.
    @Test func usageErrorsExitTwo() throws {
        #expect(try FerryProcess.run(["send", "--no-such-option"]).status == 2)
        // validate(): neither --steps nor --duration
        #expect(try FerryProcess.run(["run", "--image", "/nonexistent"]).status == 2)
        #expect(try FerryProcess.run(["send", "--help"]).status == 0)
    }
}

/// Issue 11: without a key, `ferry receive` on an address other hosts can reach says that anyone
/// who reaches it can send or take a guest; on loopback, or with a key, it does not.
@Suite(.serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why)) struct KeylessWarningTests {
    func stderrOfReceive(listen: String, key: String? = nil) throws -> String {
        let scratch = Scratch("keyless-\(listen.filter(\.isNumber))-\(key == nil)")
        let receiver = try FerryProcess(
            ["receive", "--listen", listen, "--image", scratch.file("in.img")]
                + (key.map { ["--key-file", $0] } ?? []))
        // "ferry: listening on", not the warning's "listening on 0.0.0.0 without --key-file", printed first.
        _ = receiver.waitForStderrLine(containing: "ferry: listening on")
        kill(receiver.process.processIdentifier, SIGKILL)
        return receiver.wait(timeout: 10).stderr
    }

    @Test func warnsOnlyWithoutAKeyOnAReachableAddress() throws {
        let open = try stderrOfReceive(listen: "0.0.0.0:0")
        #expect(open.contains("listening on 0.0.0.0:"), "\(open)")
        #expect(
            open.contains(
                "warning: listening on 0.0.0.0 without --key-file: anyone who can reach this port can send this agent a guest"
            ), "\(open)")
        #expect(open.contains("--key-file") && open.contains("QEMU"), "\(open)")

        let loopback = try stderrOfReceive(listen: "127.0.0.1:0")
        #expect(loopback.contains("listening on 127.0.0.1:"), "\(loopback)")
        #expect(!loopback.contains("without --key-file"), "\(loopback)")

        let scratch = Scratch("keyless-key")
        #expect(try FerryProcess.run(["keygen", "--out", scratch.file("k")]).status == 0)
        let keyed = try stderrOfReceive(listen: "0.0.0.0:0", key: scratch.file("k"))
        #expect(keyed.contains("listening on 0.0.0.0:"), "\(keyed)")
        #expect(!keyed.contains("without --key-file"), "\(keyed)")
    }
}
