/// Times of repeated runs of one benchmark: wall seconds (CLOCK_MONOTONIC), which every rate is
/// computed from, and this thread's CPU seconds, which show how much of the wall time it ran.
struct Samples {
    private(set) var seconds: [Double] = []
    private(set) var cpuSeconds: [Double] = []

    mutating func add(_ sample: (wall: Double, cpu: Double)) {
        seconds.append(sample.wall)
        cpuSeconds.append(sample.cpu)
    }

    var median: Double {
        let sorted = seconds.sorted()
        let middle = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
    }
    var fastest: Double { seconds.min() ?? .nan }
    var slowest: Double { seconds.max() ?? .nan }

    /// CPU time over wall time of all runs, in percent: well under 100 means the thread was
    /// waiting for a CPU (other load) and the rates are low for that reason.
    /// nil when the runs add up to less than 2 ms (the thread CPU clock is too coarse for that).
    var cpuPercent: Double? {
        let wall = seconds.reduce(0, +)
        guard wall >= 0.002 else { return nil }
        return min(100, cpuSeconds.reduce(0, +) / wall * 100)
    }
}

/// Runs `body` once; returns its wall time and this thread's CPU time, in seconds.
@inline(__always)
func timed(_ body: () throws -> Void) rethrows -> (wall: Double, cpu: Double) {
    let cpuStart = Clock.threadCPU()
    let start = Clock.now()
    try body()
    let end = Clock.now()
    let cpuEnd = Clock.threadCPU()
    return (Double(end &- start) / 1e9, Double(cpuEnd &- cpuStart) / 1e9)
}

/// `warmups` untimed runs of `body`, then `repetitions` timed ones.
func measure(repetitions: Int, warmups: Int = 1, _ body: () throws -> Void) rethrows -> Samples {
    for _ in 0..<warmups { try body() }
    var samples = Samples()
    for _ in 0..<repetitions { samples.add(try timed(body)) }
    return samples
}

/// Merges the samples of two phases timed separately (e.g. writer and harvest) for `cpuPercent`.
func combined(_ a: Samples, _ b: Samples) -> Samples {
    var merged = Samples()
    for (wall, cpu) in zip(a.seconds, a.cpuSeconds) { merged.add((wall, cpu)) }
    for (wall, cpu) in zip(b.seconds, b.cpuSeconds) { merged.add((wall, cpu)) }
    return merged
}
