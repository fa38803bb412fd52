import Glibc

/// A pthread mutex and two condition variables on `CLOCK_MONOTONIC`, at stable heap addresses
/// for the object's lifetime: how a guest's vCPU threads and the thread that controls them
/// (pause, resume, stop) meet. vCPUs wait on `vcpuCondition` (parked, pacing, finished), the
/// controlling thread on `controlCondition` (for vCPUs to park or finish). Timed waits take
/// monotonic deadlines, so a clock change cannot stretch a pacing sleep.
///
/// Why not `Synchronization.Mutex`, the lock everywhere else: threads here wait for a condition
/// under the lock, with a CLOCK_MONOTONIC deadline, which Mutex cannot do; pthread_cond can.
/// Why not `MonotonicCondition`, the condition everywhere else: that one has a single condition
/// variable, and here two kinds of waiter (vCPUs, controller) share one mutex, each woken apart.
///
/// `@unchecked Sendable`: pthread primitives are made for sharing between threads; the pointers
/// never change.
public final class VCPUMonitor: @unchecked Sendable {
    public let mutex: UnsafeMutablePointer<pthread_mutex_t>
    public let vcpuCondition: UnsafeMutablePointer<pthread_cond_t>
    public let controlCondition: UnsafeMutablePointer<pthread_cond_t>

    public init() {
        mutex = .allocate(capacity: 1)
        vcpuCondition = .allocate(capacity: 1)
        controlCondition = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        MonotonicCondition.initialize(monotonic: vcpuCondition)
        MonotonicCondition.initialize(monotonic: controlCondition)
    }

    deinit {
        pthread_cond_destroy(vcpuCondition)
        pthread_cond_destroy(controlCondition)
        pthread_mutex_destroy(mutex)
        vcpuCondition.deallocate()
        controlCondition.deallocate()
        mutex.deallocate()
    }

    /// Runs `body` with the mutex held.
    @inline(__always)
    public func locked<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}
