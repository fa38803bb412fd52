import FerryDecisions
import FerryTransport

/// What `ferry agent` is started with (docs/agent.md).
public struct AgentConfiguration: Sendable {
    /// The API's default address: loopback only, so that nothing off the host reaches it unless
    /// the operator says so.
    public static let defaultListen = Endpoint(host: "127.0.0.1", port: 7460)
    /// Where migrations will arrive by default (`ferry receive`'s port).
    public static let defaultMigrationListen = Endpoint(host: "0.0.0.0", port: 7700)

    public var stateDirectory: String
    public var listen: Endpoint
    public var migrationListen: Endpoint
    public var key: SharedKey
    /// The key's file (absolute), given to the guests' vmms to authenticate migrations with.
    public var keyFile: String?
    /// The read-only bearer token for `GET /metrics` (`--metrics-token-file`), if any.
    public var metricsToken: MetricsToken?
    /// How long an incoming migration's reservation waits for its source to connect.
    public var incomingReservationSeconds: Double
    /// How long an arriving guest's `ferry vmm --incoming` waits for a source whose connections
    /// were lost during pre-copy to come back (its `--resume-timeout`).
    public var incomingResumeTimeout: Duration
    /// Ferry's release, for `GET /v1/host` (the library does not know the CLI's version).
    public var version: String
    /// The largest request body taken (413 beyond).
    public var bodyLimitBytes: Int
    /// How far a credential's time may be from the agent's clock, either way.
    public var credentialWindowSeconds: Int64
    /// How long a graceful stop waits for requests in flight before it cuts them off.
    public var shutdownGrace: Duration
    /// How often the agent reconciles its inventory with what runs (catching what a lost watch
    /// connection missed).
    public var reconcileInterval: Duration
    /// The controller this agent reports to (heartbeats); nil: a stand-alone agent.
    public var controller: ControllerLinkConfiguration?
    /// Where the host's hardware signals are read (`--health-dir`, `HealthDirectory`); nil: none,
    /// the hardware is healthy.
    public var healthDirectory: String?
    /// What the signals are judged by.
    public var healthThresholds: HealthThresholds

    public init(
        stateDirectory: String, listen: Endpoint = defaultListen, migrationListen: Endpoint = defaultMigrationListen,
        key: SharedKey, keyFile: String? = nil, version: String, bodyLimitBytes: Int = 1 << 20,
        credentialWindowSeconds: Int64 = 30, shutdownGrace: Duration = .seconds(30),
        reconcileInterval: Duration = .seconds(3), incomingReservationSeconds: Double = 60,
        incomingResumeTimeout: Duration = .seconds(30), metricsToken: MetricsToken? = nil,
        controller: ControllerLinkConfiguration? = nil, healthDirectory: String? = nil,
        healthThresholds: HealthThresholds = HealthThresholds()
    ) {
        self.controller = controller
        self.healthDirectory = healthDirectory
        self.healthThresholds = healthThresholds
        self.metricsToken = metricsToken
        self.incomingResumeTimeout = incomingResumeTimeout
        self.keyFile = keyFile
        self.incomingReservationSeconds = incomingReservationSeconds
        self.reconcileInterval = reconcileInterval
        self.stateDirectory = stateDirectory
        self.listen = listen
        self.migrationListen = migrationListen
        self.key = key
        self.version = version
        self.bodyLimitBytes = bodyLimitBytes
        self.credentialWindowSeconds = credentialWindowSeconds
        self.shutdownGrace = shutdownGrace
    }
}
