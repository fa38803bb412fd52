import FerryDiskMove
import FerryHostModel
import FerryInventory
import FerryTransport
import FerryVMM
import Foundation
import Logging
import Synchronization

/// The live migrations of this agent, both ways (docs/agent.md, "Live migration, agent to
/// agent"): the outgoing ones it drives (`OutgoingMigrationDriver`), the incoming ones it
/// reserved (`IncomingGuestSpawner`), and the inventory rows that follow them. The guest is
/// claimed (`HostGuests.tryClaim`) from the start to the recorded end, so any other operation
/// on it is 409 `busy` and reconciliation leaves it alone. Every method blocks: call it on
/// `BlockingWork`.
public final class HostMigrations: Sendable {
    let guests: HostGuests
    let metrics: AgentMetrics
    let key: SharedKey
    /// The key file both vmms are given (`--key-file`, `migrate`'s `key_file`).
    let keyFile: String?
    /// Where incoming vmms listen (`--migration-listen`'s host).
    let migrationHost: String
    let reservationSeconds: Double
    /// The incoming vmms' `--resume-timeout`.
    let incomingResumeTimeout: Duration
    let records: MigrationRecords
    let logger: Logger
    /// This agent's URL as other agents reach it, once it listens.
    let selfURL: @Sendable () -> String
    let stopped = Atomic<Bool>(false)
    let state = Mutex<Registry>(Registry())

    struct Registry: Sendable {
        var drivers: [String: OutgoingMigrationDriver] = [:]
        var cold: [String: ColdMigration] = [:]
        var outgoing: [String: MigrationRecords.Outgoing] = [:]
        var incoming: [String: IncomingEntry] = [:]
        /// Migration IDs whose reservation is being made (a concurrent retry waits for it).
        var preparing: Set<String> = []
    }

    struct IncomingEntry: Sendable {
        var record: MigrationRecords.Incoming
        var process: IncomingGuestProcess?
        var abandoning = false
        var reservedAt = ContinuousClock.now
        /// A cold migration's disk-move receivers running now, by file name: where each listens.
        var receivers: [String: ColdReceiver] = [:]
        /// A cold migration's last call from its source (or a receiver's end): its idle expiry
        /// counts from here.
        var lastActivity = ContinuousClock.now
        /// A cold migration's registration runs: the expiry keeps off.
        var registering = false
    }

    /// One running disk-move receiver of a cold migration.
    struct ColdReceiver: Sendable {
        var address: String
        var cancellation: DiskMoveCancellation
    }

    init(
        guests: HostGuests, metrics: AgentMetrics, key: SharedKey, keyFile: String?, migrationHost: String,
        reservationSeconds: Double, incomingResumeTimeout: Duration = .seconds(30), directory: String, logger: Logger,
        selfURL: @escaping @Sendable () -> String
    ) {
        self.guests = guests
        self.metrics = metrics
        self.key = key
        self.keyFile = keyFile
        self.migrationHost = migrationHost
        self.reservationSeconds = reservationSeconds
        self.incomingResumeTimeout = incomingResumeTimeout
        records = MigrationRecords(directory: directory)
        self.logger = logger
        self.selfURL = selfURL
    }

    // MARK: Reading

    /// Every migration this agent knows, newest first.
    public func list() -> [MigrationResource] {
        let (drivers, cold, outgoing, incoming) = state.withLock { ($0.drivers, $0.cold, $0.outgoing, $0.incoming) }
        var all = outgoing.values.map { record in
            let id = record.resource.id
            return record.resource.status.isFinal
                ? record.resource : (drivers[id]?.current ?? cold[id]?.current ?? record.resource)
        }
        all += incoming.values.map { incomingResource($0) }
        return all.sorted { ($0.startedAt, $0.id) > ($1.startedAt, $1.id) }
    }

    public func show(_ id: String) throws(AgentAPIError) -> MigrationResource {
        guard let found = list().first(where: { $0.id == id }) else { throw Self.noMigration(id) }
        return found
    }

    /// The migration's events; a migration whose driver is gone (before an agent restart) has
    /// one `end` event.
    func events(_ id: String) throws(AgentAPIError) -> MigrationEventLog {
        if let driver = state.withLock({ $0.drivers[id] }) { return driver.events }
        let resource = try show(id)
        let log = MigrationEventLog()
        if resource.status.isFinal { log.append(.end, data: resource.json) }
        return log
    }

    static func noMigration(_ id: String) -> AgentAPIError {
        AgentAPIError(.notFound, .notFound, "no migration \(id) on this agent; GET /v1/migrations lists them")
    }

    /// The incoming migration as a `Migration` (direction `in`).
    func incomingResource(_ entry: IncomingEntry) -> MigrationResource {
        let record = entry.record
        var resource = MigrationResource(
            id: record.request.migrationID, guest: record.request.specification.name.value, direction: .in,
            peer: record.request.sourceAgent, destination: record.reservation.address)
        resource.startedAt = record.reservation.expiresAt.addingTimeInterval(-reservationSeconds)
        switch record.ended {
        case .arrived?:
            (resource.status, resource.phase, resource.guestLocation) = (.completed, "completed", "destination")
        case .failed?: (resource.status, resource.phase, resource.guestLocation) = (.failed, "failed", "source")
        case .abandoned?:
            (resource.status, resource.phase, resource.guestLocation) = (.cancelled, "cancelled", "source")
        case .waiting?, .receiving?, nil: (resource.status, resource.phase) = (.setup, "starting")
        }
        resource.error = record.error
        return resource
    }

    // MARK: Metrics

    func updateInFlight() {
        let (outgoing, incoming) = state.withLock { registry in
            (
                registry.outgoing.values.filter { Self.isOpen($0.resource) }.count,
                registry.incoming.values.filter { $0.record.ended == nil }.count
            )
        }
        metrics.recordMigrationsInFlight(outgoing, direction: .outgoing)
        metrics.recordMigrationsInFlight(incoming, direction: .incoming)
    }

    /// Not ended, or ended `unresolved` and not resolved yet.
    static func isOpen(_ resource: MigrationResource) -> Bool {
        !resource.status.isFinal || (resource.status == .unresolved && resource.guestLocation == "unknown")
    }

    func recordFinished(_ resource: MigrationResource, direction: AgentMetrics.Direction) {
        let total =
            resource.totalTimeMs.map { $0 / 1000 } ?? resource.endedAt.map { $0.timeIntervalSince(resource.startedAt) }
        metrics.recordMigrationFinished(
            direction: direction, outcome: resource.status.rawValue,
            downtime: resource.downtimeMs.map { .milliseconds($0) }, totalTime: .seconds(max(0, total ?? 0)),
            bytesSent: resource.bytesTransferred ?? 0)
        updateInFlight()
    }

    /// Ends the background work (resolvers, expiries) at the agent's stop.
    func stop() { stopped.store(true, ordering: .relaxed) }

    /// The vmm's state on its socket, nil when nothing answers.
    static func vmmState(_ socket: String) -> String? {
        GuestProcess.hello(socket: socket)?.state
    }

    /// Sleeps `seconds` unless the agent stops meanwhile; whether it still runs.
    func pause(_ seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if stopped.load(ordering: .relaxed) { return false }
            usleep(50_000)
        }
        return !stopped.load(ordering: .relaxed)
    }
}
