/// The one definition of a migration's send rate: bytes on the wire per second of sending.
///
/// "Wire" is what the page streams carry (frame headers included), not guest memory: a round of
/// zero pages moves little. "Sending" is the time the streams spend writing a round's pages
/// (a `--max-bandwidth` wait included), not the wait for its acknowledgement or the harvest, so
/// under `--max-bandwidth 10MB/s` the rate is about 10 MB/s. The live progress measures it over
/// the last seconds of sending (`SendRateWindow`); the report over each whole round.
public enum SendRate {
    /// `bytes` sent in `seconds` of sending; nil for no time.
    public static func bytesPerSecond(bytes: UInt64, seconds: Double) -> Double? {
        seconds > 0 && seconds.isFinite ? Double(bytes) / seconds : nil
    }
}

/// The send rate over the last `width` seconds of sending: pure, fed with what was sent in each
/// stretch of sending time. Time between rounds is never added, so an idle wait does not lower
/// the rate.
///
/// No rate before `minimum` seconds of sending: bytes are counted a batch at a time (1 MiB by
/// default, per stream), so over a short stretch of a slow link the count is off by up to a
/// batch per stream (measured: 7.6 MB/s after 0.4 s of a 10 MB/s cap with two streams).
public struct SendRateWindow: Sendable {
    /// Seconds of sending the rate looks back over.
    public let width: Double
    /// Seconds of sending before there is a rate.
    public let minimum: Double
    private var stretches: [(bytes: UInt64, seconds: Double)] = []
    private var bytes: UInt64 = 0
    private var seconds = 0.0

    public init(width: Double = 2, minimum: Double = 1) {
        precondition(width > 0 && minimum >= 0 && minimum <= width)
        self.width = width
        self.minimum = minimum
    }

    /// Records `bytes` sent in `seconds` of sending (the time since the previous call, within a
    /// round), then forgets the oldest stretches that the last `width` seconds no longer need.
    public mutating func add(bytes: UInt64, seconds: Double) {
        guard seconds >= 0, seconds.isFinite else { return }
        stretches.append((bytes, seconds))
        self.bytes += bytes
        self.seconds += seconds
        // Keep the oldest stretch while the others alone do not cover the window.
        while stretches.count > 1, self.seconds - stretches[0].seconds >= width {
            self.bytes -= stretches[0].bytes
            self.seconds -= stretches[0].seconds
            stretches.removeFirst()
        }
    }

    /// Bytes per second over the stretches kept (the last `width` seconds of sending, a little
    /// more when a stretch straddles the window's start); nil before `minimum` seconds of sending.
    public var bytesPerSecond: Double? {
        seconds >= minimum ? SendRate.bytesPerSecond(bytes: bytes, seconds: seconds) : nil
    }

    /// Seconds of sending the rate is measured over now.
    public var coveredSeconds: Double { seconds }
}
