import Glibc

/// This process's page faults and CPU time (`getrusage(RUSAGE_SELF)`), all threads together.
struct ProcessCounters {
    var minorFaults: Int
    var majorFaults: Int
    var cpuSeconds: Double
    /// Involuntary context switches (another thread or process took the CPU).
    var involuntarySwitches: Int

    static func now() -> ProcessCounters {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        return ProcessCounters(
            minorFaults: usage.ru_minflt, majorFaults: usage.ru_majflt,
            cpuSeconds: seconds(usage.ru_utime) + seconds(usage.ru_stime),
            involuntarySwitches: usage.ru_nivcsw)
    }

    static func - (a: ProcessCounters, b: ProcessCounters) -> ProcessCounters {
        ProcessCounters(
            minorFaults: a.minorFaults - b.minorFaults, majorFaults: a.majorFaults - b.majorFaults,
            cpuSeconds: a.cpuSeconds - b.cpuSeconds,
            involuntarySwitches: a.involuntarySwitches - b.involuntarySwitches)
    }
}
