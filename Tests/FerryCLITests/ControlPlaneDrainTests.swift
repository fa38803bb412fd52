import FerryAgent
import FerryTestSupport
import Foundation
import Glibc
import Testing

/// Host maintenance on a real `ferry control` and three agents, each in a network namespace of
/// its own (as on four hosts): `POST /v1/hosts/{id}/drain` empties a host by live migration, the
/// drained host takes no guests until `undrain`; a guest that is not running stays and is named;
/// an agent killed during a drain leaves every guest on exactly one host and the drain reports
/// what it could not move.
@Suite(
    .serialized, .tags(.namespaces), .skippable(.namespaces),
    .enabled(if: FerryProcess.built.met, FerryProcess.built.why),
    .enabled(if: Requirement.namespaces.met, Requirement.namespaces.why))
struct ControlPlaneDrainTests {
    static func cloud(
        _ name: String, controllerExtra: [String] = [], agentExtra: [String] = [], agentOptions: [Int: [String]] = [:]
    ) throws -> ControlPlaneFixture {
        try ControlPlaneFixture(
            name, agents: 3, namespaced: true, controllerExtra: ["--policy", "pack"] + controllerExtra,
            agentOptions: agentOptions.merging([
                1: ["--migration-listen", "10.93.0.2:0"] + agentExtra,
                2: ["--migration-listen", "10.93.0.3:0"] + agentExtra,
                3: ["--migration-listen", "10.93.0.4:0"] + agentExtra,
            ]) { $0 + $1 })
    }

    /// `count` guests of `image`, running: their IDs. With the `pack` policy they fill h1 first.
    static func runningGuests(_ cloud: ControlPlaneFixture, _ count: Int, image: String = "builtin") throws
        -> [String]
    {
        var ids: [String] = []
        for index in 0..<count {
            let body: [String: Any] = ["name": "g\(index)", "flavor": "tiny", "image": image]
            let (status, created) = try cloud.json("POST", "/v1/projects/alpha/guests", body)
            try #require(status == 202, "\(created)")
            ids.append(try #require(created["id"] as? String))
        }
        for id in ids {
            let running = try cloud.waitForGuest(id, timeout: 60) { ["running", "error"].contains($0) }
            try #require(running["state"] as? String == "running", "\(running)")
        }
        return ids
    }

    static func host(_ cloud: ControlPlaneFixture, _ id: String) throws -> [String: Any] {
        let hosts = try cloud.json("GET", "/v1/hosts").1["hosts"] as? [[String: Any]] ?? []
        return try #require(hosts.first { $0["id"] as? String == id })
    }

    /// Follows the drain until it is no longer `draining`; the reports seen on the way.
    static func follow(_ cloud: ControlPlaneFixture, _ host: String, timeout: Double = 120) throws -> [[String: Any]] {
        var seen: [[String: Any]] = []
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let (status, report) = try cloud.json("GET", "/v1/hosts/\(host)/drain")
            try #require(status == 200, "\(report)")
            seen.append(report)
            if report["phase"] as? String != "draining" { return seen }
            usleep(100_000)
        }
        Issue.record("the drain of \(host) did not end within \(timeout) s: \(seen.last ?? [:])")
        return seen
    }

    /// "h1: c-… running" for every guest every agent holds.
    static func holdings(_ cloud: ControlPlaneFixture) throws -> [String] {
        try cloud.agents.indices.flatMap { index -> [String] in
            let client = try cloud.agents[index].client()
            let list = { @Sendable in
                try client.get("/v1/guests", as: GuestList.self).guests.map {
                    "\($0.specification.name.value) \($0.state)"
                }
            }
            return try NetworkNamespaces.run(in: try #require(cloud.namespace(index + 1)), list).map {
                "h\(index + 1): \($0)"
            }
        }
    }

    static func names(_ report: [String: Any], _ key: String) -> [String] {
        (report[key] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String }.sorted()
    }

