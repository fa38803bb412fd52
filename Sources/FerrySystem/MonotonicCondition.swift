import Glibc

/// A lock and one condition variable whose timed waits run on CLOCK_MONOTONIC: the one way in
/// this project to wait for state that another thread changes, with or without a deadline.
/// State that is only guarded, never waited for, uses `Synchronization.Mutex` instead.
///
/// Why not Foundation's `NSCondition`: its `wait(until: Date)` waits on the wall clock, so a
/// clock step (NTP, `date -s`) stretches or cuts the timeout. Here deadlines are
/// `MonotonicClock.now()` nanoseconds, and the condition variable is set to that clock
/// (`pthread_condattr_setclock`), so a clock change cannot move them.
///
/// Use: the state lives in the owning class, read and changed only inside `withLock`; a waiter
/// loops on its predicate inside `withLock` and calls `wait()` or `wait(untilNanoseconds:)`,
/// which release the lock while they wait and hold it again when they return; whoever changes
/// the state calls `signal()` or `broadcast()` inside `withLock`.
///
///     let deadline = MonotonicClock.deadline(afterSeconds: 2)
///     let ready = condition.withLock {
///         while !done { if !condition.wait(untilNanoseconds: deadline) { return done } }
///         return true
///     }
///
/// The lock is not recursive: `withLock` must not be entered again on the same thread.
///
/// `@unchecked Sendable`: pthread primitives are made for sharing between threads; they live at
/// stable heap addresses that never change for the object's lifetime.
public final class MonotonicCondition: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>

    public init() {
        mutex = .allocate(capacity: 1)
        condition = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        Self.initialize(monotonic: condition)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    /// Initializes `condition` as a condition variable whose timed waits take CLOCK_MONOTONIC
    /// deadlines (`timespec(monotonicNanoseconds:)`).
    public static func initialize(monotonic condition: UnsafeMutablePointer<pthread_cond_t>) {
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    /// Runs `body` with the lock held; `wait`, `signal` and `broadcast` are called from inside it.
    @inline(__always)
    public func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    /// Waits (the lock released meanwhile) until signalled. Like every condition wait it may
    /// also return spuriously: callers loop on their predicate. Only inside `withLock`.
    public func wait() {
        pthread_cond_wait(condition, mutex)
    }

    /// Waits (the lock released meanwhile) until signalled or until `deadline`, nanoseconds on
    /// `MonotonicClock.now()`'s scale. False when the deadline passed (it may be in the past
    /// already: false at once); true when woken, possibly spuriously. Only inside `withLock`.
    @discardableResult
    public func wait(untilNanoseconds deadline: UInt64) -> Bool {
        // Beyond Int.max ns (292 years of uptime; UInt64.max from `deadline(after…)` for an
        // interval too long to count): no deadline.
        guard deadline < UInt64(Int.max) else {
            wait()
            return true
        }
        var until = timespec(monotonicNanoseconds: deadline)
        return pthread_cond_timedwait(condition, mutex, &until) != ETIMEDOUT
    }

    /// Wakes one waiter (if any). Call inside `withLock`.
    public func signal() {
        pthread_cond_signal(condition)
    }

    /// Wakes every waiter. Call inside `withLock`.
    public func broadcast() {
        pthread_cond_broadcast(condition)
    }
}

extension MonotonicClock {
    /// The deadline `seconds` from now on this clock, for `MonotonicCondition.wait(untilNanoseconds:)`.
    /// A negative or NaN interval is now; an interval too long for 64 bits of nanoseconds (or
    /// infinity) is `UInt64.max`, which waits without a deadline.
    public static func deadline(afterSeconds seconds: Double) -> UInt64 {
        let nanoseconds = seconds * 1e9
        guard nanoseconds > 0 else { return now() }
        guard nanoseconds < 1.8e19 else { return .max }
        let (sum, overflow) = now().addingReportingOverflow(UInt64(nanoseconds))
        return overflow ? .max : sum
    }

    /// The deadline `milliseconds` from now (negative: now).
    public static func deadline(afterMilliseconds milliseconds: Int) -> UInt64 {
        guard milliseconds > 0 else { return now() }
        let (product, overflow) = UInt64(milliseconds).multipliedReportingOverflow(by: 1_000_000)
        if overflow { return .max }
        let (sum, overflowed) = now().addingReportingOverflow(product)
        return overflowed ? .max : sum
    }
}
