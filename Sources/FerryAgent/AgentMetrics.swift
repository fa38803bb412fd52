import CoreMetrics
import FerryHostModel
import Prometheus

/// The agent's metrics, through swift-metrics into its own Prometheus registry (not the process's
/// global `MetricsSystem`, so that agents in one process, as in tests, do not share counters).
/// `GET /metrics` emits `text()`. Names and labels: docs/agent.md, "Metrics".
///
/// A series appears once it has a value: the API's latency from the first request on, the
/// host's figures at each scrape; the guest and migration series (names below) appear when the
/// inventory and migrations record them. Nothing is exported as a placeholder zero.
public final class AgentMetrics: Sendable {
    public enum Name {
        /// Histogram, labels `route`, `method`, `status`: time from a request's arrival to its
        /// response being written.
        public static let apiRequestDuration = "ferry_agent_api_request_duration_seconds"
        /// Gauges, from the kernel at each scrape.
        public static let hostVCPUs = "ferry_host_vcpus"
        public static let hostMemoryBytes = "ferry_host_memory_bytes"
        public static let hostMemoryAvailableBytes = "ferry_host_memory_available_bytes"
        public static let hostDiskBytes = "ferry_host_disk_bytes"
        public static let hostDiskAvailableBytes = "ferry_host_disk_available_bytes"
        /// Gauge, label `state` (GuestState's raw values): guests in the inventory by state.
        public static let guests = "ferry_guests"
        /// Gauge, label `direction` (`out`, `in`): migrations running now.
        public static let migrationsInFlight = "ferry_migrations_in_flight"
        /// Counter, labels `direction`, `outcome`: migrations that ended, by how.
        public static let migrationsFinished = "ferry_migrations_finished_total"
        /// Counter: bytes outgoing migrations sent (pages, disks, device state, framing).
        public static let migrationBytesSent = "ferry_migration_bytes_sent_total"
        /// Histograms: a migration's blackout (guest paused) and its whole time.
        public static let migrationDowntime = "ferry_migration_downtime_seconds"
        public static let migrationTotalTime = "ferry_migration_total_seconds"
        /// Gauge, label `kind` (`provisioned`: the disks' sizes; `allocated`: the blocks their
        /// files hold).
        public static let diskBytes = "ferry_disk_bytes"

        /// Every name the agent may export, for docs and tests.
        public static let all = [
            apiRequestDuration, hostVCPUs, hostMemoryBytes, hostMemoryAvailableBytes, hostDiskBytes,
            hostDiskAvailableBytes, guests, migrationsInFlight, migrationsFinished, migrationBytesSent,
            migrationDowntime, migrationTotalTime, diskBytes,
        ]
    }

    public let registry: PrometheusCollectorRegistry
    private let factory: PrometheusMetricsFactory

    public init() {
        registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets = [
            Name.apiRequestDuration: [
                .microseconds(250), .microseconds(500), .milliseconds(1), .microseconds(2500), .milliseconds(5),
                .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
                .seconds(1), .seconds(5),
            ],
            Name.migrationDowntime: [
                .milliseconds(1), .microseconds(2500), .milliseconds(5), .milliseconds(10), .milliseconds(25),
                .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
                .seconds(5),
            ],
            Name.migrationTotalTime: [
                .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30),
                .seconds(60), .seconds(120), .seconds(300), .seconds(900), .seconds(3600),
            ],
        ]
        self.factory = factory
    }

    /// One API request answered: `route` is the route's pattern (`/v1/guests/{name}`), never the
    /// raw path, so that names in paths do not make new series.
    public func recordRequest(route: String, method: String, status: Int, duration: Duration) {
        CoreMetrics.Timer(
            label: Name.apiRequestDuration,
            dimensions: [("route", route), ("method", method), ("status", String(status))], factory: factory
        ).recordNanoseconds(Self.nanoseconds(duration))
    }

    /// The host's figures, set just before a scrape is emitted.
    public func recordHost(_ report: HostReport) {
        gauge(Name.hostVCPUs).record(report.capacity.vcpus)
        gauge(Name.hostMemoryBytes).record(Int64(clamping: report.capacity.memoryBytes))
        gauge(Name.hostMemoryAvailableBytes).record(Int64(clamping: report.usage.memoryAvailableBytes))
        gauge(Name.hostDiskBytes).record(Int64(clamping: report.capacity.diskBytes))
        gauge(Name.hostDiskAvailableBytes).record(Int64(clamping: report.usage.diskAvailableBytes))
    }

    /// The inventory's guests by state (every state is set, absent ones to 0).
    public func recordGuests(_ counts: [GuestState: Int]) {
        for state in GuestState.allCases {
            gauge(Name.guests, [("state", state.rawValue)]).record(counts[state] ?? 0)
        }
    }

    public enum Direction: String, Sendable {
        case outgoing = "out"
        case incoming = "in"
    }

    /// Migrations running now in one direction.
    public func recordMigrationsInFlight(_ count: Int, direction: Direction) {
        gauge(Name.migrationsInFlight, [("direction", direction.rawValue)]).record(count)
    }

    /// A migration ended: `outcome` is the report's (`completed`, `cancelled`, `failed`, ...).
    public func recordMigrationFinished(
        direction: Direction, outcome: String, downtime: Duration?, totalTime: Duration, bytesSent: UInt64
    ) {
        CoreMetrics.Counter(
            label: Name.migrationsFinished, dimensions: [("direction", direction.rawValue), ("outcome", outcome)],
            factory: factory
        ).increment()
        if bytesSent > 0 {
            CoreMetrics.Counter(label: Name.migrationBytesSent, factory: factory).increment(
                by: Int64(clamping: bytesSent))
        }
        if let downtime {
            CoreMetrics.Timer(label: Name.migrationDowntime, factory: factory).recordNanoseconds(
                Self.nanoseconds(downtime))
        }
        CoreMetrics.Timer(label: Name.migrationTotalTime, factory: factory).recordNanoseconds(
            Self.nanoseconds(totalTime))
    }

    /// The guests' disks: their sizes and the blocks their files hold.
    public func recordDisks(provisionedBytes: UInt64, allocatedBytes: UInt64) {
        gauge(Name.diskBytes, [("kind", "provisioned")]).record(Int64(clamping: provisionedBytes))
        gauge(Name.diskBytes, [("kind", "allocated")]).record(Int64(clamping: allocatedBytes))
    }

    /// The Prometheus text exposition of every series with a value.
    public func text() -> String { registry.emitToString() }

    private func gauge(_ name: String, _ dimensions: [(String, String)] = []) -> CoreMetrics.Gauge {
        CoreMetrics.Gauge(label: name, dimensions: dimensions, factory: factory)
    }

    private static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
