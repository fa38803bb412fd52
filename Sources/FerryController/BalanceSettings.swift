/// How the controller balances load between hosts (`ClusterBalancer`; `ferry control
/// --balance-…`). Loads are fractions of a host's vCPUs (docs/control-plane.md, "Balancing").
public struct BalanceSettings: Sendable, Equatable {
    /// Time between the end of one pass and the start of the next (nil: no periodic pass; a pass
    /// still runs when an admin asks, `POST /v1/balance`).
    public var interval: Duration?
    /// A host above it gives guests away.
    public var threshold: Double
    /// A host receiving a guest stays below `target − margin`.
    public var target: Double
    /// The hysteresis: the gap kept below the target and the least benefit of a move.
    public var margin: Double
    /// Balancing moves begun in any hour, at most (counted in the store's journal, so a restart
    /// does not reset it).
    public var maxMovesPerHour: Int
    /// A guest that moved (or whose move was tried) less than this long ago stays.
    public var coolDown: Duration
    /// The telemetry a guest's load is averaged over.
    public var window: Duration

    public init(
        interval: Duration? = nil, threshold: Double = 0.8, target: Double = 0.6, margin: Double = 0.05,
        maxMovesPerHour: Int = 12, coolDown: Duration = .seconds(600), window: Duration = .seconds(60)
    ) {
        self.interval = interval
        self.threshold = threshold
        self.target = target
        self.margin = margin
        self.maxMovesPerHour = maxMovesPerHour
        self.coolDown = coolDown
        self.window = window
    }
}
