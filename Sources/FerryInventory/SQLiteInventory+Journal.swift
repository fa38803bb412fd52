import FerryHostModel
import GRDB

extension SQLiteInventory {
    public func journal(of id: GuestID, latest limit: Int) throws(InventoryError) -> [JournalEntry] {
        try latestJournal("WHERE guest_id = ?", [id.hex], limit: limit)
    }

    public func journal(named name: GuestName, latest limit: Int) throws(InventoryError) -> [JournalEntry] {
        try latestJournal("WHERE guest_name = ?", [name.value], limit: limit)
    }

    public func journal(latest limit: Int) throws(InventoryError) -> [JournalEntry] {
        try latestJournal("", [], limit: limit)
    }

    private func latestJournal(_ filter: String, _ arguments: StatementArguments, limit: Int) throws(InventoryError)
        -> [JournalEntry]
    {
        try reading("read the journal of") { db in
            let rows = try Row.fetchAll(
                db,
                sql: """
                    SELECT sequence, guest_id, guest_name, time_ms, from_state, to_state, cause FROM journal \(filter)
                    ORDER BY sequence DESC LIMIT ?
                    """,
                arguments: arguments + [max(0, limit)])
            return try rows.reversed().map(GuestRow.journalEntry)
        }
    }
}
