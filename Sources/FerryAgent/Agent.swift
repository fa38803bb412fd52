import FerryInventory
import FerryProtocol
import FerrySystem
import FerryTransport
import Foundation
import Hummingbird
import Logging
import Synchronization
import UnixSignals

/// The host agent (`ferry agent`): holds its state directory's lock and serves the HTTP API
/// until a graceful stop. Guests run in their own processes and are never touched by a stop.
///
/// `init` locks the state directory (and refuses when another agent holds it) before anything
/// listens; `run` serves until SIGTERM or SIGINT (the signals given) or `stop()`: then the
/// listener closes, requests in flight finish (at most `shutdownGrace`), idle connections close,
/// and `run` returns.
public final class Agent: Sendable {
    public let configuration: AgentConfiguration
    public let stateDirectory: StateDirectory
    public let metrics = AgentMetrics()
    /// The guests this agent owns (inventory, processes, files).
    public let guests: HostGuests
    /// Live migrations in and out.
    public let migrations: HostMigrations
    /// The host's hardware signals (`--health-dir`).
    public let health: HealthMonitor
    /// On or in standby (`STATE/power`).
    public let power: HostPowerSwitch
    /// Threads for blocking work (SQLite, control sockets, spawning): not the cooperative pool.
    let work = BlockingWork()
    let verifier: RequestVerifier
    let logger: Logger
    /// Unix seconds when the agent was made.
    public let startedAt: Int64
    private let boundForMigrations: BoundAddress
    private let server = GracefulServer()
    /// Heartbeats to the controller, when the agent has one.
    private let controllerLink: ControllerLink?
    private let heartbeats = Mutex<Task<Void, Never>?>(nil)

    /// Locks the state directory and opens the inventory (`STATE/inventory.sqlite`); throws a
    /// `SystemError` (`.locked` when another agent holds the directory) or an `InventoryError`.
    public init(configuration: AgentConfiguration, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        stateDirectory = try StateDirectory.open(configuration.stateDirectory)
        let inventory: SQLiteInventory
        do {
            inventory = try SQLiteInventory(
                path: stateDirectory.path + "/inventory.sqlite", logger: Logger(label: "ferry.inventory"))
        } catch {
            stateDirectory.release()
            throw error
        }
        guests = HostGuests(
            inventory: inventory,
            files: GuestFiles(guestsDirectory: stateDirectory.guestsPath, disksDirectory: stateDirectory.disksPath),
            logger: logger)
        startedAt = Int64(Date().timeIntervalSince1970)
        let bound = BoundAddress()
        let listen = configuration.listen
        migrations = HostMigrations(
            guests: guests, metrics: metrics, key: configuration.key, keyFile: configuration.keyFile,
            migrationHost: configuration.migrationListen.host,
            reservationSeconds: configuration.incomingReservationSeconds,
            incomingResumeTimeout: configuration.incomingResumeTimeout,
            directory: stateDirectory.migrationsPath, logger: logger,
            selfURL: { "http://\(bound.value.withLock { $0 } ?? listen)" })
        boundForMigrations = bound
        power = HostPowerSwitch(stateDirectory: stateDirectory.path)
        health = HealthMonitor(
            directory: configuration.healthDirectory, thresholds: configuration.healthThresholds, logger: logger)
        if let link = configuration.controller {
            do {
                controllerLink = try ControllerLink(
                    configuration: link, key: configuration.key, guests: guests,
                    probe: HostProbe(stateDirectory: stateDirectory.path), health: health, power: power,
                    logger: logger)
            } catch {
                stateDirectory.release()
                throw error
            }
        } else {
            controllerLink = nil
        }
        // A fixed port is known now; port 0 is known once bound (`run` sets the audience then).
        verifier = RequestVerifier(
            signature: RequestSignature(key: configuration.key), windowSeconds: configuration.credentialWindowSeconds,
            notBefore: startedAt, audience: listen.port == 0 ? nil : RequestAudience(listen: listen))
    }

    /// The API's address as bound (its real port), once `run` listens.
    public var boundAddress: Endpoint? { server.boundAddress }

    /// "GET /v1/host" for each route the API serves (for the OpenAPI document's test).
    public var routes: [String] {
        makeRouter().routes.map { "\($0.method.rawValue) \($0.path)" }.sorted()
    }

