import FerryAgent
import FerryTestSupport
import Foundation
import Glibc
import Testing

/// `POST /v1/guests/{id}/migrate` on a real `ferry control` and two agents, each in a network
/// namespace of its own (as on three hosts), with KVM guests: the guest moves live and keeps
/// running (no boot on the destination, its steps continue, billed without a break); a dead
/// destination leaves it where it was with the reason; a controller killed during a move settles
/// it when it starts again. At the end the guest is on exactly one host, the one the controller
/// records.
@Suite(
    .serialized, .tags(.namespaces, .kvm), .skippable(.namespaces), .skippable(.kvm),
    .enabled(if: FerryProcess.built.met, FerryProcess.built.why),
    .enabled(if: Requirement.namespaces.met, Requirement.namespaces.why),
    .enabled(if: Requirement.kvm.met, Requirement.kvm.why))
struct ControlPlaneMoveTests {
    /// The cloud: agents' incoming migrations listen on their own host's address (10.93.0.N+1).
    static func cloud(_ name: String, heartbeatTimeout: Double = 1.5, controllerExtra: [String] = []) throws
        -> ControlPlaneFixture
    {
        try ControlPlaneFixture(
            name, agents: 2, heartbeatTimeout: heartbeatTimeout, namespaced: true, controllerExtra: controllerExtra,
            agentOptions: [1: ["--migration-listen", "10.93.0.2:0"], 2: ["--migration-listen", "10.93.0.3:0"]])
    }

