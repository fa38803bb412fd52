import Foundation

/// How long a login for a user name must wait after its consecutive failures: the first
/// `freeFailures` cost nothing, then each failure doubles the wait from `firstDelay` up to
/// `maximumDelay`, counted from the last failure. A success resets the count. Pure: the store
/// keeps the count and the time, and asks here in the transaction that counts the attempt.
public struct LoginThrottle: Sendable, Hashable {
    public var freeFailures: Int
    public var firstDelay: Duration
    public var maximumDelay: Duration

    public init(freeFailures: Int, firstDelay: Duration, maximumDelay: Duration) {
        precondition(freeFailures >= 0 && firstDelay > .zero && maximumDelay >= firstDelay)
        self.freeFailures = freeFailures
        self.firstDelay = firstDelay
        self.maximumDelay = maximumDelay
    }

    /// Three free failures, then 1 s, 2 s, 4 s, … up to 5 minutes.
    public static let standard = LoginThrottle(freeFailures: 3, firstDelay: .seconds(1), maximumDelay: .seconds(300))

    public enum Decision: Sendable, Hashable {
        case allowed
        case throttled(retryAfter: Duration)
    }

    /// The wait that `failures` consecutive failures impose after the last of them.
    public func delay(afterFailures failures: Int) -> Duration {
        guard failures >= freeFailures else { return .zero }
        let doublings = failures - freeFailures
        // 2^40 seconds is far beyond any cap: stop doubling before Duration overflows.
        guard doublings < 40 else { return maximumDelay }
        return min(maximumDelay, firstDelay * (1 << doublings))
    }

    /// Whether an attempt at `now` may go ahead, after `failures` consecutive failures, the last
    /// at `lastFailure`. A clock that went back counts as no time passed.
    public func decide(failures: Int, lastFailure: Date?, now: Date) -> Decision {
        let delay = delay(afterFailures: failures)
        guard delay > .zero, let lastFailure else { return .allowed }
        let elapsedMilliseconds = max(0, Int64((now.timeIntervalSince(lastFailure) * 1000).rounded()))
        let elapsed = Duration.milliseconds(elapsedMilliseconds)
        return elapsed >= delay ? .allowed : .throttled(retryAfter: delay - elapsed)
    }
}
