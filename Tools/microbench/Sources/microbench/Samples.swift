/// Wall times of repeated runs of one benchmark, in seconds.
struct Samples {
    private(set) var seconds: [Double] = []

    mutating func add(_ value: Double) { seconds.append(value) }

    var median: Double {
        let sorted = seconds.sorted()
        let middle = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
    }
    var fastest: Double { seconds.min() ?? .nan }
    var slowest: Double { seconds.max() ?? .nan }
}

/// Runs `body` once and returns its wall time (CLOCK_MONOTONIC) in seconds.
@inline(__always)
func timed(_ body: () throws -> Void) rethrows -> Double {
    let start = Clock.now()
    try body()
    return Clock.seconds(since: start)
}

/// `warmups` untimed runs of `body`, then `repetitions` timed ones.
func measure(repetitions: Int, warmups: Int = 1, _ body: () throws -> Void) rethrows -> Samples {
    for _ in 0..<warmups { try body() }
    var samples = Samples()
    for _ in 0..<repetitions { samples.add(try timed(body)) }
    return samples
}
