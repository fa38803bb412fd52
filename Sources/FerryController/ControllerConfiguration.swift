import FerryControl
import FerryTransport

/// How `ferry control` runs.
public struct ControllerConfiguration: Sendable {
    public static let defaultListen = Endpoint(host: "127.0.0.1", port: 7480)

    /// The API's address (browsers, scripts, agents).
    public var listen: Endpoint
    /// The cluster's shared key: agents sign their heartbeats with it and the controller signs
    /// its commands to them (the agents' `--key-file`).
    public var key: SharedKey
    /// A host not heard from for longer takes no new guests, and its live guests become unknown.
    public var heartbeatTimeout: Duration
    /// How often the controller looks for silent hosts.
    public var monitorInterval: Duration
    /// How long a build waits for the agent to report the guest running.
    public var bootTimeout: Duration
    /// How long a guest's move (a live migration to another host) may take before it is cancelled.
    public var moveTimeout: Duration
    /// How long a guest's cold move (a drain's fallback) may take before it is cancelled.
    public var coldMoveTimeout: Duration
    /// How many moves may run in or out of one host at once (`GuestMover`).
    public var maxMovesPerHost: Int
    /// What a host's link carries, bytes per second, as a drain's cost model first assumes it
    /// (the migrations' measurements then replace it).
    public var linkBytesPerSecond: Double
    /// Migrations at once out of a draining host, instead of the cost model's choice (nil: the
    /// model chooses, up to `maxMovesPerHost`).
    public var drainConcurrency: Int?
    /// The share of each host's capacity a consolidation keeps free on the hosts that receive guests.
    public var consolidateHeadroom: Double
    /// Consolidate by itself when the cluster's utilization (its guests' share of the hosts that are
    /// on, in the fullest dimension) is below this fraction (nil: only when asked).
    public var consolidateBelow: Double?
    /// How often the utilization is looked at for `consolidateBelow`.
    public var consolidateInterval: Duration
    /// How often the auto-scaling groups are decided and reconciled (`GroupScaler`).
    public var scalingInterval: Duration
    /// The periodic load-balancing pass (off unless `balance.interval` is set).
    public var balance: BalanceSettings
    public var bodyLimitBytes: Int
    public var credentialWindowSeconds: Int64
    public var shutdownGrace: Duration
    /// What new users' password hashes are made with (OWASP's scrypt parameters; tests may
    /// lower them).
    public var passwordHashParameters: ScryptParameters
    /// Mark the session cookie Secure: set when a TLS proxy serves the controller.
    public var secureCookies: Bool

    public init(
        listen: Endpoint = defaultListen, key: SharedKey, heartbeatTimeout: Duration = .seconds(5),
        monitorInterval: Duration = .seconds(1), bootTimeout: Duration = .seconds(60),
        moveTimeout: Duration = .seconds(300), maxMovesPerHost: Int = 2,
        scalingInterval: Duration = .seconds(1), bodyLimitBytes: Int = 1 << 20,
        credentialWindowSeconds: Int64 = 30, shutdownGrace: Duration = .seconds(10),
        passwordHashParameters: ScryptParameters = .owasp, secureCookies: Bool = false,
        linkBytesPerSecond: Double = 1.25e9, drainConcurrency: Int? = nil, consolidateHeadroom: Double = 0.1,
        consolidateBelow: Double? = nil, consolidateInterval: Duration = .seconds(300),
        coldMoveTimeout: Duration = .seconds(1800), balance: BalanceSettings = BalanceSettings()
    ) {
        self.balance = balance
        self.coldMoveTimeout = coldMoveTimeout
        self.consolidateHeadroom = consolidateHeadroom
        self.consolidateBelow = consolidateBelow
        self.consolidateInterval = consolidateInterval
        self.drainConcurrency = drainConcurrency
        self.linkBytesPerSecond = linkBytesPerSecond
        self.listen = listen
        self.key = key
        self.heartbeatTimeout = heartbeatTimeout
        self.monitorInterval = monitorInterval
        self.bootTimeout = bootTimeout
        self.moveTimeout = moveTimeout
        self.maxMovesPerHost = maxMovesPerHost
        self.scalingInterval = scalingInterval
        self.bodyLimitBytes = bodyLimitBytes
        self.credentialWindowSeconds = credentialWindowSeconds
        self.shutdownGrace = shutdownGrace
        self.passwordHashParameters = passwordHashParameters
        self.secureCookies = secureCookies
    }
}
