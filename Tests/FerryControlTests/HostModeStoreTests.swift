import FerryHostModel
import FerryTestSupport
import Foundation
import Testing

@testable import FerryControl

/// A host's mode (drain, undrain) on every backend this run has: recorded with its time and
/// cause, the expected mode checked in the transaction, and a draining or drained host left out
/// by the scheduler for creates and moves alike, whatever its health.
@Suite struct HostModeStoreTests {
    @Test(arguments: StoreBackend.available)
    func aDrainedHostTakesNoGuestsUntilUndrained(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let store = try await backend.store(scratch)
        defer { backend.close(store) }
        _ = try await store.registerHost(host("h1", slots: 2))
        _ = try await store.registerHost(host("h2", slots: 2))
        let guest = try await GuestMoveStoreTests.runningGuest(store, "web")
        let first = guest.host

        let draining = try await store.setHostMode(first, to: .draining, from: nil, cause: "drain asked by ops")
        #expect(draining.mode == .draining && draining.modeCause == "drain asked by ops" && draining.modeSince != nil)
        #expect(!draining.takesGuests(at: Date(), heartbeatTimeout: .seconds(60)))
        #expect(try await store.hosts().first { $0.id == first } == draining)
        // Nothing new goes there: a create lands on the other host, a move there is refused.
        let second = try await GuestMoveStoreTests.runningGuest(store, "db")
        #expect(second.host != first)
        await #expect(throws: ControlError.self) {
            _ = try await store.beginMove(second.id, to: first, cause: "api", generation: nil)
        }
        // A heartbeat (the agent re-registering) does not undo the drain.
        let refreshed = try await store.registerHost(host(first, slots: 2))
        #expect(refreshed.mode == .draining)

        // The drain ends only from draining: an undrain made meanwhile wins.
        let drained = try await store.setHostMode(
            first, to: .drained, from: [.draining], cause: "drain: every guest left")
        #expect(drained.mode == .drained)
        let same = try await store.setHostMode(first, to: .drained, from: nil, cause: "again")
        #expect(same == drained, "the mode it has is no change")
        let back = try await store.setHostMode(first, to: .active, from: nil, cause: "undrain")
        #expect(back.mode == .active && back.takesGuests(at: Date(), heartbeatTimeout: .seconds(60)))
        await #expect(throws: ControlError.self) {
            _ = try await store.setHostMode(first, to: .drained, from: [.draining], cause: "a late end")
        }
        #expect(try await store.hosts().first { $0.id == first }?.mode == .active)
        await #expect(throws: ControlError.self) {
            _ = try await store.setHostMode("nowhere", to: .draining, from: nil, cause: "typo")
        }
    }
}
