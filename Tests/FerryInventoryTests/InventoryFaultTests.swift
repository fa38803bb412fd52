import FerryHostModel
import FerryTestSupport
import Foundation
import GRDB
import Synchronization
import Testing

@testable import FerryInventory

/// Faults injected into the real database file: a transaction aborted halfway (by a trigger that
/// a second connection installs), two connections racing, schemas from an empty, an old, a
/// newer and a damaged file.
@Suite struct InventoryFaultTests {
    /// A trigger fails the journal insert, after the state UPDATE of the same transaction ran:
    /// the whole transaction rolls back, so the state and the journal never disagree.
    @Test func transactionAbortedHalfwayLeavesStateAndJournalAgreeing() throws {
        let scratch = Scratch()
        let path = scratch.file("inventory.sqlite")
        let inventory = try SQLiteInventory(path: path)
        _ = try inventory.create(try specification("web"), id: .random(), cause: "create")
        _ = try inventory.transition(guestName("web"), from: .defined, to: .starting, cause: "start")
        let other = try DatabaseQueue(path: path)
        try other.write { db in
            try db.execute(
                sql: """
                    CREATE TRIGGER fault_journal BEFORE INSERT ON journal WHEN NEW.cause = 'fault'
                    BEGIN SELECT RAISE(ABORT, 'injected fault: journal insert'); END
                    """)
        }
        let before = try inventory.guest(named: guestName("web"))
        let journalBefore = try inventory.journal(latest: 100)
        let error = inventoryError { () throws(InventoryError) in
            try inventory.transition(guestName("web"), from: .starting, to: .running, cause: "fault")
        }
        #expect(error?.code == .database)
        #expect(error?.cause?.contains("injected fault") == true)
        #expect(try inventory.guest(named: guestName("web")) == before)
        #expect(try inventory.journal(latest: 100) == journalBefore)
        // Seen from the other connection too (the rollback is in the file, not in a cache).
        #expect(try other.read { db in try String.fetchOne(db, sql: "SELECT state FROM guests") } == "starting")
        try expectJournalAgreesWithState(inventory)

        // The same for a removal (the DELETE ran, the journal insert failed).
        _ = try inventory.create(try specification("old"), id: .random(), cause: "create")
        #expect(
            inventoryError { () throws(InventoryError) in try inventory.remove(guestName("old"), cause: "fault") }
                != nil)
        #expect(try inventory.guest(named: guestName("old"))?.state == .defined)
        try other.write { db in try db.execute(sql: "DROP TRIGGER fault_journal") }
        _ = try inventory.transition(guestName("web"), from: .starting, to: .running, cause: "after the fault")
        try expectJournalAgreesWithState(inventory)
    }

    /// Two connections (as two agents on one state directory would have) change the same guests
    /// from two threads, each deciding from what it read: a change based on a stale read is
    /// refused, never applied on top, and the journal replays to the table's states.
    @Test func twoConnectionsRacingNeverLoseOrDuplicateAChange() throws {
        let scratch = Scratch()
        let path = scratch.file("inventory.sqlite")
        let first = try SQLiteInventory(path: path)
        let second = try SQLiteInventory(path: path)
        for name in ["a", "b"] {
            _ = try first.create(try specification(name), id: .random(), cause: "create")
            _ = try first.transition(guestName(name), from: .defined, to: .starting, cause: "start")
            _ = try first.transition(guestName(name), from: .starting, to: .running, cause: "up")
        }
        let applied = Atomic<Int>(0)
        let stale = Atomic<Int>(0)
        let connections = [first, second]
        DispatchQueue.concurrentPerform(iterations: 2) { index in
            let inventory = connections[index]
            for round in 0..<150 {
                let name = guestName(round % 2 == 0 ? "a" : "b")
                guard let record = try? inventory.guest(named: name) else { continue }
                let next: GuestState = record.state == .running ? .paused : .running
                do {
                    _ = try inventory.transition(
                        name, from: record.state, to: next, cause: "flip", generation: record.generation)
                    applied.add(1, ordering: .relaxed)
                } catch let error as InventoryError where error.code == .stale {
                    stale.add(1, ordering: .relaxed)
                } catch {
                    Issue.record("unexpected: \(error)")
                }
            }
        }
        let journal = try first.journal(latest: Int.max)
        #expect(journal.count == 6 + applied.load(ordering: .relaxed))
        #expect(applied.load(ordering: .relaxed) + stale.load(ordering: .relaxed) == 300)
        let generations = try second.guests().map(\.generation).reduce(0, +)
        #expect(Int(generations) == 6 + applied.load(ordering: .relaxed))
        try expectJournalAgreesWithState(second)
    }

    @Test func emptyFileGetsTheWholeSchema() throws {
        let scratch = Scratch()
        let path = scratch.file("inventory.sqlite")
        #expect(FileManager.default.createFile(atPath: path, contents: Data()))
        let inventory = try SQLiteInventory(path: path)
        let (migrations, journalMode, tables) = try inventory.pool.read { db in
            (
                try InventorySchema.migrator.appliedIdentifiers(db),
                try String.fetchOne(db, sql: "PRAGMA journal_mode"),
                try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            )
        }
        #expect(migrations == ["v1-guests-and-journal", "v2-missing-disks"])
        #expect(journalMode == "wal")
        #expect(tables.contains("guests") && tables.contains("journal"))
        #expect(try inventory.guests().isEmpty)
    }

    @Test func durabilitySettingReachesTheWriter() throws {
        let scratch = Scratch()
        for (durability, expected) in [(SQLiteInventory.Durability.full, 2), (.normal, 1)] {
            let inventory = try SQLiteInventory(path: scratch.file("\(durability).sqlite"), durability: durability)
            #expect(try inventory.pool.write { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") } == expected)
        }
    }

    /// A file written with only the first migration (as an older Ferry left it) is brought up to
    /// date, and its rows read back with the new column's default.
    @Test func olderSchemaIsMigratedKeepingItsRows() throws {
        let scratch = Scratch()
        let path = scratch.file("inventory.sqlite")
        let id = GuestID.random()
        let old = try DatabasePool(path: path)
        try InventorySchema.migrator.migrate(old, upTo: "v1-guests-and-journal")
        let spec = String(decoding: try JSONEncoder().encode(try specification("web")), as: UTF8.self)
        try old.write { db in
            try db.execute(
                sql: """
                    INSERT INTO guests (id, name, specification, state, state_since_ms, generation, created_ms, updated_ms)
                    VALUES (?, 'web', ?, 'stopped', 1000, 4, 1000, 1000);
                    INSERT INTO journal (guest_id, guest_name, time_ms, from_state, to_state, cause)
                    VALUES (?, 'web', 1000, NULL, 'stopped', 'older ferry');
                    """, arguments: [id.hex, spec, id.hex])
        }
        try old.close()
        let inventory = try SQLiteInventory(path: path)
        let record = try #require(try inventory.guest(named: guestName("web")))
        #expect(record.id == id && record.state == .stopped && record.generation == 4 && record.missingDisks.isEmpty)
        _ = try inventory.transition(guestName("web"), from: .stopped, to: .starting, cause: "start")
        try expectJournalAgreesWithState(inventory)
    }

    @Test func newerSchemaIsRefused() throws {
        let scratch = Scratch()
        let path = scratch.file("inventory.sqlite")
        try SQLiteInventory(path: path).close()
        let other = try DatabaseQueue(path: path)
        try other.write { db in try db.execute(sql: "INSERT INTO grdb_migrations VALUES ('v9-from-the-future')") }
        try other.close()
        let error = inventoryError { () throws(InventoryError) in try SQLiteInventory(path: path) }
        #expect(error?.code == .unusableDatabase)
        #expect(error?.message.contains("inventory \(path) was written by a newer Ferry") == true)
    }

    @Test func fileThatIsNotADatabaseIsRefusedNamingTheFileAndTheFix() throws {
        let scratch = Scratch()
        let path = scratch.file("inventory.sqlite")
        try Data(String(repeating: "not a database, just text\n", count: 200).utf8).write(
            to: URL(fileURLWithPath: path))
        let error = inventoryError { () throws(InventoryError) in try SQLiteInventory(path: path) }
        #expect(error?.code == .unusableDatabase)
        #expect(error?.message.contains("inventory \(path) is not a SQLite database or is damaged") == true)
        #expect(error?.message.contains("mv \(path) \(path).damaged") == true)
        // Nothing was written over it.
        #expect(try String(contentsOfFile: path, encoding: .utf8).hasPrefix("not a database"))
    }

    /// A real inventory whose table pages were overwritten (a damaged disk): refused at open.
    @Test func damagedDatabaseIsRefusedAtOpen() throws {
        let scratch = Scratch()
        let path = scratch.file("inventory.sqlite")
        let inventory = try SQLiteInventory(path: path)
        for index in 0..<40 {
            _ = try inventory.create(try specification("guest-\(index)"), id: .random(), cause: "create")
        }
        _ = try inventory.pool.writeWithoutTransaction { db in try db.checkpoint(.truncate) }
        try inventory.close()
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        let size = try handle.seekToEnd()
        #expect(size >= 3 * 4096)
        // Keep page 1 (the header and schema), scribble over the rest.
        try handle.seek(toOffset: 4096)
        try handle.write(contentsOf: Data(repeating: 0xA5, count: Int(size) - 4096))
        try handle.close()
        let error = inventoryError { () throws(InventoryError) in try SQLiteInventory(path: path) }
        #expect(error?.code == .unusableDatabase)
        #expect(error?.message.contains("inventory \(path)") == true)
        #expect(error?.message.contains("move it aside") == true)
    }
}
