// How many guests an auto-scaling group should run, decided by one of its policies; pure (times
// are Unix milliseconds, as in `Billing`; the caller passes the samples, the history and `now`).
//
// The metric is the group's average per guest (CPU use in percent, or the guest-reported load),
// as the Kubernetes HPA's is. Every decision says why, in a sentence an operator can read.

/// Target tracking, as the Kubernetes HPA does it.
///
/// - **The formula.** With `metric` the mean of the samples of the last `metricWindowMilliseconds`,
///   the ratio `metric / target` within `1 ± tolerance`, edges included, recommends no change (0.1
///   holds a 1.05 ratio); beyond it, `ceil(current × metric / target)`.
/// - **Stabilisation.** Every recommendation is kept (the caller appends the decision's
///   `recommendation` to the history). The group scales up only to the lowest recommendation of the
///   last `scaleUpStabilisationMilliseconds` (0: at once) and down only to the highest of the last
///   `scaleDownStabilisationMilliseconds` (300 s: a spike within five minutes keeps the guests), so
///   a noisy wave does not make it flap. A recommendation made exactly a window ago is out of it.
/// - **Bounds.** The result is clamped to `[minReplicas, maxReplicas]`, last.
public struct TargetTracking: Sendable, Equatable {
    public var target: Double
    public var tolerance: Double
    public var scaleUpStabilisationMilliseconds: Int64
    public var scaleDownStabilisationMilliseconds: Int64
    public var metricWindowMilliseconds: Int64
    public var minReplicas: Int
    public var maxReplicas: Int

    /// Refused (`invalidArgument`) unless `target` is above zero, `tolerance` and the windows are
    /// at least zero, and `0 ≤ minReplicas ≤ maxReplicas`.
    public init(
        target: Double, tolerance: Double = 0.1, scaleUpStabilisationMilliseconds: Int64 = 0,
        scaleDownStabilisationMilliseconds: Int64 = 300_000, metricWindowMilliseconds: Int64 = 15_000,
        minReplicas: Int, maxReplicas: Int
    ) throws(ControlError) {
        guard target > 0, target.isFinite, tolerance >= 0, tolerance.isFinite else {
            throw ControlError(
                .invalidArgument,
                "target tracking needs a target above zero and a tolerance of at least zero, not"
                    + " \(target) and \(tolerance)")
        }
        guard scaleUpStabilisationMilliseconds >= 0, scaleDownStabilisationMilliseconds >= 0,
            metricWindowMilliseconds > 0
        else {
            throw ControlError(.invalidArgument, "target tracking's windows are at least zero (the metric's above)")
        }
        try ScalingBounds.check(minReplicas: minReplicas, maxReplicas: maxReplicas)
        self.target = target
        self.tolerance = tolerance
        self.scaleUpStabilisationMilliseconds = scaleUpStabilisationMilliseconds
        self.scaleDownStabilisationMilliseconds = scaleDownStabilisationMilliseconds
        self.metricWindowMilliseconds = metricWindowMilliseconds
        self.minReplicas = minReplicas
        self.maxReplicas = maxReplicas
    }

