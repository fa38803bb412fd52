import FerryHostModel
import Foundation
import Testing

@testable import FerryControl

/// `GroupPlan.consolidation`: the group's members and the store's hosts as the scale-in's
/// consolidation sees them (loaded by the policy's level, busy and warm members pin their hosts,
/// silent hosts take nothing).
@Suite struct GroupConsolidationTests {
    static let now = Date(timeIntervalSince1970: 1000)

    static func member(_ index: Int, on host: String, _ state: CloudGuestState = .running) -> CloudGuest {
        var member = GroupPlanTests.member(index, state)
        member.host = host
        return member
    }

    static func host(_ id: String, vcpus: Int = 4, silent: Bool = false) -> HostRecord {
        HostRecord(
            id: id, address: "http://10.0.0.2:7460", capacity: Resources(vcpus: vcpus, memoryBytes: 64, diskBytes: 64),
            health: .healthy, lastHeartbeat: silent ? now - 60 : now, registeredAt: now - 100)
    }

    /// Three members; web-3 (the newest, the policy's pick) alone on h2 and loaded (60 against a
    /// target of 50): web-2 goes instead and web-3 moves to h1.
    @Test func theNewestLoadedMemberMovesAndAnIdleOneGoes() throws {
        let members = [Self.member(1, on: "h1"), Self.member(2, on: "h1"), Self.member(3, on: "h2")]
        let group = GroupPlanTests.group(desired: 2)
        let load = [members[0].id: 10.0, members[1].id: 5.0, members[2].id: 60.0]
        let plan = GroupPlan.make(group: group, members: members, load: load, now: Self.now)
        #expect(plan.scaleIn.map(\.name.value) == ["web-3"])
        let usage = ["h1": Resources(vcpus: 2, memoryBytes: 2, diskBytes: 2)]
        let consolidation = try #require(
            GroupPlan.consolidation(
                plan, group: group, members: members, load: load, busy: [], hosts: [Self.host("h1"), Self.host("h2")],
                usage: usage, now: Self.now, heartbeatTimeout: .seconds(5)))
        #expect(consolidation.remove == [members[1].id.hex])
        #expect(consolidation.moves == [ConsolidationMove(member: members[2].id.hex, from: "h2", to: "h1")])
        #expect(consolidation.emptied == ["h2"])

        // h1 silent: no destination; h1 is emptied the other way, its idle member moving to h2.
        let silent = try #require(
            GroupPlan.consolidation(
                plan, group: group, members: members, load: load, busy: [],
                hosts: [Self.host("h1", silent: true), Self.host("h2")], usage: usage, now: Self.now,
                heartbeatTimeout: .seconds(5)))
        #expect(silent.moves == [ConsolidationMove(member: members[0].id.hex, from: "h1", to: "h2")])
        #expect(silent.remove == [members[1].id.hex] && silent.emptied == ["h1"])
        // h1 full (its 2 vCPUs left taken): the same.
        let full = try #require(
            GroupPlan.consolidation(
                plan, group: group, members: members, load: load, busy: [],
                hosts: [Self.host("h1", vcpus: 2), Self.host("h2")],
                usage: usage, now: Self.now, heartbeatTimeout: .seconds(5)))
        #expect(full.moves.allSatisfy { $0.to == "h2" } && full.emptied == ["h1"], "\(full)")
    }

    @Test func aWarmOrBusyMemberPinsItsHostAndAPendingScaleInIsLeftToThePlan() throws {
        let members = [
            Self.member(1, on: "h1"), Self.member(2, on: "h1"), Self.member(3, on: "h2"),
            Self.member(4, on: "h2", .suspended),
        ]
        let group = GroupPlanTests.group(desired: 2)
        let load = [members[0].id: 10.0, members[1].id: 5.0, members[2].id: 60.0]
        let plan = GroupPlan.make(group: group, members: members, load: load, now: Self.now)
        let hosts = [Self.host("h1"), Self.host("h2")]
        let pinned = try #require(
            GroupPlan.consolidation(
                plan, group: group, members: members, load: load, busy: [], hosts: hosts, usage: [:], now: Self.now,
                heartbeatTimeout: .seconds(5)))
        // h2 keeps its warm member: h1 is emptied instead, web-1 moving to h2 beside it.
        #expect(pinned.emptied == ["h1"] && pinned.remove == [members[1].id.hex], "\(pinned)")
        #expect(pinned.moves == [ConsolidationMove(member: members[0].id.hex, from: "h1", to: "h2")])

        let pending = [Self.member(1, on: "h1"), Self.member(2, on: "h2"), Self.member(3, on: "h1", .pending)]
        let pendingPlan = GroupPlan.make(group: group, members: pending, now: Self.now)
        #expect(pendingPlan.scaleIn.map(\.state) == [.pending])
        #expect(
            GroupPlan.consolidation(
                pendingPlan, group: group, members: pending, load: [:], busy: [], hosts: hosts, usage: [:],
                now: Self.now, heartbeatTimeout: .seconds(5)) == nil)
    }

    @Test func theLoadedLevelIsTheTargetOrTheThreshold() {
        #expect(GroupPlan.loadedLevel(.targetTracking(.init(metric: .cpu, target: 70))) == 70)
        let threshold = ScalingPolicy.threshold(
            .init(metric: .load, comparison: .below, threshold: 20, durationSeconds: 60, step: -1, cooldownSeconds: 60))
        #expect(GroupPlan.loadedLevel(threshold) == 20)
    }
}
