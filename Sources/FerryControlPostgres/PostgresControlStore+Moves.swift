import FerryControl
import FerryHostModel
import Foundation
import PostgresNIO

/// A guest's move between hosts: each step one write transaction (the advisory lock every writer
/// takes first) that reads the guest (and, to begin, the hosts and what their guests hold) and
/// writes the row and its journal entry.
extension PostgresControlStore {
    public func beginMove(
        _ id: GuestID, to host: String?, cause: String, generation: Int64?, maxMovesPerHost: Int?, kind: MoveKind
    ) async throws(ControlError) -> CloudGuest {
        let now = now()
        let guest = try await writing("begin the move of guest \(id) in") { connection in
            let guest = try await self.existingGuest(connection, id)
            let destination = try ControlRules.moveDestination(
                guest, to: host, generation: generation, hosts: try await self.allHosts(connection),
                usage: try await self.usageByHost(connection), policy: self.policy, now: now,
                heartbeatTimeout: self.heartbeatTimeout,
                moves: maxMovesPerHost == nil ? [:] : try await self.movesByHost(connection),
                maxMovesPerHost: maxMovesPerHost, kind: kind)
            let moving = ControlRules.moved(guest, host: guest.host, movingTo: destination)
            try await self.write(
                connection, moving, was: guest, cause: ControlRules.beginMoveCause(guest, to: destination, cause),
                at: now)
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
        let guest = try await writing("finish the move of guest \(id) in") { connection in
            let guest = try await self.existingGuest(connection, id)
            try ControlRules.checkMoving(guest)
            let moved = ControlRules.moved(guest, host: guest.movingTo!, movingTo: nil)
            try await self.write(
                connection, moved, was: guest, cause: ControlRules.finishMoveCause(guest, cause), at: now)
            return moved
        }
        logger.info("guest moved", metadata: ["guest.id": "\(id)", "guest.host": "\(guest.host)"])
        return guest
    }

    public func abandonMove(_ id: GuestID, cause: String) async throws(ControlError) -> CloudGuest {
        let now = now()
        let guest = try await writing("abandon the move of guest \(id) in") { connection in
            let guest = try await self.existingGuest(connection, id)
            try ControlRules.checkMoving(guest)
            let stays = ControlRules.moved(guest, host: guest.host, movingTo: nil)
            try await self.write(
                connection, stays, was: guest, cause: ControlRules.abandonMoveCause(guest, cause), at: now)
            return stays
        }
        logger.notice("guest move abandoned", metadata: ["guest.id": "\(id)", "guest.host": "\(guest.host)"])
        return guest
    }

    public func setMigrationPolicy(_ id: GuestID, to policy: MigrationPolicy, cause: String)
        async throws(ControlError) -> CloudGuest
    {
        let now = now()
        return try await writing("set the migration policy of guest \(id) in") { connection in
            let guest = try await self.existingGuest(connection, id)
            try ControlRules.checkPolicyChange(guest)
            guard guest.migrationPolicy != policy else { return guest }
            var changed = guest
            changed.request.migrationPolicy = policy
            changed.generation += 1
            try await connection.query(
                """
                UPDATE guests SET migration_policy = \(policy.rawValue), generation = \(changed.generation)
                WHERE id = \(id.hex) AND generation = \(guest.generation)
                """, logger: self.logger)
            try await PostgresRows.appendJournal(
                connection, id: id, from: guest.state, to: guest.state,
                cause: ControlRules.policyCause(guest, to: policy, cause), at: now, logger: self.logger)
            return changed
        }
    }

    public func moveJournal(since: Date) async throws(ControlError) -> [CloudJournalEntry] {
        let since = PostgresRows.milliseconds(since)
        return try await reading("read the journal of moves in") { connection in
            try await PostgresRows.all(
                connection,
                "SELECT * FROM journal WHERE time_ms >= \(since) AND cause LIKE 'moving to %' ORDER BY sequence",
                logger: logger
            ) { row in try PostgresRows.journalEntry(row, url: self.url) }
        }
    }

    // MARK: - Inside a transaction

    private func movesByHost(_ connection: PostgresConnection) async throws -> [String: Int] {
        let rows = try await PostgresRows.all(
            connection, "\(unescaped: ControlRules.movesByHostSQL)", logger: logger
        ) { row in (try row["host"].decode(String.self), try row["moves"].decode(Int.self)) }
        return Dictionary(uniqueKeysWithValues: rows)
    }

    private func existingGuest(_ connection: PostgresConnection, _ id: GuestID) async throws -> CloudGuest {
        guard let guest = try await fetchGuest(connection, id) else {
            throw ControlError(.notFound, "no guest \(id) in control store \(url)")
        }
        return guest
    }

    /// Writes the guest's host, destination and generation (the row is at `was`'s: every writer
    /// holds the same lock) and its journal entry: its state to the same state.
    private func write(
        _ connection: PostgresConnection, _ guest: CloudGuest, was: CloudGuest, cause: String, at now: Date
    ) async throws {
        try await connection.query(
            """
            UPDATE guests SET host = \(guest.host), moving_to = \(guest.movingTo), generation = \(guest.generation)
            WHERE id = \(guest.id.hex) AND generation = \(was.generation)
            """, logger: logger)
        try await PostgresRows.appendJournal(
            connection, id: guest.id, from: guest.state, to: guest.state, cause: cause, at: now, logger: logger)
    }
}