    /// The desired count for a group running `current` guests at `now`, from its metric `samples`
    /// and the `history` of earlier recommendations (any order; older ones are ignored).
    public func decide(current: Int, samples: [MetricSample], history: [ScalingRecommendation], now: Int64)
        -> ScalingDecision
    {
        let recent = samples.filter {
            $0.value.isFinite && $0.timeMilliseconds <= now && $0.timeMilliseconds > now - metricWindowMilliseconds
        }
        guard !recent.isEmpty else {
            let desired = ScalingBounds.clamp(current, minReplicas, maxReplicas)
            return ScalingDecision(
                current: current, desired: desired, recommendation: nil,
                reason: "no metric sample in the last \(ScalingFormat.seconds(metricWindowMilliseconds)): holding"
                    + " \(current)" + ScalingBounds.note(current, desired, minReplicas, maxReplicas))
        }
        let metric = recent.reduce(0) { $0 + $1.value } / Double(recent.count)
        let ratio = metric / target
        let raw: Int
        var reason =
            "metric \(ScalingFormat.number(metric)) is \(ScalingFormat.number(ratio)) × the target \(ScalingFormat.number(target))"
        // The slack keeps a ratio of exactly 1 + tolerance inside it (66 / 60 is 1.1000000000000001).
        if abs(ratio - 1) <= tolerance + 1e-9 {
            raw = current
            reason += ", within the tolerance of \(ScalingFormat.number(tolerance)): recommends \(current)"
        } else {
            // The slack keeps 2 × 0.6 / 0.3 at 4 rather than 5 (0.6 / 0.3 is 2.0000000000000004).
            raw = Int(max(0, min(Double(Int.max / 2), (Double(current) * ratio - 1e-9).rounded(.up))))
            reason += ": ceil(\(current) × \(ScalingFormat.number(ratio))) recommends \(raw)"
        }
        let stabilised = stabilise(current: current, raw: raw, history: history, now: now)
        reason += stabilised.note
        let desired = ScalingBounds.clamp(stabilised.replicas, minReplicas, maxReplicas)
        reason += ScalingBounds.note(stabilised.replicas, desired, minReplicas, maxReplicas)
        return ScalingDecision(
            current: current, desired: desired,
            recommendation: ScalingRecommendation(timeMilliseconds: now, replicas: raw), reason: reason)
    }

    /// `current` moved toward `raw` no further than the recommendations of each direction's window
    /// allow: up to the lowest of the up window, down to the highest of the down window (the
    /// Kubernetes HPA's `stabilizeRecommendationWithBehaviors`).
    func stabilise(current: Int, raw: Int, history: [ScalingRecommendation], now: Int64)
        -> (replicas: Int, note: String)
    {
        var lowestUp = raw
        var highestDown = raw
        for past in history where past.timeMilliseconds <= now {
            if past.timeMilliseconds > now - scaleUpStabilisationMilliseconds {
                lowestUp = min(lowestUp, past.replicas)
            }
            if past.timeMilliseconds > now - scaleDownStabilisationMilliseconds {
                highestDown = max(highestDown, past.replicas)
            }
        }
        let replicas = min(max(current, lowestUp), highestDown)
        if raw > current, replicas < raw {
            return (
                replicas,
                "; held at \(replicas) by the lowest recommendation of the last"
                    + " \(ScalingFormat.seconds(scaleUpStabilisationMilliseconds))"
            )
        }
        if raw < current, replicas > raw {
            return (
                replicas,
                "; held at \(replicas) by the highest recommendation of the last"
                    + " \(ScalingFormat.seconds(scaleDownStabilisationMilliseconds))"
            )
        }
        return (replicas, "")
    }

    /// The recommendations still inside a stabilisation window at `now`: what the caller keeps.
    public func retained(_ history: [ScalingRecommendation], now: Int64) -> [ScalingRecommendation] {
        let window = max(scaleUpStabilisationMilliseconds, scaleDownStabilisationMilliseconds)
        return history.filter { $0.timeMilliseconds > now - window }
    }
}

/// A threshold policy: `cpu > 80 for 30 s → +2, cooldown 60 s`.
///
/// - **Duration.** The metric must be beyond the threshold in every sample from the first of the
///   latest run of breaching samples to the latest sample, and that run must span at least
///   `durationMilliseconds`: one sample back inside the threshold starts the count again. A sample
///   equal to the threshold does not breach it.
/// - **Cooldown.** No action within `cooldownMilliseconds` of the group's last action (the caller
///   passes its time); a breach that outlasts the cooldown acts again.
/// - **Bounds.** `current + step` is clamped to `[minReplicas, maxReplicas]`; a group already
///   outside them is brought back whatever the metric.
public struct ThresholdPolicy: Sendable, Equatable {
    public enum Comparison: String, Sendable, Codable {
        /// `metric > threshold`.
        case above
        /// `metric < threshold`.
        case below
    }

