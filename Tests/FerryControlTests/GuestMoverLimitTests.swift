import FerryAgent
import FerryHostModel
import FerryTestSupport
import FerryTransport
import Foundation
import Logging
import Testing

@testable import FerryControl
@testable import FerryController

/// `GuestMover`'s limit of moves per host on a real store (both backends): the API's way
/// (`begin`) is refused at the limit; the controller's own way (`beginInTurn`, which `move` and
/// so the LeaseKeeper's and the groups' moves take) waits until a move of the host has ended, or
/// until the move timeout.
@Suite struct GuestMoverLimitTests {
    static func mover(_ store: any ControlStore, timeout: Duration) -> GuestMover {
        GuestMover(
            store: store, key: .random(), work: BlockingWork(threads: 1), timeout: timeout, maxMovesPerHost: 1,
            logger: Logger(label: "test"))
    }

    @Test(arguments: StoreBackend.available)
    func aMoveTheControllerChoosesWaitsForItsTurn(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let store = try await backend.store(scratch)
        defer { backend.close(store) }
        _ = try await store.registerHost(host("h1", slots: 3))
        var guests: [CloudGuest] = []
        for name in ["a", "b", "c"] { guests.append(try await GuestMoveStoreTests.runningGuest(store, name)) }
        _ = try await store.registerHost(host("h2", slots: 3))
        let mover = Self.mover(store, timeout: .seconds(60))

        _ = try await mover.begin(guests[0].id, to: "h2")
        let refused = await controlError { () async throws(ControlError) in
            try await mover.begin(guests[1].id, to: "h2")
        }
        #expect(refused?.code == .moveLimit && refused?.message.contains("--max-moves-per-host 1") == true)

        let second = guests[1].id
        let waiting = Task { try await mover.beginInTurn(second, to: "h2", cause: "test") }
        // Not begun while the first move runs (each refusal is retried every 250 ms).
        try await Task.sleep(for: .milliseconds(800))
        #expect(try await store.guest(id: guests[1].id)?.movingTo == nil, "it waits")
        _ = try await store.finishMove(guests[0].id, cause: "done")
        let begun = try await waiting.value
        #expect(begun.movingTo == "h2" && begun.host == "h1")

        // A turn that does not come within the move timeout: the limit's refusal.
        let impatient = Self.mover(store, timeout: .milliseconds(600))
        let started = ContinuousClock.now
        let late = await controlError { () async throws(ControlError) in
            try await impatient.beginInTurn(guests[2].id, to: "h2", cause: "test")
        }
        #expect(late?.code == .moveLimit && ContinuousClock.now - started >= .milliseconds(600))
        #expect(try await store.guest(id: guests[2].id)?.movingTo == nil)
    }
}
