import FerryHostModel
import Foundation
import GRDB
import Logging

/// The controller's state in one SQLite file (WAL mode) through GRDB's `DatabasePool`. Every
/// write is an IMMEDIATE transaction: it takes SQLite's write lock before it reads, so what it
/// read (a quota's room, a host's free capacity) cannot change before it commits, whether the
/// other writer is a thread of this process or another controller on the same file (it waits
/// up to `busyTimeout`).
public final class SQLiteControlStore: ControlStore {
    public let path: String
    public let policy: PlacementPolicy
    /// A host silent for longer takes no new guests.
    public let heartbeatTimeout: Duration
    let pool: DatabasePool
    let clock: @Sendable () -> Date
    let logger: Logger

    /// Opens (or creates) the store at `path` and brings its schema up to date. A file that is
    /// not a SQLite database, is damaged, or has a newer schema is refused with an error that
    /// names it. `clock` is the wall clock the store stamps rows with and judges heartbeats by.
    public init(
        path: String, policy: PlacementPolicy = .spread, heartbeatTimeout: Duration = .seconds(5),
        busyTimeout: Duration = .seconds(10), clock: @escaping @Sendable () -> Date = { Date() },
        logger: Logger = Logger(label: "ferry.control")
    ) throws(ControlError) {
        self.path = path
        self.policy = policy
        self.heartbeatTimeout = heartbeatTimeout
        self.clock = clock
        self.logger = logger
        var configuration = Configuration()
        configuration.label = "ferry.control"
        configuration.busyMode = .timeout(Double(busyTimeout.components.seconds))
        configuration.foreignKeysEnabled = true
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
            try pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA synchronous = FULL") }
        } catch {
            throw Self.failure(error, path: path, doing: "open")
        }
        try checkAndMigrate()
    }

    /// Closes the connections. Later calls fail.
    public func close() throws(ControlError) {
        do { try pool.close() } catch { throw Self.failure(error, path: path, doing: "close") }
    }

    private func checkAndMigrate() throws(ControlError) {
        let migrator = ControlSchema.migrator
        let (check, superseded) = try readingNow("check") { db in
            (try String.fetchAll(db, sql: "PRAGMA quick_check"), try migrator.hasBeenSuperseded(db))
        }
        guard check == ["ok"] else {
            throw ControlError(
                .unusableDatabase,
                "control store \(path) is damaged (SQLite's quick_check: \(check.prefix(3).joined(separator: "; "))):"
                    + " restore it from a backup")
        }
        guard !superseded else {
            throw ControlError(
                .unusableDatabase,
                "control store \(path) was written by a newer Ferry (its schema has migrations this one does not"
                    + " know): run that Ferry's controller, or restore a backup made by this one")
        }
        do { try migrator.migrate(pool) } catch {
            throw Self.failure(error, path: path, doing: "migrate the schema of")
        }
    }

    /// Maps a GRDB/SQLite error to a `ControlError` that names the file.
    static func failure(_ error: any Error, path: String, doing what: String) -> ControlError {
        if let error = error as? ControlError { return error }
        if let error = error as? DatabaseError {
            switch error.resultCode {
            case .SQLITE_NOTADB, .SQLITE_CORRUPT:
                return ControlError(
                    .unusableDatabase,
                    "control store \(path) is not a SQLite database or is damaged (\(what)): restore it from a backup",
                    cause: error)
            case .SQLITE_BUSY, .SQLITE_LOCKED:
                return ControlError(
                    .database,
                    "control store \(path) stayed locked by another connection (\(what)): a controller holds a"
                        + " transaction open too long (fuser \(path)); retry", cause: error)
            case .SQLITE_FULL:
                return ControlError(
                    .database, "control store \(path): the file system is full (\(what)); free space and retry",
                    cause: error)
            default: break
            }
        }
        return ControlError(.database, "control store \(path): could not \(what) the database", cause: error)
    }

    /// A read on one of the pool's reader connections, off the caller's thread (GRDB's queue).
    func reading<T: Sendable>(_ what: String, _ body: @escaping @Sendable (Database) throws -> T)
        async throws(ControlError) -> T
    {
        do { return try await pool.read(body) } catch { throw Self.failure(error, path: path, doing: what) }
    }

    /// A read on the caller's thread, for `init`.
    private func readingNow<T>(_ what: String, _ body: (Database) throws -> T) throws(ControlError) -> T {
        do { return try pool.read(body) } catch { throw Self.failure(error, path: path, doing: what) }
    }

    /// One IMMEDIATE transaction (the write lock first, then the reads and writes), committed
    /// when `body` returns, rolled back when it throws.
    func writing<T: Sendable>(_ what: String, _ body: @escaping @Sendable (Database) throws -> T)
        async throws(ControlError) -> T
    {
        do {
            return try await pool.writeWithoutTransaction { db in
                var result: T?
                try db.inTransaction(.immediate) {
                    result = try body(db)
                    return .commit
                }
                return result!
            }
        } catch {
            throw Self.failure(error, path: path, doing: what)
        }
    }

    func now() -> Date { ControlRows.date(ControlRows.milliseconds(clock())) }
}
