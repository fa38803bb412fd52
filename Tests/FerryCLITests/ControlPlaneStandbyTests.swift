import FerryAgent
import FerryHostModel
import FerryTestSupport
import Foundation
import Glibc
import Testing

/// Consolidation with hosts put in standby (issue 18, part 3) on a real `ferry control` and four
/// agents, each in a network namespace of its own, offering 3 vCPUs each (a tiny guest takes 1):
/// the guests, spread thin, are packed onto as few hosts as a brute force over every placement
/// finds, within one migration of its fewest; the freed hosts go to standby; a create with no room
/// on the hosts that are on wakes one and runs there.
@Suite(
    .serialized, .tags(.namespaces), .skippable(.namespaces),
    .enabled(if: FerryProcess.built.met, FerryProcess.built.why),
    .enabled(if: Requirement.namespaces.met, Requirement.namespaces.why))
struct ControlPlaneStandbyTests {
    static let vcpus = 3

    static func cloud(
        _ name: String, agents: Int = 4, vcpus: Int = vcpus, controllerExtra: [String] = [],
        agentExtra: [String] = []
    ) throws -> ControlPlaneFixture {
        var options: [Int: [String]] = [:]
        for index in 1...agents { options[index] = ["--migration-listen", "10.93.0.\(index + 1):0"] + agentExtra }
        return try ControlPlaneFixture(
            name, agents: agents, offerVCPUs: vcpus, namespaced: true,
            controllerExtra: ["--consolidate-headroom", "0"] + controllerExtra, agentOptions: options)
    }

    /// Each guest's host, as the controller records it.
    static func placement(_ cloud: ControlPlaneFixture, _ ids: [String]) throws -> [String: String] {
        var hosts: [String: String] = [:]
        for id in ids { hosts[id] = try cloud.json("GET", "/v1/guests/\(id)").1["host"] as? String }
        return hosts
    }

    /// The optimum by brute force over every placement of the guests (all of one size, 1 vCPU) on
    /// `hosts` of `vcpus` each: the fewest hosts used, and for that count the fewest guests moved.
    static func optimum(_ placement: [String: String], hosts: [String]) -> (hosts: Int, moves: Int) {
        let guests = placement.keys.sorted()
        var best = (hosts: Int.max, moves: Int.max)
        var choice = Array(repeating: 0, count: guests.count)
        let total = Int(pow(Double(hosts.count), Double(guests.count)))
        for code in 0..<total {
            var rest = code
            var load = Array(repeating: 0, count: hosts.count)
            for index in guests.indices {
                choice[index] = rest % hosts.count
                rest /= hosts.count
                load[choice[index]] += 1
            }
            guard load.allSatisfy({ $0 <= vcpus }) else { continue }
            let used = load.filter { $0 > 0 }.count
            let moves = guests.indices.filter { hosts[choice[$0]] != placement[guests[$0]] }.count
            if (used, moves) < best { best = (used, moves) }
        }
        return best
    }

