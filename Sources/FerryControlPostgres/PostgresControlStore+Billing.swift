import FerryControl
import PostgresNIO

extension PostgresControlStore {
    public func billingJournals(project: String, period: BillingPeriod) async throws(ControlError)
        -> [GuestJournal]
    {
        try await reading("read the journal of project \(project) for billing in") { connection in
            let known = try await PostgresRows.all(
                connection, "SELECT name FROM projects WHERE name = \(project)", logger: logger
            ) { row in try row["name"].decode(String.self) }
            guard !known.isEmpty else { throw ControlError(.notFound, "no project \(project)") }
            let rows = try await PostgresRows.all(
                connection,
                """
                SELECT \(unescaped: PostgresRows.guestColumns), j.sequence, j.guest_id, j.time_ms, j.from_state,
                j.to_state, j.cause FROM guests g JOIN journal j ON j.guest_id = g.id
                WHERE g.project = \(project) AND \(unescaped: GuestJournal.periodCondition(period))
                ORDER BY j.sequence
                """, logger: logger
            ) { row in
                (
                    guest: try PostgresRows.guest(row, url: self.url),
                    entry: try PostgresRows.journalEntry(row, url: self.url)
                )
            }
            return GuestJournal.grouping(rows)
        }
    }
}
