import Glibc

/// CLOCK_MONOTONIC, in nanoseconds and seconds.
enum Clock {
    @inline(__always)
    static func now() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
    }

    @inline(__always)
    static func seconds(since start: UInt64) -> Double {
        Double(now() &- start) / 1e9
    }
}
