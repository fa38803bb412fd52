import FerryAgent
import FerryTestSupport
import Foundation
import Testing

/// `ferry agent`'s health thresholds as options (`--health-ce-failing`, `--health-ce-warning`,
/// `--health-smart-failing-raw`, …) on a real agent reading a health directory the test writes:
/// the thresholds given change the verdict `GET /v1/host` reports; a file that cannot be parsed
/// makes a warning naming it, and the agent keeps answering; `--help` lists the options with
/// today's defaults, and a warning level above the failing limit is refused.
@Suite(.serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct AgentHealthThresholdTests {
    static func signals(_ agent: GuestAgentFixture) throws -> HostReport.Signals {
        try #require(try agent.client().get("/v1/host", as: HostReport.self).health.signals)
    }

    @Test func thresholdsFromOptionsDecideAndABadFileWarnsNamingIt() throws {
        let health = Scratch("aht-health")
        let files = HealthFiles(health.path)
        // 2 corrected errors from the start (the baseline: no rate): a warning at the level given
        // (healthy by default).
        try files.memoryController(0, corrected: 2, uncorrected: 0)
        let agent = try GuestAgentFixture(
            "aht",
            extra: [
                "--health-dir", health.path, "--health-ce-failing", "5", "--health-ce-warning", "2",
                "--health-smart-failing-raw", "8", "--health-deadline", "120",
            ])
        let warning = try Self.signals(agent)
        #expect(warning.state == "warning", "\(warning)")
        #expect(warning.reason == "memory controller mc0: 2 corrected errors, at or over the warning level 2")
        // 5: failing at the limit given (the default limit is 1000), within the deadline given.
        try files.memoryController(0, corrected: 5, uncorrected: 0)
        let failing = try Self.signals(agent)
        #expect(failing.state == "failing", "\(failing)")
        #expect(failing.reason == "memory controller mc0: 5 corrected errors, at or over the limit 5")
        #expect((failing.evacuateWithinSeconds ?? 0) <= 120 && (failing.evacuateWithinSeconds ?? 0) > 100)

        // A reallocated-sector count of 8 on a disk: failing at the raw count given (a warning by
        // default).
        try files.memoryController(0, corrected: 0, uncorrected: 0)
        try files.smart("sda", [.init(5, "Reallocated_Sector_Ct", value: 100, threshold: 10, raw: 8)])
        let disk = try Self.signals(agent)
        #expect(disk.state == "failing", "\(disk)")
        #expect(disk.reason == "disk sda: SMART 5 Reallocated_Sector_Ct counts 8, at or over 8", "\(disk.reason)")

        // A file that cannot be parsed (never read well): a warning naming it; the agent answers on.
        try files.write("smart/sda.json", "")
        try files.write("smart/sdb.json", "{ not json")
        let bad = try Self.signals(agent)
        #expect(bad.state == "failing", "sda's last good reading stands in for it: \(bad)")
        try FileManager.default.removeItem(atPath: "\(health.path)/smart/sda.json")
        let unreadable = try Self.signals(agent)
        #expect(unreadable.state == "warning", "\(unreadable)")
        #expect(unreadable.reason.hasPrefix("unreadable: smart/sdb.json: "), "\(unreadable.reason)")
        #expect(unreadable.detail == [unreadable.reason], "\(unreadable.detail)")
        let alive = try agent.client().send("GET", "/healthz")
        #expect(alive.status == 200)
        try FileManager.default.removeItem(atPath: "\(health.path)/smart/sdb.json")
        #expect(try Self.signals(agent).state == "healthy")
    }

    @Test func theHelpListsTheThresholdsAndNonsenseIsRefused() throws {
        let help = try FerryProcess.run(["agent", "--help"])
        for option in [
            "--health-ce-failing <count>", "--health-ce-warning <count>", "--health-ce-horizon <seconds>",
            "--health-smart-failing-raw <count>", "--health-deadline <seconds>",
            "--health-critical-deadline <seconds>", "--health-event-max-age <seconds>",
        ] {
            #expect(help.stdout.contains(option), "\(option) missing from --help")
        }
        #expect(help.stdout.contains("(default: 1000)") && help.stdout.contains("(default: 900.0)"), "\(help.stdout)")
        let refused = try FerryProcess.run([
            "agent", "--state-dir", "/nonexistent", "--key-file", "/nonexistent", "--health-ce-failing", "5",
            "--health-ce-warning", "9",
        ])
        #expect(refused.status == 2, "\(refused.status) \(refused.stderr)")
        #expect(
            refused.stderr.contains("--health-ce-warning 9: at least 1, below --health-ce-failing 5"),
            "\(refused.stderr)")
    }
}
