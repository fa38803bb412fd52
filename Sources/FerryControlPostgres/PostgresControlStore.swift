import FerryControl
import Foundation
import Logging
import PostgresNIO

/// The controller's state in a PostgreSQL database, so that several controllers can share it.
/// Each write is one transaction that first takes one transaction-scoped advisory lock
/// (`pg_advisory_xact_lock`): the writers of every controller on the database are serialised as
/// SQLite's IMMEDIATE transactions are, so what a create read (a quota's room, a host's free
/// capacity, a client token) cannot change before it commits, and the journal's sequence grows
/// in commit order. Reads take no lock. Waiting for the lock is bounded by the session's
/// `lock_timeout` (docs/control-plane.md, "PostgreSQL").
///
/// Lifecycle: `connect` checks the server, the credentials and the database on one connection,
/// brings the schema up to date, then starts a pool (postgres-nio's `PostgresClient`, run in a
/// task of the store's own); `close` stops the pool. A store not closed keeps its connections
/// until the process ends.
public final class PostgresControlStore: ControlStore {
    public let url: PostgresURL
    public let policy: PlacementPolicy
    /// A host silent for longer takes no new guests.
    public let heartbeatTimeout: Duration
    let client: PostgresClient
    let clock: @Sendable () -> Date
    let logger: Logger
    private let running: Task<Void, Never>

    /// The key of the advisory lock every write transaction takes first ("FerryCtl" in ASCII).
    static let writeLockKey: Int64 = 0x4665_7272_7943_746C

    /// Connects to the database at `url` (`postgres://user:password@host:port/database`, see
    /// `PostgresURL`), checks it and brings its schema up to date. A server that cannot be
    /// reached, a refused password or a database that does not exist is refused with an error
    /// that names the URL (without its password) and what to do. `lockTimeout` bounds how long a
    /// write waits for another controller's transaction; `maximumConnections` is the pool's size.
    public static func connect(
        url text: String, policy: PlacementPolicy = .spread, heartbeatTimeout: Duration = .seconds(5),
        lockTimeout: Duration = .seconds(10), maximumConnections: Int = 10,
        clock: @escaping @Sendable () -> Date = { Date() }, logger: Logger = Logger(label: "ferry.control")
    ) async throws(ControlError) -> PostgresControlStore {
        let url = try PostgresURL(text)
        let settings = PostgresSettings(url: url, lockTimeout: lockTimeout)
        try await PostgresSchema.migrate(settings, logger: logger)
        var configuration = try settings.clientConfiguration()
        configuration.options.maximumConnections = max(1, maximumConnections)
        let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        return PostgresControlStore(
            url: url, client: client, policy: policy, heartbeatTimeout: heartbeatTimeout, clock: clock, logger: logger)
    }

    private init(
        url: PostgresURL, client: PostgresClient, policy: PlacementPolicy, heartbeatTimeout: Duration,
        clock: @escaping @Sendable () -> Date, logger: Logger
    ) {
        self.url = url
        self.client = client
        self.policy = policy
        self.heartbeatTimeout = heartbeatTimeout
        self.clock = clock
        self.logger = logger
        running = Task { await client.run() }
        logger.info("control store opened", metadata: ["control.database": "\(url)"])
    }

    /// Stops the pool and closes its connections; returns when they are closed. Later calls fail.
    public func close() async {
        running.cancel()
        await running.value
    }

    /// One read on a pooled connection.
    func reading<T: Sendable>(_ what: String, _ body: (PostgresConnection) async throws -> T)
        async throws(ControlError) -> T
    {
        do {
            return try await client.withConnection { connection in try await body(connection) }
        } catch {
            throw PostgresFailures.controlError(error, url: url, doing: what)
        }
    }

    /// One write transaction: BEGIN, the advisory lock, `body`, COMMIT; ROLLBACK when `body`
    /// throws (its error is what the caller sees).
    func writing<T: Sendable>(_ what: String, _ body: (PostgresConnection) async throws -> T)
        async throws(ControlError) -> T
    {
        do {
            return try await client.withConnection { connection in
                try await connection.query("BEGIN", logger: logger)
                do {
                    try await connection.query("SELECT pg_advisory_xact_lock(\(Self.writeLockKey))", logger: logger)
                    let result = try await body(connection)
                    try await connection.query("COMMIT", logger: logger)
                    return result
                } catch {
                    _ = try? await connection.query("ROLLBACK", logger: logger)
                    throw error
                }
            }
        } catch {
            throw PostgresFailures.controlError(error, url: url, doing: what)
        }
    }

    func now() -> Date { PostgresRows.date(PostgresRows.milliseconds(clock())) }
}
