import FerryHostModel
import FerryTestSupport
import Foundation
import GRDB
import Synchronization
import Testing

@testable import FerryControl

/// What only the SQLite store has: a file, and SQLite's write lock.
@Suite struct SQLiteControlStoreTests {
    /// The file reopens with everything in it; a file that is not a database is refused by name.
    @Test func theFileReopensAndGarbageIsRefused() async throws {
        let scratch = Scratch()
        let path = scratch.file("control.sqlite")
        let id: GuestID
        do {
            let store = try await storeWithCatalogue(scratch)
            _ = try await store.registerHost(host("h1", slots: 2))
            id = try await store.createGuest(request("a"), clientToken: "tok", cause: "c").guest.id
            try store.close()
        }
        let reopened = try SQLiteControlStore(path: path)
        #expect(try await reopened.guest(id: id)?.clientToken == "tok")
        #expect(try await reopened.flavors().map(\.name) == ["large", "small"])
        let garbage = scratch.file("garbage.sqlite")
        #expect(FileManager.default.createFile(atPath: garbage, contents: Data(repeating: 0x41, count: 8192)))
        let error = await controlError { () async throws(ControlError) in try SQLiteControlStore(path: garbage) }
        #expect(error?.code == .unusableDatabase && error!.message.contains(garbage))
    }

    /// A file written before hosts had a KVM flag (migrations up to v2) opens: its hosts read as
    /// without KVM until their agents report again, and a re-registration sets the flag.
    @Test func aFileFromBeforeTheKVMFlagMigrates() async throws {
        let scratch = Scratch()
        let path = scratch.file("control.sqlite")
        do {
            let old = try DatabaseQueue(path: path)
            try ControlSchema.migrator.migrate(old, upTo: "v2-accounts")
            try await old.write { db in
                try db.execute(
                    sql: "INSERT INTO hosts VALUES ('h1', 'http://10.0.0.2:7460', 4, 1073741824, 0, 'healthy', 1, 1)")
            }
            try old.close()
        }
        let store = try SQLiteControlStore(path: path, heartbeatTimeout: testHeartbeatTimeout, logger: quietLogger)
        #expect(try await store.hosts().map(\.kvm) == [false])
        let again = HostRegistration(id: "h1", address: "http://10.0.0.2:7460", capacity: .zero, kvm: true)
        #expect(try await store.registerHost(again).kvm)
        #expect(try await store.hosts().map(\.kvm) == [true])
    }

    /// Another connection holds the write lock past the busy timeout: the create fails naming the
    /// lock and the file, writes nothing, and succeeds once the lock is released.
    @Test func aWriteLockHeldTooLongFailsTheCreateCleanly() async throws {
        let scratch = Scratch()
        _ = try await storeWithCatalogue(scratch)
        let store = try SQLiteControlStore(
            path: scratch.file("control.sqlite"), heartbeatTimeout: testHeartbeatTimeout, busyTimeout: .seconds(1),
            logger: quietLogger)
        _ = try await store.registerHost(host("h1", slots: 2))
        let other = try DatabaseQueue(path: store.path)
        // The other connection holds its transaction on a thread of its own until released.
        let held = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        let holder = Thread {
            try? other.inTransaction(.immediate) { _ in
                held.signal()
                release.wait()
                return .rollback
            }
        }
        holder.start()
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                held.wait()
                continuation.resume()
            }
        }
        let error = await controlError { () async throws(ControlError) in
            try await store.createGuest(request("web"), clientToken: "t", cause: "create")
        }
        release.signal()
        try other.inDatabase { db in try db.execute(sql: "SELECT 1") }
        #expect(
            error?.code == .database && error!.message.contains("stayed locked") && error!.message.contains(store.path))
        #expect(try await store.guests(project: "alpha").isEmpty)
        #expect(try await store.journal(latest: 10).isEmpty)
        #expect(try await store.createGuest(request("web"), clientToken: "t", cause: "create").created)
    }
}
