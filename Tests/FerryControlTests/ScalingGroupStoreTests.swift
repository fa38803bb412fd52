import FerryHostModel
import FerryTestSupport
import Foundation
import Testing

@testable import FerryControl

/// Auto-scaling groups in the store, on every backend this run has: created with their first
/// action, desired counts journaled, members made through the guest create (quota, placement,
/// the group's room checked in its transaction), deleted.
@Suite struct ScalingGroupStoreTests {
    static let tracking = ScalingPolicy.targetTracking(
        .init(metric: .load, target: 50, metricWindowSeconds: 3, scaleDownStabilisationSeconds: 5))

    static func submission(_ name: String = "web", min: Int = 1, max: Int = 4, desired: Int? = nil)
        -> ScalingGroupSubmission
    {
        ScalingGroupSubmission(
            project: "alpha", name: name, flavor: "small", image: "tiny", min: min, max: max, desired: desired,
            policy: tracking, scaleIn: .leastLoaded)
    }

    @Test(arguments: StoreBackend.available)
    func aGroupIsCreatedListedScaledAndDeleted(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let store = try await backend.store(scratch)
        defer { backend.close(store) }
        let group = try await store.createScalingGroup(Self.submission())
        #expect(group.desired == 1 && group.state == .active && group.policy == Self.tracking)
        #expect(group.scaleIn == .leastLoaded && group.lastActionAt == nil)
        #expect(try await store.scalingGroup(id: group.id) == group)
        #expect(try await store.scalingGroups(project: "alpha") == [group])
        #expect(try await store.scalingGroupsToReconcile().map(\.id) == [group.id])

        let taken = await controlError { () async throws(ControlError) in
            try await store.createScalingGroup(Self.submission())
        }
        #expect(taken?.code == .alreadyExists && taken?.message.contains("already has a group web") == true)

        let scaled = try await store.setDesired(group: group.id, to: 3, reason: "load 2 × the target")
        #expect(scaled.desired == 3 && scaled.lastActionAt != nil)
        #expect(try await store.setDesired(group: group.id, to: 3, reason: "again") == scaled, "no change, no action")
        let outside = await controlError { () async throws(ControlError) in
            try await store.setDesired(group: group.id, to: 5, reason: "too many")
        }
        #expect(outside?.code == .invalidArgument && outside?.message.contains("[1, 4]") == true)

        try await store.noteScalingAction(group: group.id, reason: "moved to consolidate")
        #expect(try await store.scalingGroup(id: group.id) == scaled, "a note changes neither desired nor the time")

        let deleted = try await store.deleteScalingGroup(id: group.id, reason: "user: delete")
        #expect(deleted.state == .deleted && deleted.desired == 0)
        #expect(try await store.deleteScalingGroup(id: group.id, reason: "again") == deleted)
        #expect(try await store.scalingGroupsToReconcile().isEmpty, "deleted, and no member holds capacity")
        let actions = try await store.scalingActions(group: group.id)
        #expect(actions.map(\.from) == [0, 1, 3, 3] && actions.map(\.to) == [1, 3, 3, 0])
        #expect(actions.map(\.reason) == ["created", "load 2 × the target", "moved to consolidate", "user: delete"])
        #expect(
            await controlError { () async throws(ControlError) in
                try await store.setDesired(group: group.id, to: 2, reason: "late")
            }?.code == .invalidArgument)
        // The name is free again once the group is deleted.
        #expect(try await store.createScalingGroup(Self.submission()).name == "web")
        #expect(try await store.scalingGroups(project: "alpha").count == 2)
    }

    @Test(arguments: StoreBackend.available)
    func aBadGroupIsRefusedNamingTheProblem(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let store = try await backend.store(scratch)
        defer { backend.close(store) }
        func refusal(_ submission: ScalingGroupSubmission) async -> ControlError? {
            await controlError { () async throws(ControlError) in try await store.createScalingGroup(submission) }
        }
        var unknown = Self.submission()
        unknown.flavor = "huge"
        #expect(await refusal(unknown)?.code == .notFound)
        unknown = Self.submission()
        unknown.project = "nobody"
        #expect(await refusal(unknown)?.code == .notFound)
        #expect(await refusal(Self.submission(min: 3, max: 2))?.code == .invalidArgument)
        #expect(await refusal(Self.submission(desired: 9))?.message.contains("outside the group's bounds") == true)
        #expect(await refusal(Self.submission("Web"))?.code == .invalidArgument)
        var badPolicy = Self.submission()
        badPolicy.policy = .targetTracking(.init(metric: .cpu, target: 0))
        #expect(await refusal(badPolicy)?.message.contains("target above zero") == true)
        badPolicy.policy = .threshold(
            .init(metric: .cpu, comparison: .above, threshold: 80, durationSeconds: 30, step: 0, cooldownSeconds: 60))
        #expect(await refusal(badPolicy)?.message.contains("step other than zero") == true)
        #expect(try await store.scalingGroups(project: "alpha").isEmpty)
    }

    /// Members go through the guest create: the group must have room (fewer live members than
    /// desired), the quota and the hosts are checked as for any guest, and the guest records its
    /// group.
    @Test(arguments: StoreBackend.available)
    func membersAreMadeOnlyWhileTheGroupHasRoom(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let store = try await backend.store(scratch)
        defer { backend.close(store) }
        _ = try await store.registerHost(host("h1", slots: 10))
        let group = try await store.createScalingGroup(Self.submission(desired: 2))
        func member(_ index: Int) async throws(ControlError) -> GuestCreation {
            let name = try! GroupPlan.memberName(group, index)
            return try await store.createGuest(
                GuestRequest(project: "alpha", name: name, flavor: "small", image: "tiny"),
                clientToken: GroupPlan.clientToken(group, name), cause: "group web: scale out",
                scalingGroup: group.id)
        }
        let first = try await member(1)
        #expect(first.created && first.guest.name.value == "web-1")
        #expect(try await member(1).created == false, "the same member again is the same guest")
        _ = try await member(2)
        let full = await controlError { () async throws(ControlError) in try await member(3) }
        #expect(full?.code == .stale && full?.message.contains("2 live members") == true, "\(String(describing: full))")
        _ = try await store.createGuest(request("loner"), clientToken: nil, cause: "api")
        let members = try await store.groupMembers(group: group.id)
        #expect(members.map(\.name.value) == ["web-1", "web-2"])

        _ = try await store.transition(members[1].id, from: .pending, to: .deleted, cause: "group web: scale in")
        #expect(try await member(3).guest.name.value == "web-3", "a deleted member leaves room")
        let deleted = try await store.deleteScalingGroup(id: group.id, reason: "user: delete")
        #expect(try await store.scalingGroupsToReconcile().map(\.id) == [deleted.id], "its members hold capacity")
        let refused = await controlError { () async throws(ControlError) in try await member(4) }
        #expect(refused?.message.contains("is deleted") == true)
        try await expectJournalAgreesWithGuests(store)
    }
}