    /// The metric's name in reasons (`cpu`, `load`).
    public var metric: String
    public var comparison: Comparison
    public var threshold: Double
    public var durationMilliseconds: Int64
    /// Guests to add (above zero) or remove (below zero).
    public var step: Int
    public var cooldownMilliseconds: Int64
    public var minReplicas: Int
    public var maxReplicas: Int

    /// Refused (`invalidArgument`) unless `step` is not zero, the duration and the cooldown are at
    /// least zero, `threshold` is a number and `0 ≤ minReplicas ≤ maxReplicas`.
    public init(
        metric: String, comparison: Comparison, threshold: Double, durationMilliseconds: Int64, step: Int,
        cooldownMilliseconds: Int64, minReplicas: Int, maxReplicas: Int
    ) throws(ControlError) {
        guard step != 0, durationMilliseconds >= 0, cooldownMilliseconds >= 0, threshold.isFinite else {
            throw ControlError(
                .invalidArgument,
                "a threshold policy needs a step other than zero, a duration and a cooldown of at"
                    + " least zero, and a threshold that is a number")
        }
        try ScalingBounds.check(minReplicas: minReplicas, maxReplicas: maxReplicas)
        self.metric = metric
        self.comparison = comparison
        self.threshold = threshold
        self.durationMilliseconds = durationMilliseconds
        self.step = step
        self.cooldownMilliseconds = cooldownMilliseconds
        self.minReplicas = minReplicas
        self.maxReplicas = maxReplicas
    }

    /// `metric > 80 for 30 s → +2, cooldown 60 s`.
    public var rule: String {
        "\(metric) \(comparison == .above ? ">" : "<") \(ScalingFormat.number(threshold)) for"
            + " \(ScalingFormat.seconds(durationMilliseconds)) → \(step > 0 ? "+" : "")\(step), cooldown"
            + " \(ScalingFormat.seconds(cooldownMilliseconds))"
    }

    func breaches(_ value: Double) -> Bool { comparison == .above ? value > threshold : value < threshold }

    /// How long the latest run of breaching samples up to `now` lasts (first to last sample); nil
    /// if the latest sample does not breach (or there is none).
    func breachMilliseconds(_ samples: [MetricSample], now: Int64) -> Int64? {
        let sorted = samples.filter { $0.timeMilliseconds <= now }.sorted { $0.timeMilliseconds < $1.timeMilliseconds }
        guard let latest = sorted.last, breaches(latest.value) else { return nil }
        var start = latest.timeMilliseconds
        for sample in sorted.reversed() {
            guard breaches(sample.value) else { break }
            start = sample.timeMilliseconds
        }
        return latest.timeMilliseconds - start
    }

    /// The desired count for a group running `current` guests at `now`, from its metric `samples`
    /// and the time of its last scaling action (nil: none yet).
    public func decide(current: Int, samples: [MetricSample], lastActionMilliseconds: Int64?, now: Int64)
        -> ScalingDecision
    {
        let bounded = ScalingBounds.clamp(current, minReplicas, maxReplicas)
        guard bounded == current else {
            return ScalingDecision(
                current: current, desired: bounded, recommendation: nil,
                reason: "\(rule): \(current)" + ScalingBounds.note(current, bounded, minReplicas, maxReplicas))
        }
        let word = comparison == .above ? "above" : "below"
        guard let held = breachMilliseconds(samples, now: now) else {
            return ScalingDecision(
                current: current, desired: current, recommendation: nil,
                reason:
                    "\(rule): the latest \(metric) sample is not \(word) \(ScalingFormat.number(threshold)): holding"
                    + " \(current)")
        }
        let breach = "\(rule): \(metric) \(word) \(ScalingFormat.number(threshold)) for \(ScalingFormat.seconds(held))"
        guard held >= durationMilliseconds else {
            return ScalingDecision(
                current: current, desired: current, recommendation: nil,
                reason: breach + " of \(ScalingFormat.seconds(durationMilliseconds)): holding \(current)")
        }
        if let last = lastActionMilliseconds, now - last < cooldownMilliseconds {
            return ScalingDecision(
                current: current, desired: current, recommendation: nil,
                reason: breach
                    + ", but the last action was \(ScalingFormat.seconds(now - last)) ago: holding \(current)")
        }
        let (sum, overflow) = current.addingReportingOverflow(step)
        let wanted = overflow ? (step > 0 ? Int.max : Int.min) : sum
        let desired = ScalingBounds.clamp(wanted, minReplicas, maxReplicas)
        return ScalingDecision(
            current: current, desired: desired, recommendation: nil,
            reason: breach + ": \(current) → \(wanted)" + ScalingBounds.note(wanted, desired, minReplicas, maxReplicas))
    }
}