    @Test func aHostDrainsLiveTakesNoGuestsAndIsGivenBack() throws {
        let cloud = try Self.cloud("cpd1")
        let ids = try Self.runningGuests(cloud, 4)
        let onH1 = try ids.filter { try cloud.json("GET", "/v1/guests/\($0)").1["host"] as? String == "h1" }
        try #require(onH1.count == 4, "pack put every guest on h1")

        let (status, started) = try cloud.json("POST", "/v1/hosts/h1/drain")
        try #require(status == 202, "\(started)")
        #expect(try Self.host(cloud, "h1")["mode"] as? String == "draining")
        let reports = try Self.follow(cloud, "h1")
        let end = try #require(reports.last)
        #expect(end["phase"] as? String == "drained", "\(end)")
        #expect(Self.names(end, "moved") == ids.sorted(), "\(end)")
        #expect(Self.names(end, "failed").isEmpty && Self.names(end, "stays").isEmpty)
        // While it ran the ETA was given and counted down to the end.
        let etas = reports.filter { $0["phase"] as? String == "draining" }.compactMap { $0["eta_s"] as? Double }
        #expect(etas.allSatisfy { $0 >= 0 && $0.isFinite })

        for id in ids {
            let guest = try cloud.json("GET", "/v1/guests/\(id)").1
            #expect(guest["state"] as? String == "running" && guest["host"] as? String != "h1", "\(guest)")
            let causes = try ControlPlaneKVMTests.journal(cloud, id).compactMap { $0["cause"] as? String }
            #expect(causes.contains { $0.contains("drain of host h1") }, "\(causes)")
        }
        #expect(try cloud.guestsOnHosts().sorted() == ids.map { "c-\($0)" }.sorted(), "each guest on one host")
        let drained = try Self.host(cloud, "h1")
        #expect(drained["mode"] as? String == "drained" && drained["takes_guests"] as? Bool == false, "\(drained)")
        #expect(drained["used_memory_bytes"] as? Int == 0, "\(drained)")

        // A drained host takes no guests, even with pack preferring it.
        let next = try Self.runningGuests(cloud, 1)[0]
        #expect(try cloud.json("GET", "/v1/guests/\(next)").1["host"] as? String != "h1")
        let (moveStatus, refused) = try cloud.json("POST", "/v1/guests/\(next)/migrate?wait=true", ["host": "h1"])
        #expect(moveStatus == 409 || moveStatus == 507, "\(refused)")

        let (undrainStatus, back) = try cloud.json("POST", "/v1/hosts/h1/undrain")
        #expect(undrainStatus == 200 && back["mode"] as? String == "active", "\(back)")
        #expect(back["takes_guests"] as? Bool == true, "\(back)")
        let (backStatus, moved) = try cloud.json("POST", "/v1/guests/\(next)/migrate?wait=true", ["host": "h1"])
        #expect(backStatus == 200 && moved["host"] as? String == "h1", "\(moved)")
    }

    /// A stopped guest cannot move live: the drain names it and ends `incomplete`; the host
    /// stays `draining` (no guests) until it is undrained or drained again after the guest left.
    /// Through `ferry cloud host` as a site admin: `drain --wait` exits 1 naming what stays, 0
    /// once the host is drained; `list` shows the mode.
    @Test func aGuestThatIsNotRunningStaysAndIsNamed() throws {
        let cloud = try Self.cloud("cpd2")
        let ids = try Self.runningGuests(cloud, 2)
        let (stopStatus, stopped) = try cloud.json("POST", "/v1/guests/\(ids[1])/stop")
        try #require(stopStatus == 202 || stopStatus == 200, "\(stopped)")
        _ = try cloud.waitForGuest(ids[1]) { $0 == "stopped" }

        let run = try ControlPlaneMoveTests.siteAdminCLI(cloud)
        let first = try run(["host", "drain", "h1", "--wait"])
        #expect(first.status == 1, "\(first.stdout) \(first.stderr)")
        #expect(first.stdout.contains("host h1 incomplete: 1 of 2 moved, 1 not running"), "\(first.stdout)")
        #expect(first.stdout.contains("stays  g1: stopped: only a running guest moves live"), "\(first.stdout)")
        #expect(first.stdout.contains("moved   g0 → h"), "\(first.stdout)")
        let end = try cloud.json("GET", "/v1/hosts/h1/drain").1
        #expect(end["phase"] as? String == "incomplete", "\(end)")
        #expect(Self.names(end, "moved") == [ids[0]])
        #expect(Self.names(end, "stays") == [ids[1]])
        let list = try run(["host", "list"])
        #expect(
            list.status == 0 && list.stdout.contains("h1          draining  on       healthy   no"), "\(list.stdout)")

