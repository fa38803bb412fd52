import FerryAgent
import FerryTestSupport
import Foundation
import Glibc
import Testing

/// Pre-failure (issue 18, part 4) with a real `ferry control` and two real `ferry agent`s, the
/// first reading a health directory the test writes: an uncorrected memory error written there
/// makes the host `failing` in the controller within 2 s (measured, printed), and `ferry host
/// show` on the agent says so; the quarantined
/// host takes no guest (the next goes to the other host, the one after is refused naming the
/// quarantine); the controller logs the quarantine once however many heartbeats follow; healthy
/// counters release the host, and a SMART attribute at its threshold quarantines it again. On
/// SQLite, and on PostgreSQL when the run has a server.
@Suite(.serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct ControlPlaneHealthTests {
    @Test func anInjectedSignalQuarantinesTheHostWithinTwoSeconds() throws {
        try Self.quarantine(database: nil)
    }

    @Test(
        .enabled(
            if: ProcessInfo.processInfo.environment["FERRY_TEST_POSTGRES"] != nil,
            "FERRY_TEST_POSTGRES is not set: run the tests as `Tools/postgres-test-server run swift test`"))
    func anInjectedSignalQuarantinesTheHostOnPostgreSQL() throws {
        try Self.quarantine(database: try ControlPlanePostgresTests.createDatabase())
    }

    static func quarantine(database: String?) throws {
        let health = Scratch("hq-health")
        let files = HealthFiles(health.path)
        try files.memoryController(0, corrected: 0, uncorrected: 0)
        // Room for one tiny guest per host (1 vCPU each).
        let cloud = try ControlPlaneFixture(
            "hq", agents: 2, database: database, offerVCPUs: 1, agentOptions: [1: ["--health-dir", health.path]])
        let controller = try #require(cloud.controller)
        #expect(try host(cloud, "h1")["health"] as? String == "healthy")

        let injected = Date()
        try files.memoryController(0, corrected: 0, uncorrected: 1)
        let failing = try waitForHost(cloud, "h1") { $0["health"] as? String == "failing" }
        let elapsed = Date().timeIntervalSince(injected)
        print("pre-failure: ue_count 0 → 1 written to h1 failing in the controller in \(Int(elapsed * 1000)) ms")
        #expect(failing["health"] as? String == "failing", "\(failing)")
        #expect(elapsed <= 2, "the quarantine took \(elapsed) s")
        #expect(failing["health_reason"] as? String == "memory controller mc0: 1 uncorrected error")
        #expect(failing["takes_guests"] as? Bool == false)
        let evacuateBy = try #require((failing["evacuate_by"] as? String).flatMap(RFC3339Parse.date))
        let quarantinedAt = try #require((failing["quarantined_at"] as? String).flatMap(RFC3339Parse.date))
        #expect(evacuateBy.timeIntervalSince(injected) > 800 && evacuateBy.timeIntervalSince(injected) <= 901)
        #expect(abs(quarantinedAt.timeIntervalSince(injected)) < 5)
        let onHost = try cloud.agents[0].client().get("/v1/host", as: HostReport.self).health.signals
        #expect(onHost?.state == "failing" && onHost?.reason == "memory controller mc0: 1 uncorrected error")
        let agent = cloud.agents[0]
        let shown = try FerryProcess.run(["host", "show", "--agent", agent.url, "--key-file", agent.keyFile])
        #expect(
            shown.stdout.contains("hardware: failing: memory controller mc0: 1 uncorrected error; empty within"),
            "\(shown.stdout)")

        // The next guest goes to h2; the one after finds h2 full and h1 quarantined.
        let (status, created) = try cloud.json(
            "POST", "/v1/projects/alpha/guests", ["name": "g1", "flavor": "tiny", "image": "builtin"])
        #expect(status == 202, "\(created)")
        let id = try #require(created["id"] as? String)
        #expect(try cloud.waitForGuest(id) { $0 == "running" || $0 == "error" }["host"] as? String == "h2")
        let (refusedStatus, refused) = try cloud.json(
            "POST", "/v1/projects/alpha/guests", ["name": "g2", "flavor": "tiny", "image": "builtin"])
        let message = (refused["error"] as? [String: Any])?["message"] as? String ?? "\(refused)"
        #expect(refusedStatus == 409 && message.contains("1 is quarantined (failing hardware)"), "\(message)")

        // Three more heartbeats of a failing host: the quarantine was logged (its hook called) once.
        _ = try waitForHost(cloud, "h1") {
            ($0["last_heartbeat"] as? String).flatMap(RFC3339Parse.date).map { $0 > quarantinedAt + 3 } ?? false
        }
        let logged = controller.stderrLines(containing: "host quarantined")
        #expect(logged.count == 1, "\(logged)")
        #expect(logged.first?.contains("memory controller mc0: 1 uncorrected error") == true)

        // The counters reset (the DIMM swapped): released; then a disk at its threshold: again.
        try files.memoryController(0, corrected: 0, uncorrected: 0)
        let released = try waitForHost(cloud, "h1") { $0["health"] as? String == "healthy" }
        #expect(released["health"] as? String == "healthy" && released["evacuate_by"] == nil, "\(released)")
        #expect(controller.waitForStderrLine(containing: "host leaves quarantine", timeout: 10) != nil)
        try files.smart("sda", [.init(5, "Reallocated_Sector_Ct", value: 30, threshold: 36, raw: 900)])
        let again = try waitForHost(cloud, "h1") { $0["health"] as? String == "failing" }
        #expect((again["health_reason"] as? String)?.hasPrefix("disk sda: SMART 5 Reallocated_Sector_Ct at 30") == true)
        #expect(controller.stderrLines(containing: "host quarantined").count == 2)
    }

    /// Host `id` as `GET /v1/hosts` shows it.
    static func host(_ cloud: ControlPlaneFixture, _ id: String) throws -> [String: Any] {
        let hosts = try cloud.json("GET", "/v1/hosts").1["hosts"] as? [[String: Any]] ?? []
        return hosts.first { $0["id"] as? String == id } ?? [:]
    }

    /// Polls host `id` until `done` holds (at most `timeout` s); its last view.
    static func waitForHost(
        _ cloud: ControlPlaneFixture, _ id: String, timeout: Double = 30, until done: ([String: Any]) -> Bool
    ) throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(timeout)
        var last: [String: Any] = [:]
        while Date() < deadline {
            last = try host(cloud, id)
            if done(last) { return last }
            usleep(20_000)
        }
        return last
    }
}

/// The controller's RFC 3339 times (`2026-12-07T06:00:00.123Z`).
enum RFC3339Parse {
    static func date(_ text: String) -> Date? {
        try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse(text)
    }
}
