/// An agent's running judgement of its host's signals, one reading at a time; pure (the caller
/// passes its steady clock's seconds and the wall clock's Unix seconds).
///
/// - **Baselines for rates**: it keeps a reading every twelfth of `rateWindowSeconds` (five
///   minutes of an hour) and drops those older than the window; the oldest kept is the baseline
///   (the first reading until there is an older one). Looks every fifth of a second thus rate
///   over minutes to an hour, not over the last look.
/// - **Deadlines only come closer**: once failing, the host's deadline is a time, not a count of
///   seconds from each look: a later look reports what is left of it, or a nearer deadline if a
///   signal implies one. A fixed deadline (15 minutes for an uncorrected error) thus runs down
///   instead of starting again at every look. Healthy or warning again: the deadline is dropped.
public struct HealthTracker: Sendable {
    public let thresholds: HealthThresholds
    private var samples: [(at: Double, reading: HealthReading)] = []
    /// When the host should be empty, on the steady clock, while failing.
    private var deadlineAt: Double?

    public init(thresholds: HealthThresholds = HealthThresholds()) {
        self.thresholds = thresholds
    }

    /// The verdict on `reading` taken at `now`, and `reading` kept as a baseline when one is due.
    public mutating func observe(_ reading: HealthReading, at now: Double, wallClockSeconds: Int64) -> HealthVerdict {
        samples.removeAll { now - $0.at > thresholds.rateWindowSeconds }
        let baseline = samples.first
        var verdict = HealthAssessment.assess(
            reading, at: now, baseline: baseline.map { ($0.reading, $0.at) }, wallClockSeconds: wallClockSeconds,
            thresholds: thresholds)
        let every = thresholds.rateWindowSeconds / 12
        if samples.last.map({ now - $0.at >= every }) ?? true { samples.append((now, reading)) }
        guard verdict.state == .failing else {
            deadlineAt = nil
            return verdict
        }
        var left = verdict.deadlineSeconds ?? thresholds.shortDeadlineSeconds
        if let deadlineAt { left = min(left, max(0, deadlineAt - now)) }
        deadlineAt = now + left
        verdict.deadlineSeconds = left
        return verdict
    }
}
