import FerrySystem
import FerryTransport
import Foundation

/// The source's hard limit on a blackout: from pausing the vCPUs to reading `VERIFIED`.
///
/// Every read and write of the blackout (the final pages on every page stream, `DEVICE_STATE`,
/// `COMPLETE`, the wait for `VERIFIED`) blocks in the kernel, and a destination that goes silent,
/// or answers one byte at a time, would keep each of them waiting for its own timeout while the
/// guest stays paused. Instead of a timeout per call, one watchdog thread waits for the deadline
/// and then closes every connection of the migration, so whichever call is blocked returns at
/// once; the blackout fails and the guest resumes on the source (no `COMMIT` was written).
///
/// `@unchecked Sendable`: the state (`state`, `connections`) is guarded by `condition`.
final class BlackoutDeadline: @unchecked Sendable {
    enum State {
        case armed
        /// The blackout ended in time (`disarm` returned true).
        case disarmed
        /// The deadline passed first and the connections were closed.
        case expired
    }

    let limitMs: Int
    private let condition = MonotonicCondition()
    private var state = State.armed
    private let connections: [FramedConnection]
    private let deadline: UInt64

    /// Starts watching `connections` for `limitMs` milliseconds from now.
    init(limitMs: Int, connections: [FramedConnection]) {
        self.limitMs = limitMs
        self.connections = connections
        deadline = MonotonicClock.now() &+ UInt64(max(limitMs, 0)) &* 1_000_000
        let thread = Thread { [self] in watch() }
        thread.name = "ferry-blackout-deadline"
        thread.start()
    }

    private func watch() {
        let expired = condition.withLock {
            while state == .armed {
                if MonotonicClock.now() >= deadline {
                    state = .expired
                    break
                }
                condition.wait(untilNanoseconds: deadline)
            }
            return state == .expired
        }
        if expired {
            for connection in connections { connection.close() }
        }
    }

    /// Ends the watch. True when the blackout finished in time; false when the deadline had
    /// already passed (the connections are closed then, and the blackout counts as failed even if
    /// its last reply arrived).
    @discardableResult
    func disarm() -> Bool {
        condition.withLock {
            if state == .armed {
                state = .disarmed
                condition.broadcast()
            }
            return state == .disarmed
        }
    }

    var hasExpired: Bool {
        condition.withLock { state == .expired }
    }

    /// The failure to report when the deadline passed.
    func failure(during phase: String) -> MigrationError {
        MigrationError(
            .transport,
            "the blackout exceeded --blackout-timeout (\(limitMs) ms) \(phase): the destination did not verify the guest in time, so the source stopped waiting and resumed it",
            guest: .source)
    }

    /// The default limit: 20 times the downtime target, at least one second.
    static func defaultLimitMs(downtimeTargetSeconds: Double) -> Int {
        let twenty = downtimeTargetSeconds.isFinite ? downtimeTargetSeconds * 20_000 : 0
        return max(1_000, Int(min(twenty, Double(Int32.max))))
    }
}
