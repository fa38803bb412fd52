import FerryHostModel
import Foundation
import Testing

@testable import FerryControl

/// Warm capacity in the pure plan: suspended members are resumed before anything is created, the
/// pool is filled by booting members past desired and suspending them once they run, and a pool
/// larger than `warm` (or a deleted group's) is deleted.
@Suite struct GroupPlanWarmTests {
    static func group(desired: Int, warm: Int, state: ScalingGroupState = .active) -> ScalingGroup {
        var group = GroupPlanTests.group(desired: desired)
        group.warm = warm
        group.state = state
        return group
    }

    static func names(_ members: [CloudGuest]) -> [String] { members.map(\.name.value) }

    @Test func aNewGroupBootsItsWarmMembersWithItsLiveOnes() {
        let plan = GroupPlan.make(group: Self.group(desired: 2, warm: 1), members: [])
        #expect(plan.create.map(\.value) == ["web-1", "web-2", "web-3"])
        #expect(plan.resume.isEmpty && plan.suspend.isEmpty && plan.scaleIn.isEmpty && plan.delete.isEmpty)
    }

    @Test func aWarmMemberIsSuspendedOnlyOnceDesiredOnesRun() {
        let group = Self.group(desired: 1, warm: 1)
        // One runs, one still builds: nothing is suspended yet (the running one is needed).
        let booting = GroupPlan.make(
            group: group, members: [GroupPlanTests.member(1, .running), GroupPlanTests.member(2, .building)])
        #expect(booting.suspend.isEmpty && booting.scaleIn.isEmpty && booting.create.isEmpty)
        // Both run: the newest is suspended, nothing is taken out or made.
        let up = GroupPlan.make(
            group: group, members: [GroupPlanTests.member(1, .running), GroupPlanTests.member(2, .running)])
        #expect(Self.names(up.suspend) == ["web-2"])
        #expect(up.scaleIn.isEmpty && up.create.isEmpty && up.resume.isEmpty)
        // Settled: one running, one warm.
        let settled = GroupPlan.make(
            group: group, members: [GroupPlanTests.member(1, .running), GroupPlanTests.member(2, .suspended)])
        #expect(settled == GroupPlan(live: 1, create: [], scaleIn: [], delete: [], settling: false))
    }

    /// A member whose suspend is in flight (still `running` in the store) is warm already: the
    /// next pass neither suspends another nor takes one out.
    @Test func aMemberBeingSuspendedCountsAsWarm() {
        let members = [GroupPlanTests.member(1, .running), GroupPlanTests.member(2, .running)]
        let plan = GroupPlan.make(
            group: Self.group(desired: 1, warm: 1), members: members, busy: [members[1].id],
            suspending: [members[1].id])
        #expect(plan == GroupPlan(live: 1, create: [], scaleIn: [], delete: [], settling: false))
    }

    @Test func aScaleOutResumesWarmMembersFirstThenCreatesAndRefills() {
        let members = [
            GroupPlanTests.member(1, .running), GroupPlanTests.member(2, .suspended),
            GroupPlanTests.member(3, .suspended),
        ]
        // Desired 1 → 2: the oldest warm member is resumed; one is made to refill the pool of 2.
        let one = GroupPlan.make(group: Self.group(desired: 2, warm: 2), members: members)
        #expect(Self.names(one.resume) == ["web-2"])
        #expect(one.create.map(\.value) == ["web-4"])
        // Desired 1 → 4: both warm members resumed, one created for desired, two for the pool.
        let many = GroupPlan.make(group: Self.group(desired: 4, warm: 2), members: members)
        #expect(Self.names(many.resume) == ["web-2", "web-3"])
        #expect(many.create.map(\.value) == ["web-4", "web-5", "web-6"])
        #expect(many.suspend.isEmpty && many.scaleIn.isEmpty && many.delete.isEmpty)
    }

    @Test func aScaleInFillsThePoolBeforeItRemoves() {
        let members = (1...4).map { GroupPlanTests.member($0, .running) } + [GroupPlanTests.member(5, .suspended)]
        // Desired 4 → 1 with warm 2 (one warm already): one is suspended, two are stopped.
        let plan = GroupPlan.make(group: Self.group(desired: 1, warm: 2), members: members)
        #expect(Self.names(plan.suspend) == ["web-2"])
        #expect(Self.names(plan.scaleIn) == ["web-4", "web-3"])
        #expect(plan.create.isEmpty && plan.resume.isEmpty && plan.delete.isEmpty)
    }

    @Test func warmMembersBeyondThePoolAreDeletedAndBusyOnesLeftAlone() {
        let members = [
            GroupPlanTests.member(1, .running), GroupPlanTests.member(2, .suspended),
            GroupPlanTests.member(3, .suspended), GroupPlanTests.member(4, .suspended),
        ]
        let fewer = GroupPlan.make(group: Self.group(desired: 1, warm: 1), members: members)
        #expect(Self.names(fewer.delete) == ["web-4", "web-3"])
        let busy = GroupPlan.make(
            group: Self.group(desired: 2, warm: 1), members: members, busy: [members[1].id, members[3].id])
        #expect(Self.names(busy.resume) == ["web-3"], "a busy warm member is not resumed")
        #expect(busy.delete.isEmpty, "the busy one may be on its way out: the next pass looks again")
        let gone = GroupPlan.make(group: Self.group(desired: 0, warm: 1, state: .deleted), members: members)
        #expect(Self.names(gone.delete) == ["web-4", "web-3", "web-2"])
        #expect(Self.names(gone.scaleIn) == ["web-1"])
    }

    /// Random groups and members: the plan never resumes more than it lacks, never creates past
    /// `desired + warm`, and never leaves fewer running than desired by suspending.
    @Test func randomPlansKeepTheirPromises() {
        var random = SystemRandomNumberGenerator()
        let states: [CloudGuestState] = [.pending, .building, .running, .unknown, .suspended, .stopped, .error]
        for _ in 0..<2000 {
            let count = Int.random(in: 0...8, using: &random)
            let members = (0..<count).map { GroupPlanTests.member($0 + 1, states.randomElement(using: &random)!) }
            let group = Self.group(
                desired: .random(in: 0...6, using: &random), warm: .random(in: 0...3, using: &random))
            let plan = GroupPlan.make(group: group, members: members)
            let live = members.filter { GroupPlan.liveStates.contains($0.state) }.count
            let warm = members.filter { $0.state == .suspended }.count
            let running = members.filter { $0.state == .running }.count
            #expect(plan.resume.count == min(warm, max(0, group.desired - live)))
            #expect(live + warm + plan.create.count == max(live + warm, group.desired + group.warm))
            let stoppedRunning = plan.scaleIn.filter { $0.state == .running }.count
            #expect(plan.suspend.isEmpty || running - stoppedRunning - plan.suspend.count >= group.desired)
            #expect(plan.suspend.isEmpty || plan.suspend.count + warm <= group.warm)
            #expect(Set(plan.suspend.map(\.id)).isDisjoint(with: plan.scaleIn.map(\.id)))
        }
    }
}
