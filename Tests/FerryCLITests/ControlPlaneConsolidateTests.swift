import FerryAgent
import FerryTestSupport
import Foundation
import Glibc
import Testing

/// A group's scale-in that consolidates by live migration, and the limit on moves per host, on a
/// real controller and two agents (each in a network namespace of its own) with built-in guests.
@Suite(
    .serialized, .tags(.namespaces), .skippable(.namespaces),
    .enabled(if: FerryProcess.built.met, FerryProcess.built.why),
    .enabled(if: Requirement.namespaces.met, Requirement.namespaces.why))
struct ControlPlaneConsolidateTests {
    static func cloud(_ name: String, controllerExtra: [String] = []) throws -> ControlPlaneFixture {
        try ControlPlaneFixture(
            name, agents: 2, namespaced: true, controllerExtra: controllerExtra,
            agentOptions: [1: ["--migration-listen", "10.93.0.2:0"], 2: ["--migration-listen", "10.93.0.3:0"]])
    }

    /// The member's load points (per mille) of the last minute, oldest first.
    static func loads(_ cloud: ControlPlaneFixture, _ id: String) throws -> [Int] {
        let points = try cloud.json("GET", "/v1/guests/\(id)/usage?minutes=1").1["points"] as? [[String: Any]] ?? []
        return points.compactMap { $0["load_permille"] as? Int }
    }

    static func journal(_ cloud: ControlPlaneFixture, _ id: String) throws -> [[String: Any]] {
        try cloud.json("GET", "/v1/guests/\(id)/journal").1["entries"] as? [[String: Any]] ?? []
    }

    /// A group of three members over two hosts, the one alone on its host loaded.
    struct LoadedGroup {
        var id: String
        var members: [[String: Any]]
        /// The host with the one (loaded) member, and the other.
        var lone: String
        var other: String
        var loadedID: String
        var idleIDs: [String]
    }

    /// Three members over two hosts, the one alone on its host paced at full demand (its load
    /// above the policy's threshold of 50%), the other two idle, until the last 7 s of each say so.
    static func loadedGroup(_ cloud: ControlPlaneFixture) throws -> LoadedGroup {
        // The group's mean load (one member of three busy: about 33%) never breaches 50%.
        let policy: [String: Any] = [
            "type": "threshold", "metric": "load", "comparison": "above", "threshold": 50, "duration_seconds": 1,
            "step": 1, "cooldown_seconds": 600,
        ]
        let body: [String: Any] = [
            "name": "web", "flavor": "tiny", "image": "builtin", "min": 1, "max": 3, "desired": 3,
            "policy": policy, "scale_in": "newest",
        ]
        let (made, created) = try cloud.json("POST", "/v1/projects/alpha/groups", body)
        try #require(made == 201, "\(created)")
        let id = try #require(created["id"] as? String)
        let up = try ControlPlaneWarmGroupTests.wait(cloud, id, timeout: 90) { _, members in
            members.count == 3 && members.allSatisfy { $0["state"] as? String == "running" }
        }
        try #require(up, "3 members did not run: \(ControlPlaneGroupTests.describe(cloud, id))")
        let members = try ControlPlaneGroupTests.group(cloud, id).1
        let byHost = Dictionary(grouping: members) { $0["host"] as? String ?? "" }
        try #require(byHost.count == 2, "spread over both hosts: \(members)")
        let (lone, loaded) = try #require(byHost.first { $0.value.count == 1 }.map { ($0.key, $0.value[0]) })
        let other = lone == "h1" ? "h2" : "h1"
        let group = LoadedGroup(
            id: id, members: members, lone: lone, other: other, loadedID: try #require(loaded["id"] as? String),
            idleIDs: byHost[other]!.compactMap { $0["id"] as? String })

        let deadline = Date().addingTimeInterval(60)
        var paced: Set<String> = []
        while Date() < deadline {
            for member in members {
                let memberID = member["id"] as? String ?? ""
                let rate = memberID == group.loadedID ? "400GB/s" : "100KB/s"
                if !paced.contains(memberID), try ControlPlaneGroupTests.pace(cloud, member, rate) == 200 {
                    paced.insert(memberID)
                }
            }
            let busy = try Self.loads(cloud, group.loadedID).suffix(7)
            let idle = try group.idleIDs.map { try Self.loads(cloud, $0).suffix(7) }
            if busy.count == 7 && busy.allSatisfy({ $0 > 600 })
                && idle.allSatisfy({ $0.count == 7 && $0.allSatisfy { $0 < 400 } })
            {
                return group
            }
            usleep(300_000)
        }
        Issue.record("the loads did not settle: \(try Self.loads(cloud, group.loadedID))")
        return group
    }

