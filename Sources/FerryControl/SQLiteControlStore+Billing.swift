import GRDB

extension SQLiteControlStore {
    public func billingJournals(project: String, period: BillingPeriod) async throws(ControlError)
        -> [GuestJournal]
    {
        try await reading("read the journal of project \(project) for billing in") { db in
            guard try Bool.fetchOne(db, sql: "SELECT 1 FROM projects WHERE name = ?", arguments: [project]) != nil
            else { throw ControlError(.notFound, "no project \(project)") }
            let rows = try Row.fetchAll(
                db,
                sql: """
                    SELECT \(ControlRows.guestColumns), j.sequence, j.guest_id, j.time_ms, j.from_state, j.to_state,
                    j.cause FROM guests g JOIN journal j ON j.guest_id = g.id
                    WHERE g.project = ? AND \(GuestJournal.periodCondition(period)) ORDER BY j.sequence
                    """, arguments: [project]
            ).map { row in
                (
                    guest: try ControlRows.guest(row, file: self.path),
                    entry: try ControlRows.journalEntry(row, file: self.path)
                )
            }
            return GuestJournal.grouping(rows)
        }
    }
}
