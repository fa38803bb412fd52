import FerryHostModel
import Foundation
import GRDB
import Logging

/// The inventory in one SQLite file (WAL mode), through GRDB's `DatabasePool`: one writer
/// connection, readers beside it. Several processes may open the same file (SQLite's locks
/// serialize their writes; a writer waits up to `busyTimeout` for another).
public final class SQLiteInventory: InventoryStore {
    /// How hard a commit pushes the write-ahead log to stable storage (`PRAGMA synchronous`).
    public enum Durability: String, Sendable, CaseIterable {
        /// fsync the log at every commit: a committed change survives a power failure.
        case full
        /// fsync only at checkpoints: a committed change survives the process being killed
        /// (`kill -9`), but a power failure may lose the latest commits (never half of one).
        case normal
    }

    public let path: String
    public let durability: Durability
    let pool: DatabasePool
    let logger: Logger

    /// Opens (or creates) the inventory at `path` and brings its schema up to date.
    /// A file that is not a SQLite database, is damaged, or has a newer schema is refused with
    /// an error that names it and says what to do.
    public init(
        path: String, durability: Durability = .full, busyTimeout: Duration = .seconds(5),
        logger: Logger = Logger(label: "ferry.inventory")
    ) throws(InventoryError) {
        self.path = path
        self.durability = durability
        self.logger = logger
        var configuration = Configuration()
        configuration.label = "ferry.inventory"
        configuration.busyMode = .timeout(Double(busyTimeout.components.seconds))
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
            // Only the writer commits. GRDB sets NORMAL when it turns WAL on, after any
            // `prepareDatabase`, so the setting goes to the open writer connection.
            try pool.writeWithoutTransaction { db in
                try db.execute(sql: "PRAGMA synchronous = \(durability.rawValue.uppercased())")
            }
        } catch {
            throw Self.failure(error, path: path, doing: "open")
        }
        try checkAndMigrate()
    }

    /// Closes the connections. Later calls fail; the file is complete as it is.
    public func close() throws(InventoryError) {
        do { try pool.close() } catch { throw Self.failure(error, path: path, doing: "close") }
    }

    private func checkAndMigrate() throws(InventoryError) {
        let migrator = InventorySchema.migrator
        let (check, superseded) = try reading("check") { db in
            (try String.fetchAll(db, sql: "PRAGMA quick_check"), try migrator.hasBeenSuperseded(db))
        }
        guard check == ["ok"] else {
            throw InventoryError(
                .unusableDatabase,
                "inventory \(path) is damaged (SQLite's quick_check: \(check.prefix(3).joined(separator: "; "))):"
                    + Self.damagedFix(path))
        }
        guard !superseded else {
            throw InventoryError(
                .unusableDatabase,
                "inventory \(path) was written by a newer Ferry (its schema has migrations this one does not know):"
                    + " run that Ferry's agent, or restore a backup made by this one")
        }
        do { try migrator.migrate(pool) } catch {
            throw Self.failure(error, path: path, doing: "migrate the schema of")
        }
    }

    static func damagedFix(_ path: String) -> String {
        " stop the agent, move it aside (mv \(path) \(path).damaged, with its -wal and -shm files) and start the"
            + " agent again: it starts with an empty inventory and re-registers every guest whose process answers;"
            + " or restore the file from a backup"
    }

    /// Maps a GRDB/SQLite error to an `InventoryError` that names the file.
    static func failure(_ error: any Error, path: String, doing what: String) -> InventoryError {
        if let error = error as? InventoryError { return error }
        if let error = error as? DatabaseError {
            switch error.resultCode {
            case .SQLITE_NOTADB, .SQLITE_CORRUPT:
                return InventoryError(
                    .unusableDatabase,
                    "inventory \(path) is not a SQLite database or is damaged (\(what)):" + damagedFix(path),
                    cause: error)
            case .SQLITE_BUSY, .SQLITE_LOCKED:
                return InventoryError(
                    .database,
                    "inventory \(path) stayed locked by another connection (\(what)): is another agent running on"
                        + " this state directory? (fuser \(path))", cause: error)
            case .SQLITE_FULL:
                return InventoryError(
                    .database, "inventory \(path): the file system is full (\(what)); free space and retry",
                    cause: error)
            default: break
            }
        }
        return InventoryError(.database, "inventory \(path): could not \(what) the database", cause: error)
    }

    func reading<T>(_ what: String, _ body: (Database) throws -> T) throws(InventoryError) -> T {
        do { return try pool.read(body) } catch { throw Self.failure(error, path: path, doing: what) }
    }

    func writing<T>(_ what: String, _ body: (Database) throws -> T) throws(InventoryError) -> T {
        do { return try pool.write(body) } catch { throw Self.failure(error, path: path, doing: what) }
    }
}
