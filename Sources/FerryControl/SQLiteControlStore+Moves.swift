import FerryHostModel
import Foundation
import GRDB

/// A guest's move between hosts: each step one IMMEDIATE transaction that reads the guest (and,
/// to begin, the hosts and what their guests hold) and writes the row and its journal entry.
extension SQLiteControlStore {
    public func beginMove(
        _ id: GuestID, to host: String?, cause: String, generation: Int64?, maxMovesPerHost: Int?, kind: MoveKind
    ) async throws(ControlError) -> CloudGuest {
        let now = now()
        let guest = try await writing("begin the move of guest \(id) in") { db in
            let guest = try self.existingGuest(db, id)
            let hosts = try self.allHosts(db)
            let destination = try ControlRules.moveDestination(
                guest, to: host, generation: generation, hosts: hosts, usage: self.usageByHost(db),
                policy: self.policy, now: now, heartbeatTimeout: self.heartbeatTimeout,
                moves: maxMovesPerHost == nil ? [:] : self.movesByHost(db), maxMovesPerHost: maxMovesPerHost,
                kind: kind)
            let moving = ControlRules.moved(guest, host: guest.host, movingTo: destination)
            try self.write(
                db, moving, was: guest, cause: ControlRules.beginMoveCause(guest, to: destination, cause), at: now)
            return moving
        }
        logger.info(
            "guest move begun",
            metadata: [
                "guest.id": "\(id)", "guest.host": "\(guest.host)", "guest.moving_to": "\(guest.movingTo ?? "?")",
            ])
        return guest
    }

    public func finishMove(_ id: GuestID, cause: String) async throws(ControlError) -> CloudGuest {
        let now = now()
        let guest = try await writing("finish the move of guest \(id) in") { db in
            let guest = try self.existingGuest(db, id)
            try ControlRules.checkMoving(guest)
            let moved = ControlRules.moved(guest, host: guest.movingTo!, movingTo: nil)
            try self.write(db, moved, was: guest, cause: ControlRules.finishMoveCause(guest, cause), at: now)
            return moved
        }
        logger.info("guest moved", metadata: ["guest.id": "\(id)", "guest.host": "\(guest.host)"])
        return guest
    }

    public func abandonMove(_ id: GuestID, cause: String) async throws(ControlError) -> CloudGuest {
        let now = now()
        let guest = try await writing("abandon the move of guest \(id) in") { db in
            let guest = try self.existingGuest(db, id)
            try ControlRules.checkMoving(guest)
            let stays = ControlRules.moved(guest, host: guest.host, movingTo: nil)
            try self.write(db, stays, was: guest, cause: ControlRules.abandonMoveCause(guest, cause), at: now)
            return stays
        }
        logger.notice("guest move abandoned", metadata: ["guest.id": "\(id)", "guest.host": "\(guest.host)"])
        return guest
    }

    public func setMigrationPolicy(_ id: GuestID, to policy: MigrationPolicy, cause: String)
        async throws(ControlError) -> CloudGuest
    {
        let now = now()
        return try await writing("set the migration policy of guest \(id) in") { db in
            let guest = try self.existingGuest(db, id)
            try ControlRules.checkPolicyChange(guest)
            guard guest.migrationPolicy != policy else { return guest }
            var changed = guest
            changed.request.migrationPolicy = policy
            changed.generation += 1
            try db.execute(
                sql: "UPDATE guests SET migration_policy = ?, generation = ? WHERE id = ? AND generation = ?",
                arguments: [policy.rawValue, changed.generation, id.hex, guest.generation])
            guard db.changesCount == 1 else {
                throw ControlError(.stale, "guest \(id) changed meanwhile: read it again")
            }
            try ControlRows.appendJournal(
                db, id: id, from: guest.state, to: guest.state,
                cause: ControlRules.policyCause(guest, to: policy, cause),
                at: now)
            return changed
        }
    }

    public func moveJournal(since: Date) async throws(ControlError) -> [CloudJournalEntry] {
        try await reading("read the journal of moves in") { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM journal WHERE time_ms >= ? AND cause LIKE 'moving to %' ORDER BY sequence",
                arguments: [ControlRows.milliseconds(since)]
            ).map { row in try ControlRows.journalEntry(row, file: self.path) }
        }
    }

    // MARK: - Inside a transaction

    private func movesByHost(_ db: Database) throws -> [String: Int] {
        let rows = try Row.fetchAll(db, sql: ControlRules.movesByHostSQL)
        return Dictionary(uniqueKeysWithValues: rows.map { row in (row["host"] as String, row["moves"] as Int) })
    }

    private func existingGuest(_ db: Database, _ id: GuestID) throws -> CloudGuest {
        guard let guest = try fetchGuest(db, id) else {
            throw ControlError(.notFound, "no guest \(id) in control store \(path)")
        }
        return guest
    }

    /// Writes the guest's host, destination and generation (if the row is still at `was`'s) and
    /// its journal entry: its state to the same state.
    private func write(_ db: Database, _ guest: CloudGuest, was: CloudGuest, cause: String, at now: Date) throws {
        try db.execute(
            sql: "UPDATE guests SET host = ?, moving_to = ?, generation = ? WHERE id = ? AND generation = ?",
            arguments: [guest.host, guest.movingTo, guest.generation, guest.id.hex, was.generation])
        guard db.changesCount == 1 else {
            throw ControlError(.stale, "guest \(guest.id) changed meanwhile: read it again")
        }
        try ControlRows.appendJournal(db, id: guest.id, from: guest.state, to: guest.state, cause: cause, at: now)
    }
}
