import FerryHostModel
import FerryTestSupport
import Foundation
import GRDB
import Testing

@testable import FerryControl

/// A guest's migration policy (`live_only`, `live_then_cold`) on every backend this run has: set
/// at the create, changed and journaled, kept by a repeated create; and the cold move it allows
/// a stopped guest, which then cannot be started or deleted until the move ends.
@Suite struct MigrationPolicyStoreTests {
    @Test(arguments: StoreBackend.available)
    func thePolicyIsSetAtTheCreateAndChangedJournaled(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let store = try await backend.store(scratch)
        defer { backend.close(store) }
        _ = try await store.registerHost(host("h1", slots: 4))
        let plain = try await store.createGuest(request("plain"), clientToken: nil, cause: "c").guest
        #expect(plain.migrationPolicy == .liveOnly)
        var asked = request("cold")
        asked.migrationPolicy = .liveThenCold
        let cold = try await store.createGuest(asked, clientToken: "t1", cause: "c").guest
        #expect(cold.migrationPolicy == .liveThenCold)
        #expect(try await store.guest(id: cold.id)?.migrationPolicy == .liveThenCold)

        let changed = try await store.setMigrationPolicy(plain.id, to: .liveThenCold, cause: "api: set by alice")
        #expect(changed.migrationPolicy == .liveThenCold && changed.generation == plain.generation + 1)
        #expect(try await store.guest(id: plain.id) == changed)
        let entry = try #require(try await store.journal(of: plain.id).last)
        #expect(entry.from == .pending && entry.to == .pending, "\(entry)")
        #expect(entry.cause == "migration policy live_only → live_then_cold (api: set by alice)", "\(entry.cause)")
        // The same policy again changes nothing, journals nothing.
        let again = try await store.setMigrationPolicy(plain.id, to: .liveThenCold, cause: "again")
        #expect(again == changed)
        #expect(try await store.journal(of: plain.id).count == 2)

        // A create repeated with the token after a change of policy gets the guest as it is now.
        _ = try await store.setMigrationPolicy(cold.id, to: .liveOnly, cause: "back")
        let repeated = try await store.createGuest(asked, clientToken: "t1", cause: "c")
        #expect(!repeated.created && repeated.guest.id == cold.id && repeated.guest.migrationPolicy == .liveOnly)

        _ = try await store.transition(plain.id, from: .pending, to: .deleted, cause: "gone")
        let refused = await controlError { () async throws(ControlError) in
            try await store.setMigrationPolicy(plain.id, to: .liveOnly, cause: "late")
        }
        #expect(refused?.code == .transitionRefused, "\(String(describing: refused))")
        let unknown = await controlError { () async throws(ControlError) in
            try await store.setMigrationPolicy(GuestID.random(), to: .liveOnly, cause: "none")
        }
        #expect(unknown?.code == .notFound)
        try await expectJournalAgreesWithGuests(store)
    }

    /// A stopped guest moves cold (never live); while it moves it is not started, suspended or
    /// deleted; the move's end releases its source's share.
    @Test(arguments: StoreBackend.available)
    func aStoppedGuestMovesColdAndIsLeftAloneWhileItMoves(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let store = try await backend.store(scratch)
        defer { backend.close(store) }
        _ = try await store.registerHost(host("h1", slots: 2))
        _ = try await store.registerHost(host("h2", slots: 2))
        let running = try await GuestMoveStoreTests.runningGuest(store, "web")
        _ = try await store.transition(running.id, from: .running, to: .stopping, cause: "stop")
        let stopped = try await store.transition(running.id, from: .stopping, to: .stopped, cause: "stopped")
        let live = await controlError { () async throws(ControlError) in
            try await store.beginMove(stopped.id, to: "h2", cause: "drain", generation: nil)
        }
        #expect(live?.code == .transitionRefused && live?.message.contains("only a running guest moves live") == true)

        let moving = try await store.beginMove(
            stopped.id, to: nil, cause: "drain of host h1: stopped, moved cold", generation: nil,
            maxMovesPerHost: 2, kind: .cold)
        #expect(moving.state == .stopped && moving.movingTo == "h2" && moving.host == "h1")
        #expect(try await store.hostUsage() == ["h1": small.resources, "h2": small.resources])
        for next in [CloudGuestState.building, .deleted] {
            let refused = await controlError { () async throws(ControlError) in
                try await store.transition(stopped.id, from: .stopped, to: next, cause: "user")
            }
            #expect(refused?.code == .transitionRefused, "\(next): \(String(describing: refused))")
            #expect(refused?.message.contains("is moving from host h1 to host h2") == true)
        }
        let moved = try await store.finishMove(stopped.id, cause: "cold migration m1 completed")
        #expect(moved.host == "h2" && moved.state == .stopped && moved.movingTo == nil)
        #expect(try await store.hostUsage() == ["h2": small.resources])
        _ = try await store.transition(stopped.id, from: .stopped, to: .building, cause: "start")
        try await expectJournalAgreesWithGuests(store)
    }

    /// A file written before the policy (migrations up to v11) opens: its guests read `live_only`.
    @Test func aFileFromBeforeThePolicyMigrates() async throws {
        let scratch = Scratch()
        let store = try await storeWithCatalogue(scratch)
        _ = try await store.registerHost(host("h1", slots: 2))
        let guest = try await store.createGuest(request("old"), clientToken: nil, cause: "c").guest
        try store.close()
        let path = scratch.file("control.sqlite")
        do {
            let old = try DatabaseQueue(path: path)
            try await old.write { db in
                try db.execute(sql: "ALTER TABLE guests DROP COLUMN migration_policy")
                try db.execute(sql: "DELETE FROM grdb_migrations WHERE identifier = 'v13-migration-policy'")
            }
            try old.close()
        }
        let reopened = try SQLiteControlStore(path: path, heartbeatTimeout: testHeartbeatTimeout, logger: quietLogger)
        #expect(try await reopened.guest(id: guest.id)?.migrationPolicy == .liveOnly)
        #expect(
            try await reopened.setMigrationPolicy(guest.id, to: .liveThenCold, cause: "c").migrationPolicy
                == .liveThenCold)
    }
}