    /// Serves until a graceful stop; `onListening` gets the bound address once the listener is up.
    public func run(
        signals: [UnixSignal] = [.sigterm, .sigint], onListening: @escaping @Sendable (Endpoint) -> Void = { _ in }
    ) async throws {
        defer { stateDirectory.release() }
        let stopped = Atomic<Bool>(false)
        defer {
            stopped.store(true, ordering: .relaxed)
            heartbeats.withLock { $0?.cancel() }
            migrations.stop()
            guests.watches.closeAll()
            // The last connection checkpoints the write-ahead log into the file and removes it.
            try? guests.inventory.close()
        }
        try await reconcileAtStart()
        guests.startPeriodicPass(every: configuration.reconcileInterval) { stopped.load(ordering: .relaxed) }
        try await server.run(
            makeRouter(), listen: configuration.listen, shutdownGrace: configuration.shutdownGrace, signals: signals,
            logger: logger
        ) { [self] bound in
            verifier.serve(RequestAudience(listen: bound))
            boundForMigrations.value.withLock { $0 = bound }
            startHeartbeats(bound: bound)
            onListening(bound)
        }
        logger.info("agent stopped", metadata: ["agent.state_dir": "\(stateDirectory.path)"])
    }

    /// Before listening: the inventory against what runs (adopt, crashed, register), then watches.
    private func reconcileAtStart() async throws {
        let start = ContinuousClock.now
        let guests = self.guests
        let migrations = self.migrations
        let summary = try await work.run {
            migrations.recoverAtStart()
            return try guests.reconcile()
        }
        logger.notice(
            "reconciled at start in \(ContinuousClock.now - start): \(summary)",
            metadata: ["agent.state_dir": "\(stateDirectory.path)"])
        for note in summary.leftAlone { logger.notice("reconciliation left alone: \(note)") }
    }

    private func startHeartbeats(bound: Endpoint) {
        guard let link = controllerLink else { return }
        let work = self.work
        let task = Task { await link.run(agentURL: "http://\(bound)", work: work) }
        heartbeats.withLock { $0 = task }
    }

    /// Stops as SIGTERM would: no new connections, requests in flight finish, `run` returns.
    public func stop() async { await server.stop() }

    func makeRouter() -> Router<BasicRequestContext> {
        let router = Router()
        // Middleware applies to the routes added after it: outermost first.
        router.add(middleware: RequestMetricsMiddleware(metrics: metrics))
        router.add(middleware: ErrorResponseMiddleware())
        router.add(
            middleware: AuthenticationMiddleware(
                verifier: verifier, bodyLimitBytes: configuration.bodyLimitBytes,
                metricsToken: configuration.metricsToken))
        HostRoutes(
            probe: HostProbe(stateDirectory: stateDirectory.path), identity: identity, metrics: metrics,
            guests: guests, work: work, health: health, power: power
        ).add(to: router)
        GuestRoutes(guests: guests, work: work, power: power).add(to: router)
        let probe = HostProbe(stateDirectory: stateDirectory.path)
        let identity = self.identity
        MigrationRoutes(migrations: migrations, work: work, power: power) {
            () throws(AgentAPIError) -> IncomingCapacity in
            do throws(SystemError) {
                let capacity = try probe.report(agent: identity()).capacity
                return IncomingCapacity(vcpus: capacity.vcpus, memoryBytes: Int(clamping: capacity.memoryBytes))
            } catch {
                throw AgentAPIError(
                    .internalServerError, .internalError, "reading the host's capacity failed: \(error)")
            }
        }.add(to: router)
        return router
    }

    private var identity: @Sendable () -> HostReport.Agent {
        let configuration = configuration
        let startedAt = startedAt
        let path = stateDirectory.path
        return { [self] in
            HostReport.Agent(
                version: configuration.version, migrationProtocol: Int(ProtocolLimits.version), pid: getpid(),
                hostname: ProcessInfo.processInfo.hostName, startedAt: startedAt, stateDirectory: path,
                listen: (server.boundAddress ?? configuration.listen).description,
                migrationListen: configuration.migrationListen.description)
        }
    }
}

/// The API's bound address, shared with what needs it before `run` (the migrations' own URL).
final class BoundAddress: Sendable {
    let value = Mutex<Endpoint?>(nil)
}
