import FerryControl
import FerryTestSupport
import Testing

/// CPU use from the vmm's counters, and a group's mean, against hand-worked cases and an oracle.
@Suite struct TelemetryTests {
    @Test func cpuUseIsTheCounterDeltaOverTimeAndVCPUs() {
        let samples = [
            GuestSample(timeMilliseconds: 1000, cpuNanoseconds: 0, vcpus: 2),
            GuestSample(timeMilliseconds: 2000, cpuNanoseconds: 1_000_000_000, vcpus: 2, loadPermille: 480),
            GuestSample(timeMilliseconds: 2500, cpuNanoseconds: 1_100_000_000, vcpus: 2),
        ]
        let points = Telemetry.usage(samples.reversed())
        #expect(points.map(\.timeMilliseconds) == [2000, 2500])
        #expect(points.map(\.cpuPercent) == [50, 10])
        #expect(points.map(\.loadPermille) == [480, nil])
    }

    /// The guest moved (a new vmm counts from 0): that interval is skipped, the next one counts
    /// from the new counter; two samples in one millisecond give no point; a counter running
    /// ahead of wall time (clock skew between hosts) is capped at 100%.
    @Test func aCounterThatWentDownStartsAnew() {
        let samples = [
            GuestSample(timeMilliseconds: 0, cpuNanoseconds: 5_000_000_000, vcpus: 1),
            GuestSample(timeMilliseconds: 1000, cpuNanoseconds: 5_250_000_000, vcpus: 1),
            GuestSample(timeMilliseconds: 2000, cpuNanoseconds: 10_000_000, vcpus: 1),
            GuestSample(timeMilliseconds: 3000, cpuNanoseconds: 760_000_000, vcpus: 1),
            GuestSample(timeMilliseconds: 3000, cpuNanoseconds: 770_000_000, vcpus: 1),
            GuestSample(timeMilliseconds: 3100, cpuNanoseconds: 970_000_000, vcpus: 1),
        ]
        let points = Telemetry.usage(samples)
        #expect(points.map(\.timeMilliseconds) == [1000, 3000, 3100])
        #expect(points.map { Int($0.cpuPercent.rounded()) } == [25, 75, 100])
    }

    @Test func aGroupsMeanWeighsEachGuestOncePerBucket() {
        let a = [
            UsagePoint(timeMilliseconds: 1200, cpuPercent: 10, loadPermille: 100),
            UsagePoint(timeMilliseconds: 1700, cpuPercent: 30, loadPermille: 300),
            UsagePoint(timeMilliseconds: 2200, cpuPercent: 50),
        ]
        let b = [UsagePoint(timeMilliseconds: 1500, cpuPercent: 80, loadPermille: 800)]
        let mean = Telemetry.groupMean([a, b], bucketMilliseconds: 1000)
        #expect(mean.map(\.timeMilliseconds) == [1700, 2200], "each bucket's latest point")
        #expect(mean.map(\.cpuPercent) == [55, 50], "(30 + 80) / 2: a's latest stands for it; then a alone")
        #expect(mean.map(\.loadPermille) == [550, nil])
    }

    /// Against an oracle that walks buckets one by one, over random series.
    @Test func aGroupsMeanMatchesABucketByBucketOracle() {
        var random = SplitMix64(seed: 17)
        for _ in 0..<300 {
            let series = (0..<Int.random(in: 1...4, using: &random)).map { _ in
                (0..<Int.random(in: 0...12, using: &random)).map { _ in
                    UsagePoint(
                        timeMilliseconds: Int64.random(in: -3000...6000, using: &random),
                        cpuPercent: Double(Int.random(in: 0...100, using: &random)),
                        loadPermille: Bool.random(using: &random) ? Int.random(in: 0...1000, using: &random) : nil)
                }
            }
            let size = Int64.random(in: 1...2000, using: &random)
            let got = Telemetry.groupMean(series, bucketMilliseconds: size)
            var expected: [UsagePoint] = []
            for index in (-3000 / size - 2)...(6000 / size + 1) {
                let start = index * size
                let inBucket = series.map {
                    $0.filter { $0.timeMilliseconds >= start && $0.timeMilliseconds < start + size }
                }
                let reporting = inBucket.filter { !$0.isEmpty }
                guard !reporting.isEmpty else { continue }
                // A guest's latest point (the last of equal times, in its order) stands for it.
                func latest(_ points: [UsagePoint]) -> UsagePoint? {
                    var found: UsagePoint?
                    for point in points where point.timeMilliseconds >= (found?.timeMilliseconds ?? Int64.min) {
                        found = point
                    }
                    return found
                }
                let cpu = reporting.compactMap { latest($0)?.cpuPercent }
                let loads = reporting.compactMap { points -> Double? in
                    latest(points.filter { $0.loadPermille != nil })?.loadPermille.map(Double.init)
                }
                let time = reporting.flatMap { $0.map(\.timeMilliseconds) }.max()!
                expected.append(
                    UsagePoint(
                        timeMilliseconds: time, cpuPercent: cpu.reduce(0, +) / Double(cpu.count),
                        loadPermille: loads.isEmpty ? nil : Int((loads.reduce(0, +) / Double(loads.count)).rounded())))
            }
            #expect(got.count == expected.count)
            for (g, e) in zip(got, expected) {
                #expect(g.timeMilliseconds == e.timeMilliseconds && abs(g.cpuPercent - e.cpuPercent) < 1e-9)
                #expect(g.loadPermille == e.loadPermille)
            }
        }
    }
}
