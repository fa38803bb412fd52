import FerrySystem
import Glibc
import Synchronization

/// What the vCPU threads and the controlling thread share: the run/pause/stop requests, the
/// throttle, and the counts of parked and finished vCPUs.
///
/// `@unchecked Sendable`: the atomics are thread-safe by themselves; `pausing`, `stopping`,
/// `parked` and `finished` are only touched with `mutex` held; the mutex and condition variables
/// live at stable heap addresses for the object's lifetime.
final class GuestControl: @unchecked Sendable {
    /// Bits of `request`: non-zero means "leave the run loop and look".
    static let pauseBit = 1, stopBit = 2
    /// Read by vCPUs on every step (relaxed); changed only with `mutex` held.
    let request = Atomic<Int>(0)
    /// 0…99: vCPUs run at (100 - throttle)% of their rate.
    let throttle = Atomic<Int>(0)
    /// The pace set while running (a Double's bits: the whole guest's pages per second; NaN: the
    /// configured rate; +infinity: unpaced).
    private let paceBits = Atomic<UInt64>(Double.nan.bitPattern)

    /// The pace the vCPUs follow now.
    var pace: GuestPace {
        get {
            let value = Double(bitPattern: paceBits.load(ordering: .relaxed))
            if value.isNaN { return .configured }
            return value.isFinite ? .pagesPerSecond(value) : .unpaced
        }
        set {
            let bits: Double =
                switch newValue {
                case .configured: .nan
                case .unpaced: .infinity
                case .pagesPerSecond(let rate): rate
                }
            paceBits.store(bits.bitPattern, ordering: .relaxed)
            wakeAll()
        }
    }

    /// The mutex; vCPUs wait on its `vcpuCondition`, the controlling thread on its `controlCondition`.
    private let monitor = VCPUMonitor()
    private var mutex: UnsafeMutablePointer<pthread_mutex_t> { monitor.mutex }
    private var vcpuCondition: UnsafeMutablePointer<pthread_cond_t> { monitor.vcpuCondition }
    private var controlCondition: UnsafeMutablePointer<pthread_cond_t> { monitor.controlCondition }

    private var pausing = false
    private var stopping = false
    /// vCPUs waiting at a safe point (parked for a pause, or finished).
    private var parked = 0
    /// vCPUs that reached their step limit or have nothing to do.
    private var finished = 0

    private func locked<T>(_ body: () -> T) -> T {
        monitor.locked(body)
    }

    // MARK: controlling thread

    /// Asks every vCPU to park and waits until all `vcpus` are parked (or finished).
    func pauseAll(vcpus: Int) {
        locked {
            pausing = true
            request.bitwiseOr(Self.pauseBit, ordering: .relaxed)
            pthread_cond_broadcast(vcpuCondition)
            while parked < vcpus { pthread_cond_wait(controlCondition, mutex) }
        }
    }

    /// Before the vCPU threads exist: each parks at its first look, before any step (a guest that
    /// starts paused). `pauseAll` then waits for them as usual.
    func requestPause() {
        locked {
            pausing = true
            request.bitwiseOr(Self.pauseBit, ordering: .relaxed)
        }
    }

    func resumeAll() {
        locked {
            pausing = false
            request.bitwiseAnd(~Self.pauseBit, ordering: .relaxed)
            pthread_cond_broadcast(vcpuCondition)
        }
    }

    /// Tells every vCPU thread to exit (the caller joins them).
    func stopAll() {
        locked {
            stopping = true
            request.bitwiseOr(Self.stopBit, ordering: .relaxed)
            pthread_cond_broadcast(vcpuCondition)
        }
    }

    /// Wakes sleeping vCPUs so they pick up a new throttle at once.
    func wakeAll() {
        locked { _ = pthread_cond_broadcast(vcpuCondition) }
    }

    /// Waits until all `vcpus` have finished (reached their step limits or have nothing to do).
    func waitUntilFinished(vcpus: Int) {
        locked {
            while finished < vcpus { pthread_cond_wait(controlCondition, mutex) }
        }
    }

    /// Runs `body` with the mutex held: what vCPUs wrote before parking is visible to it.
    func synchronized<T>(_ body: () -> T) -> T { locked(body) }

    // MARK: vCPU threads

    /// Parks the calling vCPU while a pause is in force. Returns false if the guest is stopping
    /// (the thread must exit), true when it may run again.
    func park() -> Bool {
        locked {
            if stopping { return false }
            parked += 1
            pthread_cond_broadcast(controlCondition)
            while pausing && !stopping { pthread_cond_wait(vcpuCondition, mutex) }
            parked -= 1
            return !stopping
        }
    }

    /// Marks the calling vCPU finished and waits, counted as parked, until the guest stops.
    func finishAndWaitForStop() {
        locked {
            finished += 1
            parked += 1
            pthread_cond_broadcast(controlCondition)
            while !stopping { pthread_cond_wait(vcpuCondition, mutex) }
        }
    }

    /// Sleeps up to `nanoseconds` unless a request is pending; returns early when woken by
    /// pause, stop or a throttle change.
    func sleep(nanoseconds: Int64) {
        var deadline = timespec(monotonicNanoseconds: MonotonicClock.now() &+ UInt64(max(0, nanoseconds)))
        locked {
            if request.load(ordering: .relaxed) == 0 {
                _ = pthread_cond_timedwait(vcpuCondition, mutex, &deadline)
            }
        }
    }
}

/// How fast a running guest's vCPUs write.
public enum GuestPace: Equatable, Sendable {
    /// The configuration's workload rate.
    case configured
    /// As fast as the vCPUs go.
    case unpaced
    /// The whole guest's pages per second, shared among its vCPUs.
    case pagesPerSecond(Double)
}
