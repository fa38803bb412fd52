import Glibc

/// CLOCK_MONOTONIC for wall time; CLOCK_THREAD_CPUTIME_ID to see how much of it this thread ran.
enum Clock {
    @inline(__always)
    static func now() -> UInt64 { read(CLOCK_MONOTONIC) }

    /// CPU time of the calling thread (user + system), in nanoseconds.
    @inline(__always)
    static func threadCPU() -> UInt64 { read(CLOCK_THREAD_CPUTIME_ID) }

    @inline(__always)
    static func seconds(since start: UInt64) -> Double {
        Double(now() &- start) / 1e9
    }

    @inline(__always)
    private static func read(_ clock: clockid_t) -> UInt64 {
        var time = timespec()
        clock_gettime(clock, &time)
        return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
    }
}
