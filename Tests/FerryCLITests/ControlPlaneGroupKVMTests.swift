import FerryTestSupport
import Foundation
import Testing

/// A group of KVM guests on three agents, each in a network namespace of its own, following a
/// load wave (high, low, high again: their vCPUs' CPU use as their VMMs measure it, driven through
/// their pace), checked
/// on its recorded timeline: it grows on each crest, shrinks in the trough only after its down
/// window, never leaves its bounds, and does not flap.
@Suite(.serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct ControlPlaneGroupKVMTests {
    @Test(.tags(.kvm), .skippable(.kvm), .enabled(if: Requirement.kvm.met, Requirement.kvm.why))
    func aGroupOfKVMGuestsFollowsALoadWave() throws {
        let cloud = try ControlPlaneFixture(
            "grpk", agents: 3, namespaced: Requirement.namespaces.met, controllerExtra: ["--scaling-interval", "0.5"])
        let policy: [String: Any] = [
            "type": "target_tracking", "metric": "cpu", "target": 30, "tolerance": 0.1, "metric_window_seconds": 3,
            "scale_down_stabilisation_seconds": 6,
        ]
        let body: [String: Any] = [
            "name": "wave", "flavor": "tiny", "image": "kvm", "min": 1, "max": 3, "policy": policy,
            "scale_in": "least_loaded",
        ]
        let (made, created) = try cloud.json("POST", "/v1/projects/alpha/groups", body)
        try #require(made == 201, "\(created)")
        let id = try #require(created["id"] as? String)
        let fixture = ControlPlaneGroupTests()
        let full = { (group: [String: Any], members: [[String: Any]]) in
            group["desired"] as? Int == 3 && members.count == 3
                && members.allSatisfy { $0["state"] as? String == "running" }
        }
        let idle = { (group: [String: Any], members: [[String: Any]]) in
            group["desired"] as? Int == 1 && members.count == 1
        }
        let phases: [(String, String, ([String: Any], [[String: Any]]) -> Bool)] = [
            ("crest", "400GB/s", full), ("trough", "100KB/s", idle), ("crest again", "400GB/s", full),
        ]
        var ends: [Date] = []
        for (name, rate, done) in phases {
            let reached = try ControlPlaneGroupTests.drive(cloud, id, rate: rate, timeout: 120, until: done)
            #expect(reached, "\(name) not reached: \(ControlPlaneGroupTests.describe(cloud, id))")
            if !reached { break }
            ends.append(Date())
        }
        let all = try fixture.actions(cloud, id)
        let summary = all.map { "\($0.from)→\($0.to) at \($0.time): \($0.reason)" }.joined(separator: "\n")
        print("group wave's timeline (KVM guests):\n\(summary)")
        #expect(all.allSatisfy { (1...3).contains($0.to) }, "bounds: \(summary)")
        // Up, down, up: the direction changes at most twice (no flapping inside a phase).
        let directions = all.dropFirst().map { $0.to > $0.from }
        let turns = zip(directions, directions.dropFirst()).filter { $0 != $1 }.count
        #expect(turns == 2, "up, down, up: \(summary)")
        // A scale-in only after the 6 s down window since the scale-out before it.
        for (index, action) in all.enumerated() where action.to < action.from {
            if let up = all[..<index].last(where: { $0.to > $0.from }) {
                #expect(action.time.timeIntervalSince(up.time) >= 5.9, "\(summary)")
            }
        }
        // Every member the group made ran a KVM guest: its running cause names its first line.
        let members = try cloud.json("GET", "/v1/groups/\(id)").1["members"] as? [[String: Any]] ?? []
        #expect(members.count >= 5, "three, then two more after the trough: \(members.count)")
        if let first = members.first?["id"] as? String {
            let journal = try cloud.json("GET", "/v1/guests/\(first)/journal").1["entries"] as? [[String: Any]] ?? []
            #expect("\(journal)".contains("first console line"), "\(journal)")
        }
    }
}
