import FerryHostModel
import Foundation
import GRDB

extension SQLiteInventory {
    public func create(_ specification: GuestSpecification, id: GuestID, cause: String) throws(InventoryError)
        -> GuestRecord
    {
        do { try specification.validate() } catch {
            throw InventoryError(.invalidSpecification, "guest \(specification.name): \(error)", cause: error)
        }
        let record = try writing("create guest \(specification.name) in") { db in
            try self.insertNew(db, id: id, specification: specification, state: .defined, process: nil, cause: cause)
        }
        logger.info("guest defined", metadata: ["guest.name": "\(record.name)", "guest.id": "\(id)"])
        return record
    }

    public func guest(named name: GuestName) throws(InventoryError) -> GuestRecord? {
        try reading("read guest \(name) from") { db in try self.fetch(db, name: name) }
    }

    public func guest(id: GuestID) throws(InventoryError) -> GuestRecord? {
        try reading("read guest \(id) from") { db in
            try Row.fetchOne(db, sql: "SELECT \(GuestRow.columns) FROM guests WHERE id = ?", arguments: [id.hex])
                .map { row in try GuestRow.record(row, file: self.path) }
        }
    }

    public func guests() throws(InventoryError) -> [GuestRecord] {
        try reading("list the guests of") { db in
            try Row.fetchAll(db, sql: "SELECT \(GuestRow.columns) FROM guests ORDER BY name")
                .map { row in try GuestRow.record(row, file: self.path) }
        }
    }

    public func transition(
        _ name: GuestName, from expected: GuestState, to next: GuestState, cause: String, generation: Int64?
    ) throws(InventoryError) -> GuestRecord {
        let record = try writing("change the state of guest \(name) in") { db in
            let current = try self.current(db, name, state: expected, generation: generation)
            return try self.changeState(db, current, to: next, cause: cause, at: GuestRow.now())
        }
        logger.info(
            "guest state changed",
            metadata: [
                "guest.name": "\(name)", "guest.from": "\(expected.rawValue)", "guest.to": "\(next.rawValue)",
                "guest.cause": "\(cause)",
            ])
        return record
    }

    public func recordProcess(_ name: GuestName, _ facts: ProcessFacts?, generation: Int64?) throws(InventoryError)
        -> GuestRecord
    {
        try writing("record the process of guest \(name) in") { db in
            let current = try self.current(db, name, state: nil, generation: generation)
            return try self.update(db, current, at: GuestRow.now()) { $0.process = facts }
        }
    }

    public func remove(_ name: GuestName, cause: String) throws(InventoryError) -> JournalEntry {
        let entry = try writing("remove guest \(name) from") { db in
            let current = try self.current(db, name, state: nil, generation: nil)
            guard current.state.removable else {
                throw InventoryError(
                    .notRemovable,
                    "guest \(name) is \(current.state.rawValue), so a process may run it: stop it first"
                        + (current.state == .migratingOut
                            ? " or let its migration finish (the handoff removes it)" : ""))
            }
            return try self.deleteRow(db, current, cause: cause)
        }
        logger.info("guest removed", metadata: ["guest.name": "\(name)", "guest.cause": "\(cause)"])
        return entry
    }

    public func removeAfterHandoff(_ name: GuestName, cause: String, generation: Int64?) throws(InventoryError)
        -> JournalEntry
    {
        let entry = try writing("remove guest \(name) after its handoff from") { db in
            let current = try self.current(db, name, state: nil, generation: generation)
            guard current.state == .migratingOut else {
                throw InventoryError(
                    .notRemovable,
                    "guest \(name) is \(current.state.rawValue), not migrating-out: only a guest whose outgoing"
                        + " migration handed it off leaves this way")
            }
            return try self.deleteRow(db, current, cause: cause)
        }
        logger.info("guest handed off", metadata: ["guest.name": "\(name)", "guest.cause": "\(cause)"])
        return entry
    }

    public func reserveIncoming(
        _ specification: GuestSpecification, id: GuestID, capacity: IncomingCapacity, cause: String
    ) throws(InventoryError) -> GuestRecord {
        do { try specification.validate() } catch {
            throw InventoryError(.invalidSpecification, "guest \(specification.name): \(error)", cause: error)
        }
        let record = try writing("reserve arriving guest \(specification.name) in") { db in
            guard specification.vcpus <= capacity.vcpus else {
                throw InventoryError(
                    .insufficientCapacity,
                    "guest \(specification.name) has \(specification.vcpus) vCPUs; this host has \(capacity.vcpus):"
                        + " migrate it to a larger host")
            }
            let used = try self.guestsInDatabase(db).filter(\.state.hasProcess).map(\.specification.memoryBytes)
                .reduce(0, +)
            guard used + specification.memoryBytes <= capacity.memoryBytes else {
                throw InventoryError(
                    .insufficientCapacity,
                    "guest \(specification.name) needs \(specification.memoryBytes) bytes of memory; this host's guests"
                        + " hold \(used) of \(capacity.memoryBytes): stop a guest here or choose another host")
            }
            return try self.insertNew(
                db, id: id, specification: specification, state: .migratingIn, process: nil, cause: cause)
        }
        logger.info("arriving guest reserved", metadata: ["guest.name": "\(record.name)", "guest.id": "\(id)"])
        return record
    }

