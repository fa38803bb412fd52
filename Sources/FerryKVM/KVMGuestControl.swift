import FerrySystem
import Glibc
import Synchronization

/// What the vCPU threads and the controlling thread share: pause/stop requests, the throttle,
/// the counts of parked and halted vCPUs, and the first fatal error.
///
/// `@unchecked Sendable`: the atomics are thread-safe by themselves; every other field is only
/// touched with `mutex` held; mutex and conditions live at stable heap addresses.
final class KVMGuestControl: @unchecked Sendable {
    /// 0…99: vCPUs get (100 - throttle)% of their write budget.
    let throttle = Atomic<Int>(0)
    /// Read by vCPU threads between exits without the lock (a hint; decisions take the lock).
    let pauseRequested = Atomic<Bool>(false)
    /// The whole guest's writes per second (a Double's bits; +infinity: unpaced). Changes while
    /// the guest runs (`KVMGuest.writesPerSecond`).
    private let paceBits: Atomic<UInt64>

    /// The mutex; vCPUs wait on its `vcpuCondition`, the controlling thread on its `controlCondition`.
    private let monitor = VCPUMonitor()
    private var mutex: UnsafeMutablePointer<pthread_mutex_t> { monitor.mutex }
    private var vcpuCondition: UnsafeMutablePointer<pthread_cond_t> { monitor.vcpuCondition }
    private var controlCondition: UnsafeMutablePointer<pthread_cond_t> { monitor.controlCondition }
    private var pausing = false
    private var stopping = false
    /// A graceful shutdown was asked: budget requests answer BUDGET_SHUTDOWN.
    let shutdownRequested = Atomic<Bool>(false)
    private var parked = 0
    private var halted = 0
    private var failureText: String?
    /// Counts `wakeAll` calls: a sleeping vCPU that sees it change looks at its pacing again.
    private var wakeups = 0

    init(writesPerSecond: Double?) {
        paceBits = Atomic((writesPerSecond ?? .infinity).bitPattern)
    }

    /// The whole guest's writes per second; nil: unpaced.
    var writesPerSecond: Double? {
        get {
            let rate = Double(bitPattern: paceBits.load(ordering: .relaxed))
            return rate.isFinite ? rate : nil
        }
        set {
            paceBits.store((newValue ?? .infinity).bitPattern, ordering: .relaxed)
            wakeAll()
        }
    }

    private func locked<T>(_ body: () -> T) -> T {
        monitor.locked(body)
    }

    // MARK: controlling thread

    /// Marks the pause; the caller then kicks every vCPU and calls `waitParked`.
    func requestPause() {
        locked {
            pausing = true
            pauseRequested.store(true, ordering: .sequentiallyConsistent)
            pthread_cond_broadcast(vcpuCondition)
        }
    }

    /// Waits until every vCPU is parked or halted.
    func waitParked(vcpus: Int) {
        locked {
            while parked + halted < vcpus && failureText == nil { pthread_cond_wait(controlCondition, mutex) }
        }
    }

    func resumeAll() {
        locked {
            pausing = false
            pauseRequested.store(false, ordering: .sequentiallyConsistent)
            pthread_cond_broadcast(vcpuCondition)
        }
    }

    func requestStop() {
        locked {
            stopping = true
            pauseRequested.store(true, ordering: .sequentiallyConsistent)
            pthread_cond_broadcast(vcpuCondition)
        }
    }

    /// Asks the guest to shut down: pacing waits end, the next budget request answers BUDGET_SHUTDOWN.
    func requestShutdown() {
        locked {
            shutdownRequested.store(true, ordering: .sequentiallyConsistent)
            pthread_cond_broadcast(vcpuCondition)
        }
    }

    /// Waits until every vCPU halted (or one failed), at most `timeoutNanoseconds`; true if all halted.
    func waitHalted(vcpus: Int, timeoutNanoseconds: UInt64) -> Bool {
        let deadline = MonotonicClock.now() + timeoutNanoseconds
        return locked {
            while halted < vcpus && failureText == nil {
                if MonotonicClock.now() >= deadline { return false }
                var until = timespec(monotonicNanoseconds: deadline)
                pthread_cond_timedwait(controlCondition, mutex, &until)
            }
            return halted == vcpus
        }
    }

    var failure: String? { locked { failureText } }
    var haltedCount: Int { locked { halted } }

    // MARK: vCPU threads

    /// Parks while a pause is requested; returns false if the thread should exit.
    func parkIfRequested(onLeave: () -> Void) -> Bool {
        locked {
            if stopping { return false }
            guard pausing else { return true }
            parked += 1
            pthread_cond_broadcast(controlCondition)
            while pausing && !stopping { pthread_cond_wait(vcpuCondition, mutex) }
            parked -= 1
            if stopping { return false }
            onLeave()
            return true
        }
    }

    /// Sleeps until `deadline` (CLOCK_MONOTONIC ns) unless a pause or stop comes first; returns
    /// false when interrupted by one. A `wakeAll` (the pace or throttle changed) ends the sleep
    /// early with true: the caller recomputes its wait.
    func sleep(until deadline: UInt64) -> Bool {
        locked {
            let seen = wakeups
            while !pausing && !stopping && !shutdownRequested.load(ordering: .relaxed) {
                if MonotonicClock.now() >= deadline || wakeups != seen { return true }
                var until = timespec(monotonicNanoseconds: deadline)
                pthread_cond_timedwait(vcpuCondition, mutex, &until)
            }
            return false
        }
    }

    /// A vCPU halted: it parks for good until stop.
    func haltAndWaitForStop() {
        locked {
            halted += 1
            pthread_cond_broadcast(controlCondition)
            while !stopping { pthread_cond_wait(vcpuCondition, mutex) }
        }
    }

    /// A vCPU failed: records the first failure, wakes the controller, and waits for stop.
    func failAndWaitForStop(_ text: String) {
        locked {
            if failureText == nil { failureText = text }
            pthread_cond_broadcast(controlCondition)
            while !stopping { pthread_cond_wait(vcpuCondition, mutex) }
        }
    }

    /// Wakes sleeping vCPUs (the throttle or the pace changed).
    func wakeAll() {
        locked {
            wakeups &+= 1
            _ = pthread_cond_broadcast(vcpuCondition)
        }
    }
}
