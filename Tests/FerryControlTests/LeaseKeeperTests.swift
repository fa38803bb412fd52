import FerryAgent
import FerryHostModel
import FerryTestSupport
import FerryTransport
import Foundation
import GRDB
import PostgresNIO
import Testing

@testable import FerryControl
@testable import FerryControlPostgres
@testable import FerryController

/// The controller's `LeaseKeeper` over a real store, on every backend this run has: a short
/// lease is written only when its plan changes (a trigger counts the lease row's updates), and a
/// `suspend` lease whose host does not answer ends anyway, its note saying which guest was not
/// suspended and why.
@Suite struct LeaseKeeperTests {
    /// Two hosts with room for one small guest each, a lease of two delivered on both; the
    /// second host degraded: the lease is short by one. Five more passes change nothing and
    /// write nothing (before, each pass rewrote the lease twice); the host healthy again, the
    /// next pass writes the lease `active`.
    @Test(arguments: StoreBackend.available)
    func aShortLeaseIsWrittenOnlyWhenItsPlanChanges(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let store = try await backend.store(scratch)
        defer { backend.close(store) }
        _ = try await store.registerHost(host("h1", slots: 1))
        _ = try await store.registerHost(host("h2", slots: 1))
        let keeper = Self.keeper(store)
        let lease = try await store.admitLease(
            LeaseSubmission(project: "alpha", flavor: "small", count: 2, start: Date(), end: Date() + 3600))
        try await keeper.pass()
        #expect(try await store.lease(id: lease.id)?.slots == ["h1": 1, "h2": 1])
        try await Self.countLeaseWrites(store)

        _ = try await store.heartbeat(host: "h2", health: .degraded)
        try await keeper.pass()
        let short = try #require(try await store.lease(id: lease.id))
        #expect(short.phase == .short && short.shortUnits == 1 && short.slots == ["h1": 1], "\(short)")
        let afterShort = try await Self.leaseWrites(store)
        #expect(afterShort > 0, "the change to short was written")

        for _ in 0..<5 { try await keeper.pass() }
        #expect(try await Self.leaseWrites(store) == afterShort, "passes that change nothing write nothing")
        #expect(try await store.lease(id: lease.id) == short)

        _ = try await store.heartbeat(host: "h2", health: .healthy)
        try await keeper.pass()
        let back = try #require(try await store.lease(id: lease.id))
        #expect(back.phase == .active && back.slots == ["h1": 1, "h2": 1] && back.shortSince == nil, "\(back)")
        #expect(try await Self.leaseWrites(store) > afterShort)
    }

    /// A `suspend` lease's guest on a host whose agent does not answer (nothing listens at its
    /// address): at the window's end the suspend fails, so does the graceful stop; the lease
    /// ends all the same, its note naming the guest and both reasons, the guest's journal the
    /// lease.
    @Test(arguments: StoreBackend.available)
    func aSuspendLeaseWhoseHostDoesNotAnswerEndsSayingWhy(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let store = try await backend.store(scratch)
        defer { backend.close(store) }
        _ = try await store.registerHost(
            HostRegistration(
                id: "h1", address: "127.0.0.1:1",
                capacity: Resources(vcpus: 4, memoryBytes: 4 * gib, diskBytes: 40 * gib)))
        let lease = try await store.admitLease(
            LeaseSubmission(
                project: "alpha", flavor: "small", count: 1, start: Date(), end: Date() + 3600, atEnd: .suspend))
        try await Self.keeper(store).pass()
        #expect(try await store.lease(id: lease.id)?.phase == .active)
        let asked = GuestRequest(
            project: "alpha", name: try GuestName("p0"), flavor: "small", image: "tiny", lease: lease.id)
        let guest = try await LeasePoolStoreTests.run(
            store, try await store.createGuest(asked, clientToken: nil, cause: "api").guest)

        // The keeper's clock past the window's end.
        try await Self.keeper(store, clock: { Date() + 7200 }).pass()
        let ended = try #require(try await store.lease(id: lease.id))
        #expect(ended.phase == .ended && ended.slots.isEmpty, "\(ended)")
        #expect(ended.note.contains("0 guests suspended"), "\(ended.note)")
        #expect(ended.note.contains("guest \(guest.id) not suspended (host h1 did not suspend"), "\(ended.note)")
        #expect(ended.note.contains("nor stopped ("), "\(ended.note)")
        let after = try #require(try await store.guest(id: guest.id))
        #expect(after.state == .error, "the stop failed too: \(after)")
        let causes = try await store.journal(of: guest.id).map(\.cause)
        #expect(
            causes.contains { $0.contains("lease \(lease.id): its window ended") && $0.contains("not suspended") },
            "\(causes)")
    }

    /// One pool of threads for every keeper of these tests (a pool must be shut down before it
    /// goes; this one lives as long as the process).
    static let work = BlockingWork(threads: 2)

    static func keeper(_ store: any ControlStore, clock: @escaping @Sendable () -> Date = { Date() }) -> LeaseKeeper {
        let provisioner = GuestProvisioner(
            store: store, key: try! SharedKey(bytes: Array(repeating: 7, count: 32)), work: work,
            bootTimeout: .seconds(5), logger: quietLogger)
        return LeaseKeeper(
            store: store, provisioner: provisioner, heartbeatTimeout: testHeartbeatTimeout, clock: clock,
            logger: quietLogger
        ) { guest, _, _ throws(ControlError) in
            Issue.record("no guest is in the way of these leases: \(guest)")
        }
    }

    /// Installs a trigger that counts the updates of lease rows (`leaseWrites`).
    static func countLeaseWrites(_ store: any ControlStore) async throws {
        if let store = store as? SQLiteControlStore {
            try await store.writing("count lease writes in") { db in
                try db.execute(
                    sql: """
                        CREATE TABLE test_lease_writes (n INTEGER);
                        CREATE TRIGGER test_count_lease_writes AFTER UPDATE ON leases
                        BEGIN INSERT INTO test_lease_writes VALUES (1); END;
                        """)
            }
        } else if let store = store as? PostgresControlStore {
            try await store.writing("count lease writes in") { connection in
                for sql in [
                    "CREATE TABLE test_lease_writes (n INTEGER)",
                    """
                    CREATE FUNCTION test_count_lease_write() RETURNS trigger LANGUAGE plpgsql AS
                    $$ BEGIN INSERT INTO test_lease_writes VALUES (1); RETURN NULL; END $$
                    """,
                    """
                    CREATE TRIGGER test_count_lease_writes AFTER UPDATE ON leases FOR EACH ROW
                    EXECUTE FUNCTION test_count_lease_write()
                    """,
                ] {
                    try await connection.query(PostgresQuery(unsafeSQL: sql), logger: quietLogger)
                }
            }
        } else {
            Issue.record("no way to count the writes of \(type(of: store))")
        }
    }

    static func leaseWrites(_ store: any ControlStore) async throws -> Int {
        if let store = store as? SQLiteControlStore {
            return try await store.reading("count lease writes in") { db in
                try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM test_lease_writes") ?? -1
            }
        }
        let postgres = try #require(store as? PostgresControlStore)
        return try await postgres.reading("count lease writes in") { connection in
            try await PostgresRows.all(
                connection, PostgresQuery(unsafeSQL: "SELECT COUNT(*)::BIGINT AS n FROM test_lease_writes"),
                logger: quietLogger
            ) { row in Int(try row["n"].decode(Int64.self)) }[0]
        }
    }
}
