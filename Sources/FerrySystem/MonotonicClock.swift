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

    public static func sleep(seconds: Double) {
        guard seconds > 0 else { return }
        var request = timespec(tv_sec: Int(seconds), tv_nsec: Int((seconds - Double(Int(seconds))) * 1e9))
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
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
