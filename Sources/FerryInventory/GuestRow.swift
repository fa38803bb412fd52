import FerryHostModel
import Foundation
import GRDB
import Synchronization

/// Reading and writing the `guests` and `journal` rows.
enum GuestRow {
    static let columns =
        "id, name, specification, state, state_since_ms, generation, pid, process_start_time, control_socket,"
        + " missing_disks, created_ms, updated_ms"

    static func record(_ row: Row, file: String) throws -> GuestRecord {
        let idText: String = row["id"]
        let stateText: String = row["state"]
        guard let id = try? GuestID(idText), let state = GuestState(rawValue: stateText),
            let specification = specification(row["specification"]),
            let missing = missingDisks(row["missing_disks"])
        else {
            throw InventoryError(
                .unusableDatabase,
                "inventory \(file): the row of guest \"\(row["name"] as String? ?? "?")\" cannot be read"
                    + " (ID \(idText), state \(stateText)); it was not written by this Ferry: restore the file from"
                    + " a backup, or move it aside and restart the agent (it re-registers running guests)")
        }
        var process: ProcessFacts?
        if let pid: Int64 = row["pid"], let start: Int64 = row["process_start_time"],
            let socket: String = row["control_socket"]
        {
            process = ProcessFacts(
                pid: Int32(truncatingIfNeeded: pid), startTime: UInt64(bitPattern: start), controlSocket: socket)
        }
        return GuestRecord(
            id: id, specification: specification, state: state, stateSince: date(row["state_since_ms"]),
            generation: row["generation"], process: process, missingDisks: missing,
            createdAt: date(row["created_ms"]), updatedAt: date(row["updated_ms"]))
    }

    /// Specifications decoded, by their stored text: a guest's is decoded once, not on every read
    /// (`GET /v1/guests` reads every row; two JSON decodes per row were most of its time).
    private static let decoded = Mutex<[String: GuestSpecification]>([:])
    private static let decodedLimit = 4096

    static func specification(_ text: String) -> GuestSpecification? {
        if let known = decoded.withLock({ $0[text] }) { return known }
        guard let specification = try? JSONDecoder().decode(GuestSpecification.self, from: Data(text.utf8)) else {
            return nil
        }
        decoded.withLock { table in
            if table.count >= decodedLimit { table.removeAll(keepingCapacity: true) }
            table[text] = specification
        }
        return specification
    }

    static func missingDisks(_ text: String) -> [String]? {
        text == "[]" ? [] : try? JSONDecoder().decode([String].self, from: Data(text.utf8))
    }

    static func insert(_ record: GuestRecord, _ db: Database) throws {
        try db.execute(
            sql: "INSERT INTO guests (\(columns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            arguments: [
                record.id.hex, record.name.value, try json(record.specification), record.state.rawValue,
                milliseconds(record.stateSince), record.generation, record.process.map { Int64($0.pid) },
                record.process.map { Int64(bitPattern: $0.startTime) }, record.process?.controlSocket,
                try json(record.missingDisks), milliseconds(record.createdAt), milliseconds(record.updatedAt),
            ])
    }

    /// Writes every mutable column of `record`, only if the row still has `previousGeneration`.
    static func update(_ record: GuestRecord, previousGeneration: Int64, _ db: Database) throws -> Bool {
        try db.execute(
            sql: """
                UPDATE guests SET state = ?, state_since_ms = ?, generation = ?, pid = ?, process_start_time = ?,
                control_socket = ?, missing_disks = ?, updated_ms = ? WHERE id = ? AND generation = ?
                """,
            arguments: [
                record.state.rawValue, milliseconds(record.stateSince), record.generation,
                record.process.map { Int64($0.pid) }, record.process.map { Int64(bitPattern: $0.startTime) },
                record.process?.controlSocket, try json(record.missingDisks), milliseconds(record.updatedAt),
                record.id.hex, previousGeneration,
            ])
        return db.changesCount == 1
    }

    static func journalEntry(_ row: Row) throws -> JournalEntry {
        let toText: String = row["to_state"]
        let fromText: String? = row["from_state"]
        guard let id = try? GuestID(row["guest_id"] as String), let name = try? GuestName(row["guest_name"] as String),
            toText == "removed" || GuestState(rawValue: toText) != nil,
            fromText == nil || GuestState(rawValue: fromText!) != nil
        else {
            throw InventoryError(
                .unusableDatabase, "journal row \(row["sequence"] as Int64) cannot be read (to \(toText))")
        }
        return JournalEntry(
            sequence: row["sequence"], guestID: id, guestName: name, time: date(row["time_ms"]),
            from: fromText.flatMap(GuestState.init(rawValue:)), to: GuestState(rawValue: toText), cause: row["cause"])
    }

    static func appendJournal(
        _ db: Database, id: GuestID, name: GuestName, from: GuestState?, to: GuestState?, cause: String, at time: Date
    ) throws -> JournalEntry {
        try db.execute(
            sql:
                "INSERT INTO journal (guest_id, guest_name, time_ms, from_state, to_state, cause) VALUES (?, ?, ?, ?, ?, ?)",
            arguments: [id.hex, name.value, milliseconds(time), from?.rawValue, to?.rawValue ?? "removed", cause])
        return JournalEntry(
            sequence: db.lastInsertedRowID, guestID: id, guestName: name, time: time, from: from, to: to, cause: cause)
    }

    /// The wall clock, to the millisecond the table keeps (so a record reads back equal).
    static func now() -> Date { date(milliseconds(Date())) }

    static func milliseconds(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1000).rounded()) }
    static func date(_ milliseconds: Int64) -> Date { Date(timeIntervalSince1970: Double(milliseconds) / 1000) }

    private static func json<T: Encodable>(_ value: T) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }
}
