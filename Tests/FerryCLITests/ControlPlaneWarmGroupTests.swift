import FerryTestSupport
import Foundation
import Testing

/// Warm capacity on a real controller with two agents: a group with `warm: 1` boots a member
/// beyond its desired one and suspends it; a scale-out resumes that member (restored from its
/// suspend file, not booted) and then refills the pool; a deleted group removes its warm member
/// too.
@Suite(.serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct ControlPlaneWarmGroupTests {
    static func count(_ members: [[String: Any]], _ state: String) -> Int {
        members.filter { $0["state"] as? String == state }.count
    }

    /// Polls every 50 ms until `done` holds for the group and its live members, at most `timeout` s.
    static func wait(
        _ cloud: ControlPlaneFixture, _ id: String, timeout: Double,
        until done: ([String: Any], [[String: Any]]) -> Bool
    ) throws -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let (group, members) = try ControlPlaneGroupTests.group(cloud, id)
            if done(group, members) { return true }
            usleep(50_000)
        }
        return false
    }

    /// Milliseconds from the (first or last) journal row into `from` to the next into `to`.
    static func milliseconds(_ journal: [[String: Any]], from: String, to: String, last: Bool) throws -> Int {
        let style = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        let times = try journal.map { (try style.parse($0["time"] as? String ?? ""), $0["to"] as? String ?? "") }
        let starts = times.indices.filter { times[$0].1 == from }
        guard let start = last ? starts.last : starts.first,
            let end = times[start...].first(where: { $0.1 == to })
        else { return -1 }
        return Int((end.0.timeIntervalSince(times[start].0) * 1000).rounded())
    }

    @Test func aScaleOutResumesAWarmMemberAndRefillsThePool() throws {
        let cloud = try ControlPlaneFixture(
            "warm", agents: 2, namespaced: Requirement.namespaces.met, controllerExtra: ["--scaling-interval", "0.5"])
        // A policy that never fires (load cannot pass 1000%): the desired count moves by hand only.
        let policy: [String: Any] = [
            "type": "threshold", "metric": "load", "comparison": "above", "threshold": 1000, "duration_seconds": 1,
            "step": 1, "cooldown_seconds": 600,
        ]
        let body: [String: Any] = [
            "name": "warm", "flavor": "tiny", "image": "builtin", "min": 1, "max": 3, "warm": 1, "policy": policy,
        ]
        let (made, created) = try cloud.json("POST", "/v1/projects/alpha/groups", body)
        try #require(made == 201 && created["warm"] as? Int == 1, "\(created)")
        let id = try #require(created["id"] as? String)
        var tooWarm = body
        tooWarm["name"] = "other"
        tooWarm["warm"] = 4
        #expect(try cloud.json("POST", "/v1/projects/alpha/groups", tooWarm).0 == 422, "warm above max")

        // One running member, one booted then suspended.
        let ready = try Self.wait(cloud, id, timeout: 90) { _, members in
            members.count == 2 && Self.count(members, "running") == 1 && Self.count(members, "suspended") == 1
        }
        try #require(
            ready, "the group did not settle at 1 running + 1 warm: \(ControlPlaneGroupTests.describe(cloud, id))")
        let (_, before) = try ControlPlaneGroupTests.group(cloud, id)
        let warmID = try #require(before.first { $0["state"] as? String == "suspended" }?["id"] as? String)
        let warmJournal = try cloud.json("GET", "/v1/guests/\(warmID)/journal").1["entries"] as? [[String: Any]] ?? []
        #expect(
            warmJournal.contains { ($0["cause"] as? String ?? "").contains("into warm capacity") }, "\(warmJournal)")

        // Scale out by hand: the warm member is resumed, not a new one booted.
        let asked = ContinuousClock.now
        let (set, setAnswer) = try cloud.json("PUT", "/v1/groups/\(id)/desired", ["desired": 2])
        try #require(set == 200, "\(setAnswer)")
        let resumed = try Self.wait(cloud, id, timeout: 60) { _, members in
            members.first { $0["id"] as? String == warmID }?["state"] as? String == "running"
        }
        let took = (ContinuousClock.now - asked) / .milliseconds(1)
        print("warm capacity: desired 1 → 2 to the warm member running: \(Int(took.rounded())) ms")
        #expect(resumed, "the warm member did not run again: \(ControlPlaneGroupTests.describe(cloud, id))")
        let journal = try cloud.json("GET", "/v1/guests/\(warmID)/journal").1["entries"] as? [[String: Any]] ?? []
        let causes = journal.compactMap { $0["cause"] as? String }
        print("warm member's journal:\n" + causes.joined(separator: "\n"))
        #expect(causes.contains { $0.contains("resumed from warm capacity") }, "\(causes)")
        #expect(journal.map { $0["to"] as? String ?? "" }.suffix(3) == ["suspended", "building", "running"])

        // The pool is refilled: a new member boots, then is suspended.
        let refilled = try Self.wait(cloud, id, timeout: 90) { _, members in
            members.count == 3 && Self.count(members, "running") == 2 && Self.count(members, "suspended") == 1
        }
        #expect(refilled, "the warm pool was not refilled: \(ControlPlaneGroupTests.describe(cloud, id))")
        let resumeMs = try Self.milliseconds(journal, from: "building", to: "running", last: true)
        let (_, after) = try ControlPlaneGroupTests.group(cloud, id)
        if let fresh = after.first(where: { !before.map { $0["id"] as? String }.contains($0["id"] as? String) }),
            let freshID = fresh["id"] as? String
        {
            let freshJournal =
                try cloud.json("GET", "/v1/guests/\(freshID)/journal").1["entries"] as? [[String: Any]] ?? []
            let bootMs = try Self.milliseconds(freshJournal, from: "building", to: "running", last: false)
            print("warm capacity: building → running \(resumeMs) ms resumed, \(bootMs) ms booted (the refill member)")
        }

        // Given up: every member goes, the warm one with the others.
        let (deleted, _) = try cloud.json("DELETE", "/v1/groups/\(id)")
        #expect(deleted == 200)
        let emptied = try Self.wait(cloud, id, timeout: 60) { _, members in members.isEmpty }
        #expect(
            emptied, "the deleted group's members were not all removed: \(ControlPlaneGroupTests.describe(cloud, id))")
    }
}
