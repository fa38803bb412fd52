import FerryHostModel
import FerryTestSupport
import Foundation
import Testing

@testable import FerryControl

/// What a lease that ended with `at_end: suspend` leaves behind, on every backend this run has:
/// its suspended guests keep their places on their hosts, so later leases and on-demand guests
/// count that capacity as taken until the guests are deleted.
@Suite struct LeaseEndStoreTests {
    /// One host with room for 4 small guests; a lease of 2 delivered, its 2 guests running in the
    /// pool, then its end as the keeper carries it out for `suspend` (the guests `suspended`, the
    /// lease `ended`). Only 2 on-demand guests fit beside them; a lease of 3 is refused naming the
    /// shortfall (one small guest's resources); once the suspended guests are deleted, the same
    /// lease is admitted.
    @Test(arguments: StoreBackend.available)
    func suspendedGuestsOfAnEndedLeaseHoldTheirCapacity(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let clock = BillingClock()
        let store = try await backend.store(scratch, clock: clock.read)
        defer { backend.close(store) }
        _ = try await store.registerHost(host("h1", slots: 4))
        let members = try await Self.endedSuspendLease(store, count: 2, clock: clock)
        #expect(try await store.hostUsage()["h1"] == Resources(vcpus: 2, memoryBytes: 2 * gib, diskBytes: 20 * gib))

        // On-demand placement: two fit beside the suspended guests, the third does not.
        var onDemand: [CloudGuest] = []
        for index in 0..<2 {
            onDemand.append(try await store.createGuest(request("od\(index)"), clientToken: nil, cause: "api").guest)
        }
        #expect(await LeasePoolStoreTests.refusal(store, request("od2")) == .insufficientCapacity)
        for guest in onDemand {
            _ = try await store.transition(guest.id, from: .pending, to: .deleted, cause: "test")
        }

        // A later lease of 3 needs one unit the suspended guests hold.
        let later = LeaseSubmission(
            project: "alpha", flavor: "small", count: 3, start: clock.now + 60, end: clock.now + 3600,
            atEnd: .suspend)
        let refusal = await controlError { () async throws(ControlError) in try await store.admitLease(later) }
        #expect(refusal?.code == .insufficientCapacity, "\(String(describing: refusal))")
        #expect(
            refusal?.message.contains("falls short by \(small.resources)") == true, "\(String(describing: refusal))")

        for guest in members {
            _ = try await store.transition(guest.id, from: .suspended, to: .deleted, cause: "user: delete")
        }
        #expect(try await store.hostUsage()["h1"] ?? .zero == .zero)
        let admitted = try await store.admitLease(later)
        #expect(admitted.state == .admitted && admitted.count == 3)
    }

    /// Before its end too: a `suspend` lease's units count for ever in admission (its guests
    /// will be kept suspended after its end), so a lease of 3 for a window after its end is
    /// refused on a host of 4, and admitted once that lease is cancelled; a `stop` lease's
    /// units count only in its window.
    @Test(arguments: StoreBackend.available)
    func aSuspendLeaseHoldsItsUnitsPastItsEndUntilItEnds(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let store = try await backend.store(scratch)
        defer { backend.close(store) }
        _ = try await store.registerHost(host("h1", slots: 4))
        let now = Date()
        func submission(_ count: Int, _ start: Date, _ end: Date, _ atEnd: LeaseEnd) -> LeaseSubmission {
            LeaseSubmission(project: "alpha", flavor: "small", count: count, start: start, end: end, atEnd: atEnd)
        }
        // Starts far enough ahead that a stalled task on a loaded machine cannot put them in the past.
        let suspending = try await store.admitLease(submission(2, now + 900, now + 1800, .suspend))
        let later = submission(3, now + 3600, now + 7200, .stop)
        let refusal = await controlError { () async throws(ControlError) in try await store.admitLease(later) }
        #expect(refusal?.code == .insufficientCapacity, "\(String(describing: refusal))")
        #expect(
            refusal?.message.contains("falls short by \(small.resources)") == true, "\(String(describing: refusal))")

        _ = try await store.cancelLease(id: suspending.id)
        let stopping = try await store.admitLease(submission(2, now + 900, now + 1800, .stop))
        let admitted = try await store.admitLease(later)
        #expect(admitted.state == .admitted && stopping.state == .admitted)
    }

    /// A lease of `count` small guests of project alpha for the minute from now, delivered, as
    /// many guests created into its pool and run; the clock past its end, then ended as the keeper
    /// ends a `suspend` lease: its guests suspended (journal causes naming the lease), the lease
    /// `ended`. The guests, suspended.
    static func endedSuspendLease(_ store: any ControlStore, count: Int, clock: BillingClock) async throws
        -> [CloudGuest]
    {
        let lease = try await store.admitLease(
            LeaseSubmission(
                project: "alpha", flavor: "small", count: count, start: clock.now, end: clock.now + 60,
                atEnd: .suspend))
        let (_, plan) = try await store.planLeaseDelivery(id: lease.id)
        #expect(plan.short == 0 && plan.moves.isEmpty)
        _ = try await store.changeLease(id: lease.id, to: .active, shortUnits: 0, note: "delivered")
        var running: [CloudGuest] = []
        for index in 0..<count {
            let asked = GuestRequest(
                project: "alpha", name: try GuestName("p\(index)"), flavor: "small", image: "tiny", lease: lease.id)
            let guest = try await store.createGuest(asked, clientToken: nil, cause: "api").guest
            running.append(try await LeasePoolStoreTests.run(store, guest))
        }
        clock.set(61)
        var members: [CloudGuest] = []
        for running in running {
            members.append(
                try await store.transition(
                    running.id, from: .running, to: .suspended,
                    cause: "lease \(lease.id): its window ended (at_end: suspend)"))
        }
        let ended = try await store.changeLease(id: lease.id, to: .ended, shortUnits: 0, note: "window ended")
        #expect(ended.slots.isEmpty)
        return members
    }
}