    /// Follows the consolidation until it is no longer running; its last report.
    static func follow(_ cloud: ControlPlaneFixture, timeout: Double = 120) throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(timeout)
        var report: [String: Any] = [:]
        while Date() < deadline {
            let status: Int
            (status, report) = try cloud.json("GET", "/v1/consolidate")
            try #require(status == 200, "\(report)")
            if report["phase"] as? String != "running" { return report }
            usleep(50_000)
        }
        Issue.record("the consolidation did not end within \(timeout) s: \(report)")
        return report
    }

    static func power(_ cloud: ControlPlaneFixture, _ host: String) throws -> String? {
        try ControlPlaneDrainTests.host(cloud, host)["power"] as? String
    }

    /// Waits until `host`'s power is `power` (as its heartbeats report it); whether it became so.
    static func waitForPower(_ cloud: ControlPlaneFixture, _ host: String, _ power: String, timeout: Double = 20)
        throws -> Bool
    {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try Self.power(cloud, host) == power { return true }
            usleep(50_000)
        }
        return false
    }

    /// THE TARGET: six guests spread over four hosts (2, 2, 1, 1); consolidated, the hosts freed are
    /// the brute force's, with at most one migration more than its fewest; every guest runs, each
    /// on one host; the freed hosts report standby. Then a create finds no room on the two hosts
    /// left on (full): it wakes a host in standby and runs there.
    @Test func consolidationFreesTheOptimumsHostsAndACreateWakesOne() throws {
        let cloud = try Self.cloud("cps1")
        let ids = try ControlPlaneDrainTests.runningGuests(cloud, 6)
        let before = try Self.placement(cloud, ids)
        let hosts = ["h1", "h2", "h3", "h4"]
        try #require(Set(before.values).count == 4, "spread thin: \(before)")
        let best = Self.optimum(before, hosts: hosts)

        let (planStatus, plan) = try cloud.json("POST", "/v1/consolidate?dry_run=1")
        try #require(planStatus == 200, "\(plan)")
        #expect(plan["phase"] as? String == "planned" && plan["hosts_used_after"] as? Int == best.hosts, "\(plan)")
        #expect(try Self.placement(cloud, ids) == before, "a dry run moves nothing")

        let started = Date()
        let (status, answer) = try cloud.json("POST", "/v1/consolidate")
        try #require(status == 202, "\(answer)")
        let report = try Self.follow(cloud)
        let seconds = Date().timeIntervalSince(started)
        let done = report["moves_done"] as? [[String: Any]] ?? []
        let standby = report["standby"] as? [String] ?? []
        #expect(report["phase"] as? String == "done", "\(report)")
        #expect(report["hosts_used_before"] as? Int == 4 && report["lower_bound"] as? Int == 2, "\(report)")
        #expect(report["hosts_saved"] as? Int == hosts.count - best.hosts, "freed as the optimum: \(report)")
        #expect(standby.count == hosts.count - best.hosts, "\(report)")
        #expect(done.count <= best.moves + 1, "\(done.count) migrations, the optimum \(best.moves)")
        #expect((report["moves_failed"] as? [Any] ?? []).isEmpty, "\(report)")

        let after = try Self.placement(cloud, ids)
        #expect(Set(after.values).count == best.hosts && Set(after.values).isDisjoint(with: standby), "\(after)")
        for id in ids {
            let guest = try cloud.json("GET", "/v1/guests/\(id)").1
            #expect(guest["state"] as? String == "running" && guest["moving_to"] == nil, "\(guest)")
        }
        #expect(try cloud.guestsOnHosts().sorted() == ids.map { "c-\($0)" }.sorted(), "each guest on one host")
        for host in standby {
            #expect(try Self.waitForPower(cloud, host, "standby"), "\(host) reports standby")
            let (agentStatus, agentSaid) = try Self.createOnAgent(cloud, host)
            #expect(agentStatus == 409 && agentSaid.contains("standby"), "\(host) refuses guests: \(agentSaid)")
        }
        print(
            "consolidation: 4 hosts → \(after.values.count > 0 ? Set(after.values).count : 0) (optimum"
                + " \(best.hosts), lower bound 2), \(done.count) migrations (optimum \(best.moves)), in"
                + " \(String(format: "%.2f", seconds)) s; standby \(standby)")

        // No room on the hosts that are on (2 × 3 vCPUs, 6 guests): the create wakes one in standby.
        let waking = Date()
        let more = try ControlPlaneDrainTests.runningGuests(cloud, 1)[0]
        let woke = Date().timeIntervalSince(waking)
        let landed = try #require(try Self.placement(cloud, [more])[more])
        #expect(standby.contains(landed), "it runs on a host that was in standby: \(landed)")
        #expect(try Self.waitForPower(cloud, landed, "on"))
        let journal = try ControlPlaneKVMTests.journal(cloud, more).compactMap { $0["to"] as? String }
        #expect(journal.contains("building") && journal.last == "running", "\(journal)")
        for host in standby where host != landed { #expect(try Self.power(cloud, host) == "standby") }
        print("wake: a create woke \(landed) and ran there \(String(format: "%.2f", woke)) s after it was asked")
    }

    /// Consolidated, then a lease and a scaling group need the capacity. Three guests, one on each
    /// of three hosts of 3 vCPUs, are packed onto one; the other two go to standby. A lease of three
    /// tiny guests starting now finds no room on the host left on: it is admitted on the capacity
    /// in standby, its delivery sets its units aside on one of those hosts and wakes it, and its
    /// guests run there. Then a group's members (one, then two more by hand) find the two hosts on
    /// full: they wake the last host in standby and run there.
    @Test func aLeaseAndAGroupThatNeedTheCapacityWakeHostsInStandby() throws {
        let cloud = try Self.cloud("cps5", agents: 3)
        let ids = try ControlPlaneDrainTests.runningGuests(cloud, 3)
        try #require(Set(try Self.placement(cloud, ids).values).count == 3, "one guest per host")
        _ = try cloud.json("POST", "/v1/consolidate")
        let report = try Self.follow(cloud)
        let standby = (report["standby"] as? [String] ?? []).sorted()
        try #require(report["phase"] as? String == "done" && standby.count == 2, "\(report)")
        for host in standby { #expect(try Self.waitForPower(cloud, host, "standby")) }

        let asked = Date()
        let (status, admitted) = try cloud.json(
            "POST", "/v1/projects/alpha/leases",
            [
                "flavor": "tiny", "count": 3, "start": ControlPlaneLeaseTests.time(asked),
                "end": ControlPlaneLeaseTests.time(asked + 600), "image": "builtin",
            ])
        try #require(status == 201, "admitted on the capacity in standby: \(admitted)")
        let lease = try #require(admitted["id"] as? String)
        let active = try ControlPlaneLeaseTests.waitForLease(cloud, lease, timeout: 60) { $0 == "active" }
        let slots = active["slots"] as? [String: Int] ?? [:]
        let leased = try #require(slots.keys.first)
        #expect(slots == [leased: 3] && standby.contains(leased), "\(active)")
        let members = try Self.waitForMembers(3) { try ControlPlaneLeaseTests.members(cloud, lease) }
        for id in members {
            let guest = try cloud.waitForGuest(id, timeout: 60) { ["running", "error"].contains($0) }
            #expect(guest["state"] as? String == "running" && guest["host"] as? String == leased, "\(guest)")
        }
        #expect(try Self.waitForPower(cloud, leased, "on"))
        let leaseSeconds = Date().timeIntervalSince(asked)

        let last = try #require(standby.first { $0 != leased })
        let policy: [String: Any] = [
            "type": "threshold", "metric": "load", "comparison": "above", "threshold": 80, "duration_seconds": 1,
            "step": 1, "cooldown_seconds": 4,
        ]
        let body: [String: Any] = [
            "name": "batch", "flavor": "tiny", "image": "builtin", "min": 1, "max": 3, "policy": policy,
        ]
        let grown = Date()
        let (made, created) = try cloud.json("POST", "/v1/projects/alpha/groups", body)
        try #require(made == 201, "\(created)")
        let group = try #require(created["id"] as? String)
        let (set, setAnswer) = try cloud.json("PUT", "/v1/groups/\(group)/desired", ["desired": 3])
        try #require(set == 200, "\(setAnswer)")
        let running = try Self.waitForMembers(3) {
            try ControlPlaneGroupTests.group(cloud, group).1.filter { $0["state"] as? String == "running" }
                .compactMap { $0["id"] as? String }
        }
        for id in running {
            #expect(try Self.placement(cloud, [id])[id] == last, "a member runs on the host it woke: \(id)")
        }
        #expect(try Self.waitForPower(cloud, last, "on"))
        print(
            "standby wake: a lease of 3 woke \(leased), its guests running \(String(format: "%.2f", leaseSeconds)) s"
                + " after it was asked; a group of 3 woke \(last), its members running"
                + " \(String(format: "%.2f", Date().timeIntervalSince(grown))) s after it was made")
        #expect(
            try cloud.guestsOnHosts().count == ids.count + members.count + running.count, "each guest on one host")
    }

    /// Polls `list` until it names `count` IDs (up to 60 s); the last it named.
    static func waitForMembers(_ count: Int, _ list: () throws -> [String]) throws -> [String] {
        let deadline = Date().addingTimeInterval(60)
        var ids = try list()
        while ids.count < count, Date() < deadline {
            usleep(50_000)
            ids = try list()
        }
        #expect(ids.count == count, "\(ids)")
        return ids
    }

    /// A direct create on an agent, as the controller would send it: its status and body.
    static func createOnAgent(_ cloud: ControlPlaneFixture, _ host: String) throws -> (Int, String) {
        let spec = GuestSpecification(
            name: try GuestName("direct"), kind: .builtin, vcpus: 1, memoryBytes: 16 << 20,
            disks: [DiskSpecification(name: "root", sizeBytes: 4 << 20, template: cloud.template)])
        var body = try #require(
            try JSONSerialization.jsonObject(with: JSONEncoder().encode(spec)) as? [String: Any])
        body["id"] = String(repeating: "ab", count: 16)
        let bytes = Array(try JSONSerialization.data(withJSONObject: body))
        let response = try ControlPlaneMoveTests.onHost(cloud, host) { try $0.send("POST", "/v1/guests", body: bytes) }
        return (response.status, String(decoding: response.body, as: UTF8.self))
    }

    /// Standby refused while a guest is on the host (at the controller and at the agent); an agent
    /// in standby refuses a create sent to it directly, and is still in standby after a restart
    /// (kill -9); `ferry cloud host wake` wakes it, `host list` shows the power.
    @Test func standbyOnlyEmptyRefusesGuestsAndSurvivesARestart() throws {
        let cloud = try Self.cloud("cps2", agents: 2)
        let id = try ControlPlaneDrainTests.runningGuests(cloud, 1)[0]
        let busy = try #require(try Self.placement(cloud, [id])[id])
        let idle = busy == "h1" ? "h2" : "h1"

        let (refusedStatus, refused) = try cloud.json("POST", "/v1/hosts/\(busy)/standby")
        #expect(refusedStatus == 409, "\(refused)")
        #expect("\(refused)".contains(id), "the refusal names the guest: \(refused)")
        let agentRefusal = try ControlPlaneMoveTests.onHost(cloud, busy) { try $0.send("POST", "/v1/host/standby") }
        let agentSaid = String(decoding: agentRefusal.body, as: UTF8.self)
        #expect(agentRefusal.status == 409 && agentSaid.contains("c-\(id)"), "\(agentSaid)")
        #expect(try Self.power(cloud, busy) == "on")

        let (status, standby) = try cloud.json("POST", "/v1/hosts/\(idle)/standby")
        #expect(status == 200 && standby["power"] as? String == "standby", "\(standby)")
        #expect(standby["takes_guests"] as? Bool == false, "\(standby)")
        let (createStatus, createSaid) = try Self.createOnAgent(cloud, idle)
        #expect(createStatus == 409 && createSaid.contains("standby"), "\(createStatus) \(createSaid)")

        // Killed and started again, the agent is still in standby: it says so and refuses guests.
        let index = try #require(Int(idle.dropFirst())) - 1
        let standbyAt = Date()
        cloud.agents[index].kill9()
        try cloud.agents[index].start()
        // Its reports count once the controller has one from the new process (its new port) and
        // the fresh standby's grace is over: an agent that forgot would be recorded on by then.
        let port = ":\(cloud.agents[index].port)"
        let heard = Date().addingTimeInterval(30)
        while Date() < heard {
            let record = try ControlPlaneDrainTests.host(cloud, idle)
            let graceOver = Date().timeIntervalSince(standbyAt) > HostRecordGrace.seconds + 1.5
            if (record["address"] as? String ?? "").hasSuffix(port), graceOver { break }
            usleep(100_000)
        }
        #expect(try (ControlPlaneDrainTests.host(cloud, idle)["address"] as? String ?? "").hasSuffix(port))
        #expect(try Self.power(cloud, idle) == "standby")
        let (againStatus, againSaid) = try Self.createOnAgent(cloud, idle)
        #expect(againStatus == 409 && againSaid.contains("standby"), "\(againStatus) \(againSaid)")

        let run = try ControlPlaneMoveTests.siteAdminCLI(cloud)
        let list = try run(["host", "list"])
        #expect(list.status == 0 && list.stdout.contains("POWER"), "\(list.stdout)")
        #expect(list.stdout.contains("\(idle)          active    standby"), "\(list.stdout)")
        let wake = try run(["host", "wake", idle])
        #expect(wake.status == 0, "\(wake.stderr)")
        #expect(try Self.waitForPower(cloud, idle, "on"))
        #expect(try ControlPlaneDrainTests.host(cloud, idle)["takes_guests"] as? Bool == true)
        let (wokenStatus, wokenSaid) = try Self.createOnAgent(cloud, idle)
        #expect(wokenStatus == 201, "a woken agent takes guests: \(wokenStatus) \(wokenSaid)")
    }

    /// Six guests over three hosts of 4 vCPUs (2, 2, 2): the plan empties one host, two moves. Its
    /// agent is killed with -9 once the first move is done: the other move fails and the report
    /// names it; the host is not put in standby; once the agent is back every guest runs on exactly
    /// one host, the one that did not move on its source.
    @Test func anAgentKilledDuringAConsolidationKeepsItsHostOnAndEveryGuestInOnePlace() throws {
        let cloud = try Self.cloud(
            "cps3", agents: 3, vcpus: 4, controllerExtra: ["--move-timeout", "5"],
            agentExtra: ["--incoming-reservation", "5"])
        let ids = try ControlPlaneDrainTests.runningGuests(cloud, 6)
        let before = try Self.placement(cloud, ids)
        let (_, plan) = try cloud.json("POST", "/v1/consolidate?dry_run=1")
        let planned = plan["moves_planned"] as? [[String: Any]] ?? []
        let sources = Set(planned.compactMap { $0["from"] as? String })
        try #require(sources.count == 1 && planned.count == 2, "one host to empty, two moves: \(plan)")
        let victim = try #require(sources.first)

        _ = try cloud.json("POST", "/v1/consolidate")
        var report: [String: Any] = [:]
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            report = try cloud.json("GET", "/v1/consolidate").1
            if !(report["moves_done"] as? [Any] ?? []).isEmpty || report["phase"] as? String != "running" { break }
            usleep(5_000)
        }
        try #require((report["moves_done"] as? [Any] ?? []).count == 1, "one move done, one to go: \(report)")
        let index = try #require(Int(victim.dropFirst())) - 1
        cloud.agents[index].kill9()
        let end = try Self.follow(cloud)
        let failed = end["moves_failed"] as? [[String: Any]] ?? []
        #expect(failed.count == 1 && failed.allSatisfy { $0["from"] as? String == victim }, "\(end)")
        #expect(failed.allSatisfy { !($0["reason"] as? String ?? "").isEmpty }, "\(end)")
        let kept = end["stayed_on"] as? [[String: Any]] ?? []
        #expect(kept.map { $0["host"] as? String } == [victim], "\(end)")
        #expect((end["standby"] as? [String] ?? []).isEmpty && end["hosts_saved"] as? Int == 0, "\(end)")
        #expect(try Self.power(cloud, victim) == "on")
        print("fault: \(failed.first?["reason"] ?? "?")")

        try cloud.agents[index].start()
        let settled = Date().addingTimeInterval(60)
        var guests: [[String: Any]] = []
        while Date() < settled {
            guests = try ids.map { try cloud.json("GET", "/v1/guests/\($0)").1 }
            if guests.allSatisfy({ $0["state"] as? String == "running" && $0["moving_to"] == nil }) { break }
            usleep(200_000)
        }
        for guest in guests { #expect(guest["state"] as? String == "running" && guest["moving_to"] == nil, "\(guest)") }
        let expired = Date().addingTimeInterval(30)
        while Date() < expired, try cloud.guestsOnHosts().count != ids.count { usleep(200_000) }
        #expect(try cloud.guestsOnHosts().sorted() == ids.map { "c-\($0)" }.sorted(), "each guest on one host")
        for move in failed {
            let id = try #require(move["guest"] as? String)
            #expect(try Self.placement(cloud, [id])[id] == before[id], "a failed move leaves it on its source")
        }
    }
    /// `--consolidate-below 0.5`: two guests on two hosts of 3 vCPUs (a third of the cluster) are
    /// packed onto one by themselves and the other host goes to standby; the report names the
    /// utilization. `ferry cloud consolidate --dry-run` then plans nothing more, and `--wait` ends at once.
    @Test func lowDemandConsolidatesByItselfAndTheCLIShowsIt() throws {
        let cloud = try Self.cloud(
            "cps4", agents: 2, controllerExtra: ["--consolidate-below", "0.5", "--consolidate-interval", "1"])
        let ids = try ControlPlaneDrainTests.runningGuests(cloud, 2)
        let deadline = Date().addingTimeInterval(60)
        var report: [String: Any] = [:]
        while Date() < deadline {
            report = try cloud.json("GET", "/v1/consolidate").1
            if report["phase"] as? String == "done" { break }
            usleep(100_000)
        }
        #expect(report["phase"] as? String == "done", "\(report)")
        #expect((report["cause"] as? String ?? "").hasPrefix("utilization 33 % < 50 %"), "\(report)")
        let standby = report["standby"] as? [String] ?? []
        #expect(standby.count == 1 && (report["moves_done"] as? [Any] ?? []).count == 1, "\(report)")
        #expect(Set(try Self.placement(cloud, ids).values).count == 1)

        let run = try ControlPlaneMoveTests.siteAdminCLI(cloud)
        let plan = try run(["consolidate", "--dry-run"])
        #expect(plan.status == 0 && plan.stdout.contains("plan: 1 hosts → 1"), "\(plan.stdout) \(plan.stderr)")
        let again = try run(["consolidate", "--wait"])
        #expect(again.status == 0 && again.stdout.contains("0 of 0 moves done"), "\(again.stdout) \(again.stderr)")
        let list = try run(["host", "list"])
        #expect(list.stdout.contains("standby"), "\(list.stdout)")
    }
}

/// The grace a fresh standby has over its agent's earlier reports (`HostRecord.standbyGraceSeconds`).
enum HostRecordGrace {
    static let seconds = 5.0
}
