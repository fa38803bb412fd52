/// A guest's CPU load over a window, in the unit the balancing pass weighs guests in.
extension Telemetry {
    /// The guest's load in **vCPU-units** (busy vCPUs, 0 … `vcpus`) over the samples at or after
    /// `sinceMilliseconds`: the larger of
    /// - its **CPU use**: the CPU time its vCPU threads used over the intervals that end in the
    ///   window, divided by the intervals' length (time-weighted; an interval across a move or a
    ///   restart gives nothing, as in `usage`), and
    /// - its **demand**: the mean of the loads the guest published in the window (per mille of its
    ///   vCPUs' time spent working rather than idle), when it publishes one.
    ///
    /// Demand counts because CPU use alone hides a guest's need on a host whose CPUs are taken:
    /// a guest that wants a whole vCPU and gets half of it uses half (VMware's DRS weighs demand,
    /// not use, for the same reason). The larger of the two keeps a guest that publishes too low a
    /// load from hiding what it uses. Nil when the window holds neither.
    public static func vcpuLoad(_ samples: [GuestSample], vcpus: Int, sinceMilliseconds: Int64) -> Double? {
        var usedNanoseconds = 0.0
        var elapsedMilliseconds = 0.0
        var previous: GuestSample?
        for sample in samples.sorted(by: { $0.timeMilliseconds < $1.timeMilliseconds }) {
            defer { previous = sample }
            guard let before = previous, sample.timeMilliseconds >= sinceMilliseconds,
                sample.cpuNanoseconds >= before.cpuNanoseconds, sample.vcpus > 0
            else { continue }
            let elapsed = sample.timeMilliseconds - before.timeMilliseconds
            guard elapsed > 0 else { continue }
            let used = Double(sample.cpuNanoseconds - before.cpuNanoseconds)
            // A counter ahead of wall time (clocks of two hosts) counts as every vCPU busy.
            usedNanoseconds += min(used, Double(elapsed) * 1e6 * Double(sample.vcpus)) / Double(sample.vcpus)
            elapsedMilliseconds += Double(elapsed)
        }
        let published = samples.filter { $0.timeMilliseconds >= sinceMilliseconds }.compactMap(\.loadPermille)
        guard elapsedMilliseconds > 0 || !published.isEmpty else { return nil }
        let use = elapsedMilliseconds > 0 ? usedNanoseconds / (elapsedMilliseconds * 1e6) : 0
        let demand = published.isEmpty ? 0 : Double(published.reduce(0, +)) / Double(published.count) / 1000
        return min(1, max(use, demand)) * Double(max(0, vcpus))
    }
}
