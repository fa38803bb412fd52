/// Holds a sender (the migration's page streams, a disk move's block streams) to
/// `--max-bandwidth` bytes per second of wire traffic.
///
/// A token bucket without stored tokens: after each batch it sleeps until the bytes sent since
/// the origin fit the rate. Idle time (waiting for a round's acknowledgement) may be spent later
/// only up to `burstSeconds`, so a limit is a limit and not an average over a whole migration.
public struct BandwidthLimiter: Sendable {
    public let bytesPerSecond: Double
    public static let burstSeconds = 0.010
    private var originNanos: UInt64 = 0
    private var bytesSinceOrigin: Double = 0

    public init(bytesPerSecond: Double) {
        precondition(bytesPerSecond > 0)
        self.bytesPerSecond = bytesPerSecond
    }

    /// Accounts for `bytes` just written and sleeps as long as the limit requires.
    public mutating func consumed(_ bytes: Int) {
        let due = account(bytes)
        if due > 0 { MonotonicClock.sleep(seconds: due) }
    }

    /// Accounts for `bytes` just written; returns the seconds the sender must wait before its
    /// next write, for a sender that waits in its own way (post-copy's push, which takes the
    /// pages asked for meanwhile first when the wait is over).
    public mutating func account(_ bytes: Int) -> Double {
        let now = MonotonicClock.now()
        if originNanos == 0 || Double(now &- originNanos) / 1e9 > bytesSinceOrigin / bytesPerSecond + Self.burstSeconds
        {
            // Idle for longer than the burst allowance: start over from now (minus the allowance).
            originNanos = now &- UInt64(Self.burstSeconds * 1e9)
            bytesSinceOrigin = 0
        }
        bytesSinceOrigin += Double(bytes)
        return bytesSinceOrigin / bytesPerSecond - Double(now &- originNanos) / 1e9
    }
}
