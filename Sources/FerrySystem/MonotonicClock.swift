import Glibc

/// CLOCK_MONOTONIC in nanoseconds: the one clock of every module (deadlines, timeouts, and every
/// duration in a report).
public enum MonotonicClock {
    @inline(__always)
    public static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    /// Milliseconds, for deadlines counted in milliseconds.
    @inline(__always)
    public static func milliseconds() -> Int {
        Int(now() / 1_000_000)
    }

    @inline(__always)
    public static func seconds(since start: UInt64) -> Double {
        Double(now() &- start) / 1e9
    }

    /// Sleeps `seconds` (interruptions by signals sleep on for the time left).
    public static func sleep(seconds: Double) {
        guard seconds > 0 else { return }
        sleep(timespec(tv_sec: Int(seconds), tv_nsec: Int((seconds - Double(Int(seconds))) * 1e9)))
    }

    /// Sleeps `milliseconds`, like `sleep(seconds:)`.
    public static func sleep(milliseconds: Int) {
        guard milliseconds > 0 else { return }
        sleep(timespec(tv_sec: milliseconds / 1000, tv_nsec: (milliseconds % 1000) * 1_000_000))
    }

    private static func sleep(_ duration: timespec) {
        var request = duration
        var remaining = timespec()
        // A failure other than EINTR (EINVAL, EFAULT) cannot happen with these arguments.
        _ = try? valueOrErrno("nanosleep") {
            let result = nanosleep(&request, &remaining)
            request = remaining  // what is left, for the retry after EINTR
            return result
        }
    }
}

extension timespec {
    /// A deadline `nanoseconds` on CLOCK_MONOTONIC (`MonotonicClock.now()`'s scale), for the timed
    /// waits of condition variables set to that clock (`VCPUMonitor`).
    public init(monotonicNanoseconds nanoseconds: UInt64) {
        self.init(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
    }
}

/// CPU time (user + system) of the whole process, in nanoseconds: what a migration cost the host,
/// whichever threads spent it.
public enum ProcessCPU {
    public static func now() -> UInt64 {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        func nanos(_ t: timeval) -> UInt64 { UInt64(t.tv_sec) &* 1_000_000_000 &+ UInt64(t.tv_usec) &* 1000 }
        return nanos(usage.ru_utime) &+ nanos(usage.ru_stime)
    }
}
