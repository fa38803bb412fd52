// When an auto-scaling group may build its next member, after members that failed to build;
// pure (times are Unix milliseconds, as in `Billing`; the caller passes the outcomes and `now`).

/// A group's back-off after failed builds.
///
/// - **Failures in a row** are the members that failed to build (went to error without ever
///   running) since the newest member that reached running, counted from the newest member back;
///   members still building, or taken out before they were built, are passed over.
/// - **The wait** after k failures in a row is `2^k × baseMilliseconds`, at most `capMilliseconds`
///   (1 s and 5 min by default: 2 s, 4 s, 8 s … 256 s, then 300 s), from the newest failure.
/// - A member that reaches running resets it: the failures before it no longer count.
public struct BuildBackoff: Sendable, Equatable {
    /// How one member's build ended, as its journal tells.
    public enum Outcome: Sendable, Equatable {
        /// It reached running (at some time; it may have stopped since).
        case ran
        /// It went to error at `atMilliseconds` without ever running.
        case failed(atMilliseconds: Int64)
        /// Not built yet, or taken out before it was: it says nothing.
        case undecided
    }

    public static let defaultBaseMilliseconds: Int64 = 1000
    public static let defaultCapMilliseconds: Int64 = 300_000
    /// Past this many failures the wait is the cap whatever the base: older members are not read.
    public static let countedAtMost = 32

    public var failuresInARow: Int
    /// The newest failure's time (nil without failures).
    public var lastFailureMilliseconds: Int64?
    /// When the next build may start (nil without failures: now).
    public var nextAttemptMilliseconds: Int64?

    public static let none = BuildBackoff(failuresInARow: 0, lastFailureMilliseconds: nil, nextAttemptMilliseconds: nil)

    public init(failuresInARow: Int, lastFailureMilliseconds: Int64?, nextAttemptMilliseconds: Int64?) {
        self.failuresInARow = failuresInARow
        self.lastFailureMilliseconds = lastFailureMilliseconds
        self.nextAttemptMilliseconds = nextAttemptMilliseconds
    }

    /// The back-off from the members' outcomes, newest member first.
    public init(
        newestFirst outcomes: some Sequence<Outcome>, baseMilliseconds: Int64 = defaultBaseMilliseconds,
        capMilliseconds: Int64 = defaultCapMilliseconds
    ) {
        var failures = 0
        var last: Int64?
        for outcome in outcomes {
            if case .ran = outcome { break }
            guard case .failed(let at) = outcome else { continue }
            failures += 1
            last = max(last ?? at, at)
            if failures >= Self.countedAtMost { break }
        }
        let next = last.map {
            $0 + Self.wait(failures: failures, baseMilliseconds: baseMilliseconds, capMilliseconds: capMilliseconds)
        }
        self.init(failuresInARow: failures, lastFailureMilliseconds: last, nextAttemptMilliseconds: next)
    }

    /// `2^failures × base`, at most `cap`; 0 without failures.
    public static func wait(
        failures: Int, baseMilliseconds: Int64 = defaultBaseMilliseconds,
        capMilliseconds: Int64 = defaultCapMilliseconds
    ) -> Int64 {
        guard failures > 0 else { return 0 }
        guard failures < 62, baseMilliseconds <= capMilliseconds >> Int64(failures) else { return capMilliseconds }
        return min(capMilliseconds, baseMilliseconds << Int64(failures))
    }

    /// True while the group waits: a new member may not be built at `now`.
    public func waits(now: Int64) -> Bool {
        guard let nextAttemptMilliseconds else { return false }
        return now < nextAttemptMilliseconds
    }
}
