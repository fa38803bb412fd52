import FerryHostModel
import Foundation
import Testing

@testable import FerryControl

/// The pure part of a group's reconciliation: which members to create, which to take out and in
/// what order, which to delete; and the group's metric from its members' samples.
@Suite struct GroupPlanTests {
    static func group(desired: Int, scaleIn: ScaleInOrder = .newest) -> ScalingGroup {
        ScalingGroup(
            id: "g1", project: "alpha", name: "web", flavor: "small", image: "tiny", min: 0, max: 10,
            desired: desired, policy: .targetTracking(.init(metric: .cpu, target: 50)), scaleIn: scaleIn,
            state: .active, createdAt: Date(timeIntervalSince1970: 0), lastActionAt: nil)
    }

    static func member(_ index: Int, _ state: CloudGuestState, createdSecond: Double? = nil) -> CloudGuest {
        let created = Date(timeIntervalSince1970: createdSecond ?? Double(index))
        return CloudGuest(
            id: try! GuestID(String(format: "%032x", index)),
            request: GuestRequest(
                project: "alpha", name: try! GuestName("web-\(index)"), flavor: "small", image: "tiny"),
            resources: Resources(vcpus: 1, memoryBytes: 1, diskBytes: 1), pricePerSecondMicros: 1, imageKind: .builtin,
            diskTemplatePath: "/t", host: "h1", state: state, errorReason: nil, clientToken: nil, generation: 1,
            createdAt: created, stateSince: created)
    }

    @Test func fewerLiveMembersThanDesiredMakesNewNamesNeverReused() {
        let members = [Self.member(1, .running), Self.member(2, .deleted), Self.member(3, .error)]
        let plan = GroupPlan.make(group: Self.group(desired: 3), members: members)
        #expect(plan.live == 1)
        #expect(plan.create.map(\.value) == ["web-4", "web-5"], "past the highest index any member had")
        #expect(plan.scaleIn.isEmpty && plan.delete.map(\.name.value) == ["web-3"] && !plan.settling)
        #expect(GroupPlan.clientToken(Self.group(desired: 1), plan.create[0]) == "group-g1-web-4")
    }

    @Test func theRightCountIsLeftAloneAndBuildingMembersSettle() {
        let members = [Self.member(1, .running), Self.member(2, .building), Self.member(3, .unknown)]
        let plan = GroupPlan.make(group: Self.group(desired: 3), members: members)
        #expect(plan == GroupPlan(live: 3, create: [], scaleIn: [], delete: [], settling: true))
    }

