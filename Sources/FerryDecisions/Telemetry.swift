/// What a guest's telemetry samples mean; pure (times are Unix milliseconds, nothing here reads a
/// clock or a database).
///
/// **A sample** is what an agent reported about one guest at one time: the CPU time its vCPU
/// threads have used so far in their current `ferry vmm` (a counter), how many vCPUs it has, and
/// the load the guest itself published (per mille, if it did).
///
/// **CPU use** between two consecutive samples is `Δcpu / (Δt × vCPUs)`, as a percentage of the
/// guest's vCPUs (100: every vCPU ran all the time). A counter that went down (the guest moved by
/// live migration or was started again: a new vmm counts from zero) gives no point for that
/// interval: the next interval starts from the new counter. Intervals of zero or negative length
/// (two reports in the same millisecond, clocks of two controllers) give no point either.
///
/// **A group's series** is the mean over its guests, per bucket of time: each guest's points are
/// put in the bucket of their end time, a guest's latest point in a bucket stands for it (so a
/// guest reported twice in a bucket is not weighed twice, and an early report of a spike is not
/// diluted by the interval before it), then the guests' values are averaged; the bucket's point is
/// at its latest point's time.
public enum Telemetry {
    public static func usage(_ samples: [GuestSample]) -> [UsagePoint] {
        var points: [UsagePoint] = []
        var previous: GuestSample?
        for sample in samples.sorted(by: { $0.timeMilliseconds < $1.timeMilliseconds }) {
            defer { previous = sample }
            guard let before = previous, sample.cpuNanoseconds >= before.cpuNanoseconds else { continue }
            let elapsed = sample.timeMilliseconds - before.timeMilliseconds
            guard elapsed > 0, sample.vcpus > 0 else { continue }
            let used = Double(sample.cpuNanoseconds - before.cpuNanoseconds)
            let percent = used / (Double(elapsed) * 1e6 * Double(sample.vcpus)) * 100
            points.append(
                UsagePoint(
                    timeMilliseconds: sample.timeMilliseconds, cpuPercent: min(100, percent),
                    loadPermille: sample.loadPermille))
        }
        return points
    }

    /// The mean of `series` (one per guest) per bucket of `bucketMilliseconds`, oldest first: in
    /// each bucket a guest's latest point stands for it (its latest load for the load), and the
    /// bucket's point is at the time of the latest point in it, so a decision made at that time
    /// sees it. The load is the mean of the guests that reported one.
    public static func groupMean(_ series: [[UsagePoint]], bucketMilliseconds: Int64) -> [UsagePoint] {
        precondition(bucketMilliseconds > 0)
        // bucket → (latest time, sum of guests' CPU, guests, sum of loads, guests with a load)
        var buckets: [Int64: (time: Int64, cpu: Double, guests: Int, load: Double, loads: Int)] = [:]
        for points in series {
            // bucket → the guest's latest point, and its latest point with a load
            var perBucket: [Int64: (latest: UsagePoint, loaded: UsagePoint?)] = [:]
            for point in points {
                let bucket = bucketIndex(point.timeMilliseconds, bucketMilliseconds)
                var entry = perBucket[bucket] ?? (point, nil)
                if point.timeMilliseconds >= entry.latest.timeMilliseconds { entry.latest = point }
                if point.loadPermille != nil,
                    point.timeMilliseconds >= (entry.loaded?.timeMilliseconds ?? Int64.min)
                {
                    entry.loaded = point
                }
                perBucket[bucket] = entry
            }
            for (bucket, entry) in perBucket {
                var total = buckets[bucket, default: (Int64.min, 0, 0, 0, 0)]
                total.time = max(total.time, entry.latest.timeMilliseconds)
                total.cpu += entry.latest.cpuPercent
                total.guests += 1
                if let load = entry.loaded?.loadPermille {
                    total.load += Double(load)
                    total.loads += 1
                }
                buckets[bucket] = total
            }
        }
        return buckets.keys.sorted().map { bucket in
            let total = buckets[bucket]!
            return UsagePoint(
                timeMilliseconds: total.time, cpuPercent: total.cpu / Double(total.guests),
                loadPermille: total.loads > 0 ? Int((total.load / Double(total.loads)).rounded()) : nil)
        }
    }

    /// Floor division, so that times before 1970 (tests) fall in the right bucket too.
    static func bucketIndex(_ time: Int64, _ size: Int64) -> Int64 {
        time >= 0 ? time / size : -((-time + size - 1) / size)
    }
}

/// One report about one guest.
public struct GuestSample: Sendable, Equatable, Codable {
    public var timeMilliseconds: Int64
    /// CPU time of the guest's vCPU threads in its current vmm, nanoseconds.
    public var cpuNanoseconds: UInt64
    public var vcpus: Int
    /// The load the guest published, 0…1000, if it did.
    public var loadPermille: Int?

    public init(timeMilliseconds: Int64, cpuNanoseconds: UInt64, vcpus: Int, loadPermille: Int? = nil) {
        self.timeMilliseconds = timeMilliseconds
        self.cpuNanoseconds = cpuNanoseconds
        self.vcpus = vcpus
        self.loadPermille = loadPermille
    }
}

/// CPU use over the interval that ends at `timeMilliseconds`, and the guest's load then.
public struct UsagePoint: Sendable, Equatable, Codable {
    public var timeMilliseconds: Int64
    /// 0…100, of the guest's vCPUs.
    public var cpuPercent: Double
    public var loadPermille: Int?

    public init(timeMilliseconds: Int64, cpuPercent: Double, loadPermille: Int? = nil) {
        self.timeMilliseconds = timeMilliseconds
        self.cpuPercent = cpuPercent
        self.loadPermille = loadPermille
    }
}