    /// A KVM guest created through the controller, running: its ID and host.
    static func runningKVMGuest(_ cloud: ControlPlaneFixture, _ name: String) throws -> (String, String) {
        let body: [String: Any] = ["name": name, "flavor": "tiny", "image": "kvm"]
        let (status, created) = try cloud.json("POST", "/v1/projects/alpha/guests", body)
        try #require(status == 202, "\(created)")
        let id = try #require(created["id"] as? String)
        let running = try cloud.waitForGuest(id) { ["running", "error"].contains($0) }
        try #require(running["state"] as? String == "running", "\(running)")
        return (id, try #require(running["host"] as? String))
    }

    /// `body` with a client of host `host`'s agent, run inside that host's namespace.
    static func onHost<T: Sendable>(
        _ cloud: ControlPlaneFixture, _ host: String, _ body: @escaping @Sendable (AgentClient) throws -> T
    ) throws -> T {
        let index = try #require(Int(host.dropFirst()))
        let client = try cloud.agents[index - 1].client()
        return try NetworkNamespaces.run(in: try #require(cloud.namespace(index))) { try body(client) }
    }

    static func view(_ cloud: ControlPlaneFixture, _ host: String, _ id: String) throws -> GuestView {
        try onHost(cloud, host) { try $0.get("/v1/guests/c-\(id)", as: GuestView.self) }
    }

    /// The guest's own console lines on `host`.
    static func guestLines(_ cloud: ControlPlaneFixture, _ host: String, _ id: String) throws -> [String] {
        try onHost(cloud, host) { client in
            try client.get("/v1/guests/c-\(id)/console?since=0", as: ConsolePage.self).lines.filter { $0.vcpu != nil }
                .map(\.text)
        }
    }

    /// The agents that list the guest.
    static func holders(_ cloud: ControlPlaneFixture, _ id: String) throws -> Int {
        try cloud.guestsOnHosts().filter { $0 == "c-\(id)" }.count
    }

    @Test func aKVMGuestMovesLiveThroughTheAPIAndKeepsRunning() throws {
        let cloud = try Self.cloud("cpm1")
        let (id, source) = try Self.runningKVMGuest(cloud, "vm")
        let destination = source == "h1" ? "h2" : "h1"
        usleep(500_000)
        let before = try #require(try Self.view(cloud, source, id).usage?.totalSteps)
        #expect(try Self.guestLines(cloud, source, id).first?.hasPrefix("disk: new journal") == true)

        let (status, moved) = try cloud.json("POST", "/v1/guests/\(id)/migrate?wait=true", ["host": destination])
        try #require(status == 200, "\(moved)")
        #expect(moved["host"] as? String == destination && moved["moving_to"] == nil, "\(moved)")
        let now = try cloud.json("GET", "/v1/guests/\(id)").1
        #expect(now["state"] as? String == "running" && now["host"] as? String == destination, "\(now)")
        #expect(try cloud.guestsOnHosts() == ["c-\(id)"], "one host holds the guest")

        // It kept running: the destination runs it with more steps, and printed no boot.
        let there = try Self.view(cloud, destination, id)
        #expect(there.state == "running" && there.id == id)
        usleep(300_000)
        let after = try #require(try Self.view(cloud, destination, id).usage?.totalSteps)
        #expect(after > before, "steps \(after) on the destination, \(before) before the move")
        let lines = try Self.guestLines(cloud, destination, id)
        #expect(!lines.contains { $0.hasPrefix("disk: ") }, "the guest booted again: \(lines.prefix(3))")

        // Journaled, and billed without a break: every millisecond since it first ran.
        let journal = try ControlPlaneKVMTests.journal(cloud, id)
        let causes = journal.compactMap { $0["cause"] as? String }
        #expect(causes.contains { $0.hasPrefix("moving to \(destination) from \(source)") }, "\(causes)")
        #expect(causes.last?.hasPrefix("moved from \(source) to \(destination)") == true, "\(causes)")
        #expect(journal.compactMap { $0["to"] as? String } == ["pending", "building", "running", "running", "running"])
        let firstRunning = try #require(journal.first { $0["to"] as? String == "running" }?["time"] as? String)
        let start = try #require(ControlPlaneKVMTests.date(firstRunning))
        let end = Date().addingTimeInterval(-0.2)
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let target = "/v1/projects/alpha/invoice?from=2000-01-01T00:00:00Z&to=\(formatter.string(from: end))"
        let invoice = try cloud.json("GET", target).1
        let line = try #require((invoice["lines"] as? [[String: Any]])?.first, "\(invoice)")
        let billed = try #require((line["billed_milliseconds"] as? NSNumber)?.int64Value, "\(line)")
        let expected =
            Int64((end.timeIntervalSince1970 * 1000).rounded())
            - Int64(
                (start.timeIntervalSince1970 * 1000).rounded())
        #expect(abs(billed - expected) <= 1, "billed \(billed) ms, ran \(expected) ms")

        // Moved back to the host the scheduler picks, without waiting.
        let (backStatus, back) = try cloud.json("POST", "/v1/guests/\(id)/migrate")
        #expect(backStatus == 202 && back["moving_to"] as? String == source, "\(back)")
        let settled = try Self.waitUntilSettled(cloud, id)
        #expect(settled["host"] as? String == source && settled["state"] as? String == "running", "\(settled)")
        #expect(try cloud.guestsOnHosts() == ["c-\(id)"])
        try Self.moveThroughTheCLI(cloud, id, source: source, destination: destination)
    }

    /// `ferry cloud guest migrate` as a site admin, from the controller's network: with --wait it
    /// prints the guest on its new host; without, the guest moving.
    static func moveThroughTheCLI(_ cloud: ControlPlaneFixture, _ id: String, source: String, destination: String)
        throws
    {
        let run = try siteAdminCLI(cloud)
        let waited = try run(["guest", "migrate", id, "--host", destination, "--wait"])
        #expect(waited.status == 0, "\(waited.stderr)")
        #expect(waited.stdout.contains("running  tiny  kvm  \(destination)"), "\(waited.stdout)")
        #expect(!waited.stdout.contains("moving to"), "\(waited.stdout)")
        #expect(waited.stdout.contains("moved from host \(source) to host \(destination) after"), "\(waited.stdout)")
        #expect(waited.stderr.contains("moving to \(destination)"), "the progress: \(waited.stderr)")
        let started = try run(["guest", "migrate", id])
        #expect(started.status == 0 && started.stdout.contains("(moving to \(source))"), "\(started.stdout)")
        let settled = try waitUntilSettled(cloud, id)
        #expect(settled["host"] as? String == source, "\(settled)")
        #expect(try cloud.guestsOnHosts() == ["c-\(id)"])
    }

    /// `ferry cloud` logged in as a site admin (user ops), run from the controller's network.
    static func siteAdminCLI(_ cloud: ControlPlaneFixture) throws -> ([String]) throws -> FerryProcess.Outcome {
        let password = "correct horse battery staple"
        let user: [String: Any] = ["name": "ops", "password": password, "site_admin": true]
        #expect(try cloud.json("POST", "/v1/users", user).0 == 201)
        let passwordFile = cloud.scratch.file("password")
        try (password + "\n").write(toFile: passwordFile, atomically: true, encoding: .utf8)
        let config = cloud.scratch.file("home/cloud.json")
        let run = { (arguments: [String]) throws -> FerryProcess.Outcome in
            try FerryProcess.run(
                ["cloud"] + arguments + ["--config", config], prefix: cloud.namespacePrefix(0), timeout: 120)
        }
        let login = try run(["login", cloud.url, "--user", "ops", "--password-file", passwordFile])
        try #require(login.status == 0, "\(login.stderr)")
        return run
    }

    /// The destination's agent is dead (killed with -9, not yet silent past the timeout): the
    /// move is refused by the source, the guest stays where it runs and is recorded there.
    @Test func aDeadDestinationLeavesTheGuestOnItsSource() throws {
        let cloud = try Self.cloud("cpm2", heartbeatTimeout: 30)
        let (id, source) = try Self.runningKVMGuest(cloud, "vm")
        let destination = source == "h1" ? "h2" : "h1"
        cloud.agents[Int(destination.dropFirst())! - 1].kill9()
        let (status, answer) = try cloud.json("POST", "/v1/guests/\(id)/migrate?wait=true", ["host": destination])
        #expect(status == 503, "\(answer)")
        let message = (answer["error"] as? [String: Any])?["message"] as? String ?? ""
        #expect(message.contains("stays on host \(source)"), "\(message)")
        let now = try cloud.json("GET", "/v1/guests/\(id)").1
        #expect(now["host"] as? String == source && now["moving_to"] == nil, "\(now)")
        #expect(now["state"] as? String == "running", "\(now)")
        #expect(try Self.view(cloud, source, id).state == "running")
        let causes = try ControlPlaneKVMTests.journal(cloud, id).compactMap { $0["cause"] as? String }
        #expect(causes.last?.contains("the move to \(destination) was abandoned") == true, "\(causes)")
        // A second move to a live host still works: nothing was left half-done.
        let hosts = try cloud.json("GET", "/v1/hosts").1["hosts"] as? [[String: Any]] ?? []
        #expect(hosts.count == 2, "\(hosts)")
        // `ferry cloud guest migrate --wait` follows the move and fails with the reason it stayed.
        let failed = try Self.siteAdminCLI(cloud)(["guest", "migrate", id, "--host", destination, "--wait"])
        #expect(failed.status == 1, "\(failed.stdout) \(failed.stderr)")
        #expect(
            failed.stderr.contains("stays on host \(source), its move to host \(destination) failed")
                && failed.stderr.contains("abandoned"), "\(failed.stderr)")
        #expect(failed.stderr.contains("moving to \(destination)"), "the progress: \(failed.stderr)")
        #expect(try cloud.json("GET", "/v1/guests/\(id)").1["host"] as? String == source)
    }

    /// A migration that outlives `--move-timeout` is cancelled: the guest stays on its source,
    /// recorded there, and the answer says why.
    @Test func aMoveOutlivingItsTimeoutIsCancelledAndTheGuestStays() throws {
        let cloud = try Self.cloud("cpm5", controllerExtra: ["--move-timeout", "1"])
        let (id, source) = try Self.runningKVMGuest(cloud, "vm")
        let body: [String: Any] = ["max_bandwidth_bytes_per_s": 100_000]
        let began = Date()
        let (status, answer) = try cloud.json("POST", "/v1/guests/\(id)/migrate?wait=true", body)
        let took = Date().timeIntervalSince(began)
        #expect(status == 503, "\(answer)")
        let message = (answer["error"] as? [String: Any])?["message"] as? String ?? ""
        #expect(message.contains("stays on host \(source)") && message.contains("cancelled"), "\(message)")
        #expect(took < 10, "answered \(took) s after the request")
        let now = try cloud.json("GET", "/v1/guests/\(id)").1
        #expect(now["host"] as? String == source && now["moving_to"] == nil, "\(now)")
        #expect(try Self.view(cloud, source, id).state == "running")
        #expect(try cloud.guestsOnHosts() == ["c-\(id)"])
    }

    /// The destination's agent killed with -9 while the migration runs (its vmm lives on), then
    /// started again: however the migration ended, the controller records the guest on the one
    /// host whose agent holds it, and nothing is left moving.
    @Test func aDestinationKilledMidMoveLeavesTheGuestOnOneHost() throws {
        let cloud = try Self.cloud("cpm4", heartbeatTimeout: 30)
        let (id, source) = try Self.runningKVMGuest(cloud, "vm")
        let destination = source == "h1" ? "h2" : "h1"
        let victim = cloud.agents[Int(destination.dropFirst())! - 1]
        let body: [String: Any] = ["host": destination, "max_bandwidth_bytes_per_s": 100_000]
        let (status, moving) = try cloud.json("POST", "/v1/guests/\(id)/migrate", body)
        try #require(status == 202, "\(moving)")
        var during = try Self.view(cloud, source, id).state
        let deadline = Date().addingTimeInterval(10)
        while during != "migrating-out", Date() < deadline {
            usleep(20_000)
            during = try Self.view(cloud, source, id).state
        }
        victim.kill9()
        #expect(during == "migrating-out", "the source's agent says \(during)")
        let settled = try Self.waitUntilSettled(cloud, id, timeout: 90)
        try victim.start()
        let host = try #require(settled["host"] as? String)
        #expect(settled["moving_to"] == nil && settled["state"] as? String == "running", "\(settled)")
        var holders = try Self.holders(cloud, id)
        for _ in 0..<100 where holders != 1 {
            usleep(100_000)
            holders = try Self.holders(cloud, id)
        }
        let listed = try cloud.guestsOnHosts()
        #expect(holders == 1, "agents listing the guest: \(listed)")
        let onHost = try Self.view(cloud, host, id)
        #expect(["running", "paused"].contains(onHost.state), "the recorded host's agent says \(onHost.state)")
        let causes = try ControlPlaneKVMTests.journal(cloud, id).compactMap { $0["cause"] as? String }
        print(
            "ControlPlaneMoveTests: the destination's agent killed mid-move; the guest ended on \(host): \(causes.last ?? "")"
        )
    }

    /// The controller killed with -9 while a (throttled) migration runs: the agents finish it
    /// alone, and the controller started again settles the move from their inventories.
    @Test func aControllerKilledDuringAMoveSettlesItAtItsNextStart() throws {
        let cloud = try Self.cloud("cpm3")
        let (id, source) = try Self.runningKVMGuest(cloud, "vm")
        let destination = source == "h1" ? "h2" : "h1"
        let body: [String: Any] = ["host": destination, "max_bandwidth_bytes_per_s": 100_000]
        let (status, moving) = try cloud.json("POST", "/v1/guests/\(id)/migrate", body)
        try #require(status == 202 && moving["moving_to"] as? String == destination, "\(moving)")
        // Killed while the source's agent migrates it.
        var during = try Self.view(cloud, source, id).state
        let deadline = Date().addingTimeInterval(10)
        while during != "migrating-out", Date() < deadline {
            usleep(20_000)
            during = try Self.view(cloud, source, id).state
        }
        cloud.killController()
        #expect(during == "migrating-out", "the source's agent says \(during)")
        let killedAt = Date()
        try cloud.startController()
        let settled = try Self.waitUntilSettled(cloud, id, timeout: 90)
        #expect(settled["moving_to"] == nil, "\(settled)")
        let host = try #require(settled["host"] as? String)
        #expect(settled["state"] as? String == "running", "\(settled)")
        #expect(try cloud.guestsOnHosts() == ["c-\(id)"], "one host holds it")
        #expect(try Self.view(cloud, host, id).state == "running", "the controller records it where it runs")
        let causes = try ControlPlaneKVMTests.journal(cloud, id).compactMap { $0["cause"] as? String }
        #expect(causes.last?.hasPrefix(host == destination ? "moved from" : "stays on") == true, "\(causes)")
        print(
            "ControlPlaneMoveTests: the controller killed while the source was \(during); the move settled on \(host)"
                + " \(String(format: "%.1f", Date().timeIntervalSince(killedAt))) s later: \(causes.last ?? "")")
    }

    /// Polls until the guest is no longer moving (at most `timeout` s); its last view.
    static func waitUntilSettled(_ cloud: ControlPlaneFixture, _ id: String, timeout: Double = 60) throws -> [String:
        Any]
    {
        let deadline = Date().addingTimeInterval(timeout)
        var last: [String: Any] = [:]
        while Date() < deadline {
            last = try cloud.json("GET", "/v1/guests/\(id)").1
            if last["moving_to"] == nil, last["state"] != nil { return last }
            usleep(100_000)
        }
        return last
    }
}
