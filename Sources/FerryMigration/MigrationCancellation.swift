import FerrySystem
import Synchronization

/// An operator's request to stop migrating (Ctrl-C, SIGTERM, an API call), shared between the
/// thread that asks (`cancel(_:)`, safe from any thread, never blocks on the migration) and the
/// migration, which checks it at its phase boundaries and between page batches (`check`).
///
/// What a cancel does depends on where the migration is (Protocol.md section 6):
/// - source in pre-copy or in the blackout before `COMMIT` is written: the migration ends with
///   `MigrationError.Code.cancelled`, the destination is sent `ABORT` (reason `cancelled`) and
///   discards at once; the guest keeps running on the source (resumed if it was paused);
/// - source after `COMMIT` is written (from its last check, `passCommitPoint`): too late; `cancel`
///   returns false and `isPastCommit` says why; the handoff completes or is resolved as usual;
/// - destination before `VERIFIED` is sent: `ABORT` (reason `cancelled`) to the source, which
///   keeps its guest; the partial image is removed;
/// - destination after `VERIFIED` is sent: the source decides; its `COMMIT` (or `ABORT`) is
///   awaited as if there were no cancel (a lost connection: until the source comes back to
///   resolve, or `--handoff-timeout`), so that the guest never ends up running nowhere;
/// - destination after `COMMIT` is read: the guest is the destination's; it runs as usual.
///
/// Handlers registered with `onCancel` wake threads blocked on I/O (a destination's reads).
public final class MigrationCancellation: Sendable {
    private struct State {
        var reason: String?
        var handlers: [Int: @Sendable () -> Void] = [:]
        var nextHandler = 0
        /// The source passed its last point of cancel (`passCommitPoint`): COMMIT is written.
        var pastCommit = false
    }

    private let state = Mutex(State())
    /// Wakes `sleep(seconds:)` on a cancel.
    private let wakeUp = MonotonicCondition()

    public init() {}

    /// Asks the migration to stop, saying why (e.g. "SIGINT"). Returns false, doing nothing,
    /// when it was cancelled already, or when the source passed its last point of cancel
    /// (`isPastCommit`: too late, the handoff decides).
    @discardableResult
    public func cancel(_ reason: String) -> Bool {
        let handlers: [@Sendable () -> Void]? = state.withLock { state in
            guard state.reason == nil, !state.pastCommit else { return nil }
            state.reason = reason
            return Array(state.handlers.values)
        }
        guard let handlers else { return false }
        wakeUp.withLock { wakeUp.broadcast() }
        for handler in handlers { handler() }
        return true
    }

    /// Waits `seconds`, or less if the migration is cancelled meanwhile (e.g. a guest's run
    /// before migrating). Returns false when it was cancelled.
    @discardableResult
    public func sleep(seconds: Double) -> Bool {
        let deadline = MonotonicClock.deadline(afterSeconds: seconds)
        return wakeUp.withLock {
            while !isCancelled {
                if !wakeUp.wait(untilNanoseconds: deadline) { return !isCancelled }
            }
            return false
        }
    }

    /// Why the migration was cancelled; nil when it was not.
    public var reason: String? { state.withLock { $0.reason } }

    /// Whether the source passed its last point of cancel: COMMIT is being written or was, and a
    /// cancel is refused as too late (the migration completes, or its handoff is resolved).
    public var isPastCommit: Bool { state.withLock { $0.pastCommit } }

    /// The source's last point of cancel, just before it writes COMMIT: throws the cancellation
    /// if there was one, else closes the door so that every later `cancel` is refused. One step
    /// under the lock `cancel` takes: a cancel is either honoured here or refused, never lost.
    func passCommitPoint(during phase: String, guest: GuestLocation) throws(MigrationError) {
        let reason = state.withLock { state -> String? in
            if let reason = state.reason { return reason }
            state.pastCommit = true
            return nil
        }
        if let reason { throw MigrationError(.cancelled, "cancelled (\(reason)) during \(phase)", guest: guest) }
    }

    public var isCancelled: Bool { reason != nil }

    /// Runs `handler` on `cancel` (on the cancelling thread), or now if cancelled already.
    /// Returns a key for `removeHandler`.
    func onCancel(_ handler: @escaping @Sendable () -> Void) -> Int {
        let (key, runNow) = state.withLock { state in
            let key = state.nextHandler
            state.nextHandler += 1
            guard state.reason == nil else { return (key, true) }
            state.handlers[key] = handler
            return (key, false)
        }
        if runNow { handler() }
        return key
    }

    func removeHandler(_ key: Int) {
        state.withLock { _ = $0.handlers.removeValue(forKey: key) }
    }

    /// Throws the cancellation as a `MigrationError` if there was one.
    func check(during phase: String, guest: GuestLocation) throws(MigrationError) {
        if let error = error(during: phase, guest: guest) { throw error }
    }

    /// The cancellation as a `MigrationError`, or nil when there was none.
    func error(during phase: String, guest: GuestLocation) -> MigrationError? {
        guard let reason else { return nil }
        return MigrationError(.cancelled, "cancelled (\(reason)) during \(phase)", guest: guest)
    }
}

extension Optional where Wrapped == MigrationCancellation {
    /// `check` on an optional cancellation: nothing to check when there is none.
    func check(during phase: String, guest: GuestLocation) throws(MigrationError) {
        try self?.check(during: phase, guest: guest)
    }

    /// `passCommitPoint` on an optional cancellation.
    func passCommitPoint(during phase: String, guest: GuestLocation) throws(MigrationError) {
        try self?.passCommitPoint(during: phase, guest: guest)
    }
}
