import FerryHostModel
import FerryTestSupport
import Foundation
import Testing

@testable import FerryControl

/// Warm capacity in the store, on every backend this run has: a group's `warm` is kept; its room
/// is `desired + warm` members, live or suspended; a suspended member is journaled, keeps its
/// place and is not billed, and is resumed through `building` as a start is.
@Suite struct WarmCapacityStoreTests {
    @Test(arguments: StoreBackend.available)
    func aSuspendedMemberHoldsItsPlaceAndIsNotBilled(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let clock = BillingClock()
        let store = try await backend.store(scratch, clock: clock.read)
        defer { backend.close(store) }
        clock.set(0)
        _ = try await store.registerHost(host("h1", slots: 10))
        var submission = ScalingGroupStoreTests.submission(desired: 1)
        submission.warm = 1
        let group = try await store.createScalingGroup(submission)
        #expect(group.warm == 1)
        #expect(try await store.scalingGroup(id: group.id)?.warm == 1)
        func member(_ index: Int) async throws(ControlError) -> GuestCreation {
            let name = try! GroupPlan.memberName(group, index)
            return try await store.createGuest(
                GuestRequest(project: "alpha", name: name, flavor: "small", image: "tiny"),
                clientToken: GroupPlan.clientToken(group, name), cause: "group web: scale out",
                scalingGroup: group.id)
        }
        _ = try await member(1)
        let warm = try await member(2).guest
        #expect(await controlError { () async throws(ControlError) in try await member(3) }?.code == .stale)

        let steps: [(Int64, CloudGuestState, CloudGuestState)] = [
            (1, .pending, .building), (2, .building, .running), (3, .running, .suspended),
        ]
        for (seconds, from, to) in steps {
            clock.set(seconds)
            _ = try await store.transition(warm.id, from: from, to: to, cause: "group web: into warm capacity")
        }
        // Suspended: still a member (no room for a third), still holding its place on h1.
        #expect(await controlError { () async throws(ControlError) in try await member(3) }?.code == .stale)
        #expect(try await store.guests(states: [.suspended]).map(\.id) == [warm.id])
        let refused = await controlError { () async throws(ControlError) in
            try await store.transition(warm.id, from: .suspended, to: .running, cause: "no")
        }
        #expect(refused?.code == .transitionRefused, "a resume goes through building")
        for (seconds, from, to) in [
            (50, CloudGuestState.suspended, CloudGuestState.building), (51, .building, .running),
        ] {
            clock.set(Int64(seconds))
            _ = try await store.transition(warm.id, from: from, to: to, cause: "resumed from warm capacity")
        }
        clock.set(60)
        let invoice = try await store.invoice(
            project: "alpha", from: BillingClock.date(0), to: BillingClock.date(100), now: clock.now)
        let line = try #require(invoice.lines.first { $0.guestID == warm.id })
        #expect(line.billedMilliseconds == 1000 + 9000, "1 s before it was suspended, 9 s since it was resumed")
        let journal = try await store.journal(of: warm.id).map(\.to)
        #expect(journal == [.pending, .building, .running, .suspended, .building, .running])
        try await expectJournalAgreesWithGuests(store)
    }
}
