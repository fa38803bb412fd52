import Foundation

/// The times of repeated requests, in milliseconds, and their percentiles (nearest rank).
public struct Latencies: Sendable {
    /// Sorted, fastest first.
    public let milliseconds: [Double]

    /// Times `body` `count` times in a row; with `perSecond`, starts each call on a fixed schedule
    /// (open loop: a slow call does not push the next one later than its slot).
    public init(count: Int, perSecond: Double? = nil, _ body: () throws -> Void) rethrows {
        precondition(count > 0)
        var samples: [Double] = []
        samples.reserveCapacity(count)
        let begin = ContinuousClock.now
        for index in 0..<count {
            if let perSecond {
                let slot = begin + .nanoseconds(Int64(Double(index) / perSecond * 1e9))
                let wait = slot - ContinuousClock.now
                if wait > .zero { Thread.sleep(forTimeInterval: Self.seconds(wait)) }
            }
            let start = ContinuousClock.now
            try body()
            samples.append(Self.seconds(ContinuousClock.now - start) * 1e3)
        }
        milliseconds = samples.sorted()
    }

    /// The `p`-th percentile (0 < p ≤ 1) by nearest rank: the smallest sample with at least
    /// `p` of all samples at or below it.
    public func percentile(_ p: Double) -> Double {
        let rank = Int((p * Double(milliseconds.count)).rounded(.up))
        return milliseconds[Swift.min(milliseconds.count, Swift.max(1, rank)) - 1]
    }

    public var max: Double { milliseconds[milliseconds.count - 1] }

    /// "p50 A ms, p90 B ms, p99 C ms, max D ms".
    public var summary: String {
        String(
            format: "p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms", percentile(0.5), percentile(0.9),
            percentile(0.99), max)
    }

    private static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}