        // Deleted, it no longer keeps the drain from ending.
        _ = try cloud.json("DELETE", "/v1/guests/\(ids[1])")
        _ = try cloud.waitForGuest(ids[1]) { $0 == "deleted" }
        let again = try run(["host", "drain", "h1", "--wait"])
        #expect(
            again.status == 0 && again.stdout.contains("host h1 drained: 0 of 0 moved"),
            "\(again.stdout) \(again.stderr)")
        let undrained = try run(["host", "undrain", "h1"])
        #expect(undrained.stdout.contains("host h1 is active, takes guests: yes"), "\(undrained.stdout)")
    }

    /// The source's agent is killed after the first guest left: the others cannot move (their
    /// host is silent); they become `unknown`, never lost or doubled; the drain ends
    /// `incomplete` naming them; when the agent is back they run on h1 again, and a new drain
    /// moves them.
    @Test func anAgentKilledDuringADrainLeavesEveryGuestOnOneHost() throws {
        // A destination's reservation for a migration its source never began lasts 5 s.
        let cloud = try Self.cloud(
            "cpd3", controllerExtra: ["--move-timeout", "5"], agentExtra: ["--incoming-reservation", "5"])
        let ids = try Self.runningGuests(cloud, 4)
        _ = try cloud.json("POST", "/v1/hosts/h1/drain")
        let deadline = Date().addingTimeInterval(60)
        var first: [String: Any] = [:]
        while Date() < deadline {
            first = try cloud.json("GET", "/v1/hosts/h1/drain").1
            if !Self.names(first, "moved").isEmpty || first["phase"] as? String != "draining" { break }
            usleep(20_000)
        }
        _ = cloud.agents[0].kill9()
        let end = try #require(try Self.follow(cloud, "h1").last)
        #expect(end["phase"] as? String != "draining", "\(end)")
        let moved = Self.names(end, "moved")
        #expect(!moved.isEmpty, "\(end)")
        #expect(end["phase"] as? String == "incomplete", "\(end)")
        let failed = Self.names(end, "failed")
        #expect(Set(failed).union(moved) == Set(ids) && Set(failed).isDisjoint(with: moved), "\(end)")
        for id in moved {
            let guest = try cloud.json("GET", "/v1/guests/\(id)").1
            #expect(guest["host"] as? String != "h1" && guest["state"] as? String == "running", "\(guest)")
        }

        // The agent is back: the guests it kept run on h1 again, settled (not moving), each on one
        // host; a new drain moves them.
        try cloud.agents[0].start(
            extra: [
                "--controller", cloud.url, "--host-id", "h1", "--offer-vcpus", "16", "--offer-memory-mib", "1024",
                "--offer-disk-gib", "1", "--migration-listen", "10.93.0.2:0", "--incoming-reservation", "5",
            ], prefix: cloud.namespacePrefix(1))
        let settled = Date().addingTimeInterval(60)
        var left: [[String: Any]] = []
        while Date() < settled {
            left = try failed.map { try cloud.json("GET", "/v1/guests/\($0)").1 }
            if left.allSatisfy({ $0["state"] as? String == "running" && $0["moving_to"] == nil }) { break }
            usleep(200_000)
        }
        for guest in left {
            #expect(guest["state"] as? String == "running" && guest["moving_to"] == nil, "\(guest)")
        }
        // A destination may still hold a reservation for a migration the killed agent never began
        // (`migrating-in`, not running): it expires.
        let expired = Date().addingTimeInterval(30)
        while Date() < expired, try cloud.guestsOnHosts().count != ids.count { usleep(200_000) }
        let held = try Self.holdings(cloud)
        #expect(try cloud.guestsOnHosts().sorted() == ids.map { "c-\($0)" }.sorted(), "each guest on one host: \(held)")
        #expect(held.filter { $0.hasSuffix(" running") }.count == ids.count, "\(held)")
        _ = try cloud.json("POST", "/v1/hosts/h1/drain")
        let again = try #require(try Self.follow(cloud, "h1").last)
        #expect(again["phase"] as? String == "drained", "\(again)")
        #expect(try cloud.guestsOnHosts().sorted() == ids.map { "c-\($0)" }.sorted(), "each guest on one host")
    }

    /// KVM guests leave a drained host live: each runs on one host after, its program kept
    /// running (more steps on the destination, no boot there: its disk journal was not started
    /// again), and the drain's report gives each one's downtime.
    @Test(.tags(.kvm), .enabled(if: Requirement.kvm.met, Requirement.kvm.why))
    func kvmGuestsLeaveLiveAndKeepRunning() throws {
        let cloud = try Self.cloud("cpd4")
        let ids = try Self.runningGuests(cloud, 3, image: "kvm")
        usleep(300_000)
        var before: [String: UInt64] = [:]
        for id in ids {
            before[id] = try #require(try ControlPlaneMoveTests.view(cloud, "h1", id).usage?.totalSteps)
        }
        _ = try cloud.json("POST", "/v1/hosts/h1/drain")
        let end = try #require(try Self.follow(cloud, "h1").last)
        #expect(end["phase"] as? String == "drained", "\(end)")
        let moved = end["moved"] as? [[String: Any]] ?? []
        #expect(moved.count == 3 && moved.allSatisfy { ($0["downtime_ms"] as? Double ?? -1) >= 0 }, "\(moved)")
        for id in ids {
            let guest = try cloud.json("GET", "/v1/guests/\(id)").1
            let host = try #require(guest["host"] as? String)
            #expect(host != "h1" && guest["state"] as? String == "running", "\(guest)")
            usleep(200_000)
            let after = try #require(try ControlPlaneMoveTests.view(cloud, host, id).usage?.totalSteps)
            #expect(after > before[id] ?? .max, "steps \(after) on \(host), \(before[id] ?? 0) before the drain")
            let lines = try ControlPlaneMoveTests.guestLines(cloud, host, id)
            #expect(!lines.contains { $0.hasPrefix("disk: ") }, "the guest booted again on \(host): \(lines.prefix(3))")
        }
        #expect(try cloud.guestsOnHosts().sorted() == ids.map { "c-\($0)" }.sorted(), "each guest on one host")
    }

    /// The controller is killed with -9 during a drain: at its next start it finds the host
    /// `draining`, settles the move it had under way and resumes the drain to its end; every
    /// guest is on exactly one host.
    @Test func aControllerKilledDuringADrainResumesItAtItsNextStart() throws {
        let cloud = try Self.cloud("cpd5")
        let ids = try Self.runningGuests(cloud, 4)
        _ = try cloud.json("POST", "/v1/hosts/h1/drain")
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            let report = try cloud.json("GET", "/v1/hosts/h1/drain").1
            if !Self.names(report, "moved").isEmpty || report["phase"] as? String != "draining" { break }
            usleep(20_000)
        }
        cloud.killController()
        // Down longer than the heartbeat timeout: at its start every host looks silent, and the
        // resumed drain must let the agents be heard before it picks destinations.
        Thread.sleep(forTimeInterval: cloud.heartbeatTimeout + 1)
        try cloud.startController()
        let resumed = try #require(try Self.follow(cloud, "h1").last)
        #expect(resumed["phase"] as? String == "drained", "\(resumed)")
        for id in ids {
            let guest = try cloud.waitForGuest(id, timeout: 60) { $0 == "running" }
            #expect(guest["host"] as? String != "h1" && guest["moving_to"] == nil, "\(guest)")
        }
        #expect(try Self.host(cloud, "h1")["mode"] as? String == "drained")
        #expect(try cloud.guestsOnHosts().sorted() == ids.map { "c-\($0)" }.sorted(), "each guest on one host")
    }

    /// Pre-failure: an uncorrected memory error written into h1's health directory quarantines it
    /// (failing, within 2 s) and the controller evacuates it at once: every guest leaves live,
    /// long before the deadline the signal implies (15 minutes), and the host ends `drained`.
    @Test func aFailingHostIsQuarantinedAndEvacuatedBeforeItsDeadline() throws {
        let health = Scratch("cpd6-health")
        let files = HealthFiles(health.path)
        try files.memoryController(0, corrected: 0, uncorrected: 0)
        let cloud = try Self.cloud("cpd6", agentOptions: [1: ["--health-dir", health.path]])
        let ids = try Self.runningGuests(cloud, 4)

        let injected = Date()
        try files.memoryController(0, corrected: 0, uncorrected: 1)
        let failing = try ControlPlaneHealthTests.waitForHost(cloud, "h1") { $0["health"] as? String == "failing" }
        let quarantined = Date().timeIntervalSince(injected)
        #expect(failing["health"] as? String == "failing" && quarantined <= 2, "\(quarantined) s: \(failing)")
        let deadline = try #require((failing["evacuate_by"] as? String).flatMap(RFC3339Parse.date))
        let end = try #require(try Self.follow(cloud, "h1").last)
        let evacuated = Date()
        #expect(end["phase"] as? String == "drained", "\(end)")
        #expect(evacuated < deadline, "evacuated at \(evacuated), the deadline was \(deadline)")
        print(
            "pre-failure: h1 quarantined \(Int(quarantined * 1000)) ms after the signal, empty after"
                + " \(Int(evacuated.timeIntervalSince(injected) * 1000)) ms (deadline in"
                + " \(Int(deadline.timeIntervalSince(injected))) s)")
        let host = try Self.host(cloud, "h1")
        #expect(host["mode"] as? String == "drained", "\(host)")
        let cause = end["cause"] as? String ?? ""
        #expect(cause.hasPrefix("quarantined: memory controller mc0: 1 uncorrected error; evacuate by"), "\(end)")
        for id in ids {
            let guest = try cloud.json("GET", "/v1/guests/\(id)").1
            #expect(guest["state"] as? String == "running" && guest["host"] as? String != "h1", "\(guest)")
        }
        #expect(try cloud.guestsOnHosts().sorted() == ids.map { "c-\($0)" }.sorted(), "each guest on one host")
    }
}