    /// A member that runs but has no metric yet holds the decision for the policy's window and
    /// 10 s after it started (15 s + 10 s here), no longer.
    @Test func aRunningMemberWithoutAMetricSettlesForAWhile() {
        let members = [Self.member(1, .running), Self.member(2, .running, createdSecond: 100)]
        let load = [members[0].id: 40.0]
        let group = Self.group(desired: 2)
        #expect(
            GroupPlan.make(group: group, members: members, load: load, now: Date(timeIntervalSince1970: 120)).settling)
        #expect(
            !GroupPlan.make(group: group, members: members, load: load, now: Date(timeIntervalSince1970: 126)).settling)
        #expect(
            !GroupPlan.make(
                group: group, members: members, load: [members[1].id: 1, members[0].id: 2],
                now: Date(timeIntervalSince1970: 120)
            ).settling)
    }

    @Test func scaleInTakesPendingFirstThenTheNewestRunning() {
        let members = [
            Self.member(1, .running), Self.member(2, .running), Self.member(3, .running, createdSecond: 10),
            Self.member(4, .pending), Self.member(5, .building), Self.member(6, .stopping),
        ]
        let plan = GroupPlan.make(group: Self.group(desired: 2), members: members)
        #expect(plan.live == 5 && plan.create.isEmpty)
        #expect(
            plan.scaleIn.map(\.name.value) == ["web-4", "web-3", "web-2"], "building is not taken, stopping is not live"
        )
    }

    @Test func leastLoadedTakesTheIdlestAndThoseWithoutAMetricFirst() {
        let members = (1...4).map { Self.member($0, .running) }
        let load: [GuestID: Double] = [members[0].id: 10, members[1].id: 90, members[2].id: 40]
        let plan = GroupPlan.make(group: Self.group(desired: 1, scaleIn: .leastLoaded), members: members, load: load)
        #expect(plan.scaleIn.map(\.name.value) == ["web-4", "web-1", "web-3"])
    }

    @Test func busyMembersAreLeftAlone() {
        let members = [Self.member(1, .running), Self.member(2, .running), Self.member(3, .stopped)]
        let plan = GroupPlan.make(
            group: Self.group(desired: 1), members: members, busy: [members[1].id, members[2].id])
        #expect(plan.scaleIn.map(\.name.value) == ["web-1"] && plan.delete.isEmpty)
    }

    @Test func aDeletedGroupRemovesEveryMember() {
        var group = Self.group(desired: 0)
        group.state = .deleted
        let plan = GroupPlan.make(group: group, members: [Self.member(1, .running), Self.member(2, .pending)])
        #expect(plan.scaleIn.count == 2 && plan.create.isEmpty)
    }

    /// Two guests: one at 100% CPU and load 800 ‰, one at 0% and 200 ‰, in the same seconds:
    /// the group's mean is 50% CPU and 50% load; each member's own mean is kept apart.
    @Test func theGroupsMetricIsTheMembersMean() throws {
        let a = Self.member(1, .running).id
        let b = Self.member(2, .running).id
        let samples: [GuestID: [GuestSample]] = [
            a: (0...3).map {
                GuestSample(
                    timeMilliseconds: Int64($0) * 1000, cpuNanoseconds: UInt64($0) * 1_000_000_000, vcpus: 1,
                    loadPermille: 800)
            },
            b: (0...3).map {
                GuestSample(timeMilliseconds: Int64($0) * 1000 + 10, cpuNanoseconds: 5, vcpus: 1, loadPermille: 200)
            },
        ]
        let cpu = GroupMetric.series(samples, metric: .cpu)
        #expect(cpu.count == 3 && cpu.allSatisfy { abs($0.value - 50) < 0.01 }, "\(cpu)")
        let load = GroupMetric.series(samples, metric: .load)
        #expect(load.allSatisfy { abs($0.value - 50) < 0.01 }, "\(load)")
        let each = GroupMetric.perMember(samples, metric: .cpu)
        #expect(abs((each[a] ?? 0) - 100) < 0.01 && each[b] == 0)
    }

    /// The group's policy with its bounds: target tracking through its history, a threshold
    /// through its cooldown from the group's last action.
    @Test func theGroupDecidesWithItsPolicyAndBounds() throws {
        var group = Self.group(desired: 2)
        group.min = 1
        group.max = 4
        let hot = (1...3).map { MetricSample(timeMilliseconds: 10_000 + Int64($0) * 1000, value: 150) }
        let up = try group.decide(current: 2, samples: hot, history: [], now: 13_000)
        #expect(up.desired == 4 && up.recommendation?.replicas == 6, "\(up)")

        group.policy = .threshold(
            .init(metric: .cpu, comparison: .above, threshold: 80, durationSeconds: 2, step: 1, cooldownSeconds: 30))
        #expect(try group.decide(current: 2, samples: hot, history: [], now: 13_000).desired == 3)
        group.lastActionAt = Date(timeIntervalSince1970: 5)
        let cooling = try group.decide(current: 2, samples: hot, history: [], now: 13_000)
        #expect(cooling.desired == 2 && cooling.reason.contains("last action was 8 s ago"), "\(cooling)")
    }

    @Test func aPolicyRoundTripsThroughItsJSON() throws {
        let policies: [ScalingPolicy] = [
            .targetTracking(.init(metric: .load, target: 60, tolerance: 0.05, metricWindowSeconds: 3)),
            .threshold(
                .init(
                    metric: .cpu, comparison: .below, threshold: 20, durationSeconds: 30, step: -1, cooldownSeconds: 60)
            ),
        ]
        for policy in policies {
            let text = ControlRules.policyJSON(policy, scaleIn: .leastLoaded)
            let back = try #require(ControlRules.policy(fromJSON: text))
            #expect(back.0 == policy && back.1 == .leastLoaded, "\(text)")
        }
        let minimal = #"{"type": "target_tracking", "metric": "cpu", "target": 70}"#
        let decoded = try JSONDecoder().decode(ScalingPolicy.self, from: Data(minimal.utf8))
        #expect(decoded == .targetTracking(.init(metric: .cpu, target: 70)))
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(ScalingPolicy.self, from: Data(#"{"type": "magic"}"#.utf8))
        }
    }
}