    /// A scale-in to 2 moves the loaded member live onto the other host and removes an idle one
    /// there: the lone host holds no member, the loaded one was never stopped, and its journal,
    /// the group's timeline and the agents say so.
    @Test func aScaleInMovesTheLoadedMemberAndEmptiesItsHost() throws {
        let cloud = try Self.cloud("cons1", controllerExtra: ["--scaling-interval", "0.5"])
        let group = try Self.loadedGroup(cloud)
        let (id, lone, other, loadedID, idleIDs) = (group.id, group.lone, group.other, group.loadedID, group.idleIDs)

        let (set, answer) = try cloud.json("PUT", "/v1/groups/\(id)/desired", ["desired": 2])
        try #require(set == 200, "\(answer)")
        let done = try ControlPlaneWarmGroupTests.wait(cloud, id, timeout: 90) { _, members in
            members.count == 2
                && members.allSatisfy { $0["state"] as? String == "running" && $0["host"] as? String == other }
        }
        #expect(done, "host \(lone) was not emptied: \(ControlPlaneGroupTests.describe(cloud, id))")

        // The loaded member moved live, never stopped; an idle one went.
        let moved = try cloud.json("GET", "/v1/guests/\(loadedID)").1
        #expect(moved["state"] as? String == "running" && moved["host"] as? String == other, "\(moved)")
        let journal = try Self.journal(cloud, loadedID)
        let causes = journal.compactMap { $0["cause"] as? String }
        print("the loaded member's journal:\n" + causes.joined(separator: "\n"))
        #expect(
            causes.contains {
                $0.hasPrefix("moving to \(other)") && $0.contains("moved to consolidate, emptying host \(lone)")
            }, "\(causes)")
        #expect(causes.contains { $0.hasPrefix("moved from \(lone) to \(other)") }, "\(causes)")
        #expect(!journal.contains { ["stopping", "stopped"].contains($0["to"] as? String) }, "\(journal)")
        let gone = try idleIDs.filter { try cloud.json("GET", "/v1/guests/\($0)").1["state"] as? String == "deleted" }
        #expect(gone.count == 1, "one idle member removed: \(idleIDs)")
        if let removed = gone.first {
            #expect(try Self.journal(cloud, removed).contains { $0["to"] as? String == "stopped" })
        }
        let reasons = try Self.reasons(cloud, id)
        print("group web's actions:\n" + reasons.joined(separator: "\n"))
        #expect(
            reasons.contains { $0.hasPrefix("moved to consolidate: ") && $0.hasSuffix("emptying host \(lone)") },
            "\(reasons)")

        // The agents: the lone host holds none of the group, the loaded member is held once.
        let loneIndex = try #require(Int(lone.dropFirst()))
        let client = try cloud.agents[loneIndex - 1].client()
        let onLone = try NetworkNamespaces.run(in: try #require(cloud.namespace(loneIndex))) {
            try client.get("/v1/guests", as: GuestList.self).guests.map(\.specification.name.value)
        }
        let ids = group.members.compactMap { $0["id"] as? String }
        #expect(!onLone.contains { name in ids.contains { name == "c-\($0)" } }, "\(onLone)")
        #expect(try cloud.guestsOnHosts().filter { $0 == "c-\(loadedID)" }.count == 1)
    }

    /// The same group on agents whose arriving guests listen on 127.0.0.1 (out of the source's
    /// reach): the move to consolidate fails, the loaded member stays running on its host, the
    /// timeline says so, and the scale-in removes the member the policy's order takes (the newest).
    @Test func aFailedMoveFallsBackToThePolicysOrder() throws {
        let cloud = try ControlPlaneFixture(
            "cons3", agents: 2, namespaced: true,
            controllerExtra: ["--scaling-interval", "0.5", "--move-timeout", "20"],
            agentOptions: [1: ["--migration-listen", "127.0.0.1:0"], 2: ["--migration-listen", "127.0.0.1:0"]])
        let group = try Self.loadedGroup(cloud)
        let newest = try #require(
            group.members.max { ($0["name"] as? String ?? "") < ($1["name"] as? String ?? "") }?["id"] as? String)

        let (set, answer) = try cloud.json("PUT", "/v1/groups/\(group.id)/desired", ["desired": 2])
        try #require(set == 200, "\(answer)")
        let done = try ControlPlaneWarmGroupTests.wait(cloud, group.id, timeout: 90) { _, members in
            members.count == 2 && members.allSatisfy { $0["state"] as? String == "running" }
        }
        #expect(done, "\(ControlPlaneGroupTests.describe(cloud, group.id))")
        let reasons = try Self.reasons(cloud, group.id)
        #expect(reasons.contains { $0.hasPrefix("a move to consolidate failed") }, "\(reasons)")
        #expect(!reasons.contains { $0.hasPrefix("moved to consolidate") }, "\(reasons)")
        let causes = try Self.journal(cloud, group.loadedID).compactMap { $0["cause"] as? String }
        #expect(
            causes.contains { $0.hasPrefix("stays on \(group.lone); the move to \(group.other) was abandoned") },
            "\(causes)")
        #expect(try cloud.json("GET", "/v1/guests/\(newest)").1["state"] as? String == "deleted", "the policy's pick")
        if newest != group.loadedID {
            let loaded = try cloud.json("GET", "/v1/guests/\(group.loadedID)").1
            #expect(loaded["state"] as? String == "running" && loaded["host"] as? String == group.lone, "\(loaded)")
        }
        #expect(try cloud.guestsOnHosts().filter { $0 == "c-\(group.loadedID)" }.count <= 1)
    }

    static func reasons(_ cloud: ControlPlaneFixture, _ id: String) throws -> [String] {
        let actions = try cloud.json("GET", "/v1/groups/\(id)/actions").1["actions"] as? [[String: Any]] ?? []
        return actions.compactMap { $0["reason"] as? String }
    }

    /// `--max-moves-per-host 1`: while one guest moves into a host (throttled), an API move out of
    /// it is refused with 409 naming the host and the limit; once that move has ended (cancelled
    /// by `--move-timeout`), the same move goes.
    @Test func anAPIMoveOverTheLimitPerHostIsRefused() throws {
        let cloud = try Self.cloud("cons2", controllerExtra: ["--max-moves-per-host", "1", "--move-timeout", "3"])
        var guests: [(String, String)] = []
        for name in ["a", "b"] {
            let (status, made) = try cloud.json(
                "POST", "/v1/projects/alpha/guests", ["name": name, "flavor": "tiny", "image": "builtin"])
            try #require(status == 202, "\(made)")
            let id = try #require(made["id"] as? String)
            let running = try cloud.waitForGuest(id, timeout: 60) { ["running", "error"].contains($0) }
            try #require(running["state"] as? String == "running", "\(running)")
            guests.append((id, try #require(running["host"] as? String)))
        }
        let ((first, from), (second, to)) = (guests[0], guests[1])
        try #require(from != to, "spread: one guest per host \(guests)")
        let slow: [String: Any] = ["host": to, "max_bandwidth_bytes_per_s": 100_000]
        let (began, moving) = try cloud.json("POST", "/v1/guests/\(first)/migrate", slow)
        try #require(began == 202 && moving["moving_to"] as? String == to, "\(moving)")

        let (refused, answer) = try cloud.json("POST", "/v1/guests/\(second)/migrate", ["host": from])
        let message = (answer["error"] as? [String: Any])?["message"] as? String ?? "\(answer)"
        #expect(refused == 409, "\(answer)")
        #expect(message.contains("host \(to) has 1 moves under way"), "\(message)")
        #expect(
            message.contains("--max-moves-per-host 1")
                && answer["error"].map { "\($0)" }?.contains("move_limit") == true)
        #expect(try cloud.json("GET", "/v1/guests/\(second)").1["moving_to"] == nil, "nothing recorded")

        // The throttled move is cancelled at the move timeout; then the second goes.
        var stayed: [String: Any] = [:]
        let until = Date().addingTimeInterval(90)
        repeat {
            stayed = try cloud.json("GET", "/v1/guests/\(first)").1
            if stayed["moving_to"] == nil { break }
            usleep(100_000)
        } while Date() < until
        #expect(stayed["host"] as? String == from && stayed["moving_to"] == nil, "\(stayed)")
        let (status, after) = try cloud.json("POST", "/v1/guests/\(second)/migrate?wait=true", ["host": from])
        #expect(status == 200 && after["host"] as? String == from, "\(after)")
        #expect(try cloud.guestsOnHosts().filter { $0 == "c-\(second)" }.count == 1)
    }
}