/// A scaling policy's answer.
public struct ScalingDecision: Sendable, Equatable, CustomStringConvertible {
    public var current: Int
    public var desired: Int
    /// Target tracking's unstabilised recommendation, for the caller to add to the history (nil
    /// when there was no metric, and for threshold policies).
    public var recommendation: ScalingRecommendation?
    /// Why, for an operator: the metric, the rule, and what held or clamped the count.
    public var reason: String

    public init(current: Int, desired: Int, recommendation: ScalingRecommendation?, reason: String) {
        self.current = current
        self.desired = desired
        self.recommendation = recommendation
        self.reason = reason
    }

    /// Guests to add (above zero) or remove (below zero).
    public var change: Int { desired - current }

    public var description: String { "\(current) → \(desired): \(reason)" }
}

/// One sample of a group's metric.
public struct MetricSample: Sendable, Equatable {
    public var timeMilliseconds: Int64
    public var value: Double

    public init(timeMilliseconds: Int64, value: Double) {
        self.timeMilliseconds = timeMilliseconds
        self.value = value
    }
}

/// A count target tracking recommended at a time, before stabilisation.
public struct ScalingRecommendation: Sendable, Equatable, Hashable {
    public var timeMilliseconds: Int64
    public var replicas: Int

    public init(timeMilliseconds: Int64, replicas: Int) {
        self.timeMilliseconds = timeMilliseconds
        self.replicas = replicas
    }
}

/// A group's `[minReplicas, maxReplicas]`.
enum ScalingBounds {
    static func check(minReplicas: Int, maxReplicas: Int) throws(ControlError) {
        guard minReplicas >= 0, minReplicas <= maxReplicas else {
            throw ControlError(
                .invalidArgument, "a group's bounds need 0 ≤ min ≤ max, not min \(minReplicas) and max \(maxReplicas)")
        }
    }

    static func clamp(_ replicas: Int, _ minReplicas: Int, _ maxReplicas: Int) -> Int {
        min(max(replicas, minReplicas), maxReplicas)
    }

    /// "; clamped to max 10" when clamping changed `replicas` to `desired`; empty otherwise.
    static func note(_ replicas: Int, _ desired: Int, _ minReplicas: Int, _ maxReplicas: Int) -> String {
        if desired > replicas { return "; raised to the minimum \(minReplicas)" }
        if desired < replicas { return "; lowered to the maximum \(maxReplicas)" }
        return ""
    }
}

/// Numbers in reasons: two decimals at most, no float noise.
enum ScalingFormat {
    static func number(_ value: Double) -> String {
        guard value.isFinite, abs(value) < 1e12 else { return String(describing: value) }
        let rounded = (value * 100).rounded() / 100
        if rounded == rounded.rounded() { return String(Int(rounded)) }
        return String(describing: rounded)
    }

    static func seconds(_ milliseconds: Int64) -> String { number(Double(milliseconds) / 1000) + " s" }
}