    public func removeFailedArrival(_ name: GuestName, cause: String) throws(InventoryError) -> JournalEntry {
        let entry = try writing("remove arriving guest \(name) from") { db in
            let current = try self.current(db, name, state: nil, generation: nil)
            guard current.state == .migratingIn else {
                throw InventoryError(
                    .notRemovable,
                    "guest \(name) is \(current.state.rawValue), not migrating-in: only an arrival that failed"
                        + " leaves this way")
            }
            return try self.deleteRow(db, current, cause: cause)
        }
        logger.info("arrival removed", metadata: ["guest.name": "\(name)", "guest.cause": "\(cause)"])
        return entry
    }

    // MARK: - Inside a transaction

    func guestsInDatabase(_ db: Database) throws -> [GuestRecord] {
        try Row.fetchAll(db, sql: "SELECT \(GuestRow.columns) FROM guests ORDER BY name")
            .map { row in try GuestRow.record(row, file: self.path) }
    }

    func fetch(_ db: Database, name: GuestName) throws -> GuestRecord? {
        try Row.fetchOne(db, sql: "SELECT \(GuestRow.columns) FROM guests WHERE name = ?", arguments: [name.value])
            .map { row in try GuestRow.record(row, file: path) }
    }

    /// The guest's row, checked against what the caller expects it to be.
    func current(_ db: Database, _ name: GuestName, state: GuestState?, generation: Int64?) throws -> GuestRecord {
        guard let record = try fetch(db, name: name) else {
            throw InventoryError(.notFound, "no guest named \(name) in inventory \(path)")
        }
        if let state, record.state != state {
            throw InventoryError(
                .stale,
                "guest \(name) is \(record.state.rawValue), not \(state.rawValue) (changed since it was read):"
                    + " read it again and decide again")
        }
        if let generation, record.generation != generation {
            throw InventoryError(
                .stale,
                "guest \(name) is at generation \(record.generation), not \(generation) (changed since it was read):"
                    + " read it again and decide again")
        }
        return record
    }

    func insertNew(
        _ db: Database, id: GuestID, specification: GuestSpecification, state: GuestState, process: ProcessFacts?,
        cause: String
    ) throws -> GuestRecord {
        if try fetch(db, name: specification.name) != nil {
            throw InventoryError(
                .alreadyExists, "a guest named \(specification.name) already exists: choose another name")
        }
        if try Bool.fetchOne(db, sql: "SELECT 1 FROM guests WHERE id = ?", arguments: [id.hex]) != nil {
            throw InventoryError(.alreadyExists, "a guest with ID \(id) already exists (named otherwise)")
        }
        let now = GuestRow.now()
        let record = GuestRecord(
            id: id, specification: specification, state: state, stateSince: now, generation: 1, process: process,
            createdAt: now, updatedAt: now)
        try GuestRow.insert(record, db)
        _ = try GuestRow.appendJournal(
            db, id: id, name: specification.name, from: nil, to: state, cause: cause, at: now)
        return record
    }

    /// Changes the state (allowed transitions only) and journals it, in the caller's transaction.
    func changeState(_ db: Database, _ record: GuestRecord, to next: GuestState, cause: String, at now: Date) throws
        -> GuestRecord
    {
        guard record.state.allows(next) else {
            let allowed = record.state.successors.map(\.rawValue).sorted().joined(separator: ", ")
            throw InventoryError(
                .transitionRefused,
                "guest \(record.name) cannot go from \(record.state.rawValue) to \(next.rawValue);"
                    + " from \(record.state.rawValue) it may go to \(allowed)")
        }
        let changed = try update(db, record, at: now) { row in
            row.state = next
            row.stateSince = now
            if !next.hasProcess { row.process = nil }
        }
        _ = try GuestRow.appendJournal(
            db, id: record.id, name: record.name, from: record.state, to: next, cause: cause, at: now)
        return changed
    }

    /// Writes a change of the row with the next generation, in the caller's transaction.
    func update(_ db: Database, _ record: GuestRecord, at now: Date, _ change: (inout GuestRecord) -> Void) throws
        -> GuestRecord
    {
        var changed = record
        change(&changed)
        changed.generation = record.generation + 1
        changed.updatedAt = now
        guard try GuestRow.update(changed, previousGeneration: record.generation, db) else {
            throw InventoryError(.stale, "guest \(record.name) changed while it was being written: read it again")
        }
        return changed
    }

    func deleteRow(_ db: Database, _ record: GuestRecord, cause: String) throws -> JournalEntry {
        try db.execute(sql: "DELETE FROM guests WHERE id = ?", arguments: [record.id.hex])
        return try GuestRow.appendJournal(
            db, id: record.id, name: record.name, from: record.state, to: nil, cause: cause, at: GuestRow.now())
    }
}
