import FerrySystem

/// A reading of a guest's progress count (`MigratableGuest.progressSteps`) and when it was taken.
public struct GuestProgressSample: Sendable, Equatable {
    public var steps: UInt64
    /// `MonotonicClock.now()` nanoseconds.
    public var at: UInt64

    public init(steps: UInt64, at: UInt64) {
        self.steps = steps
        self.at = at
    }

    /// The guest's count now, or nil when it keeps none.
    public static func now(_ steps: UInt64?) -> GuestProgressSample? {
        steps.map { GuestProgressSample(steps: $0, at: MonotonicClock.now()) }
    }

    /// Steps and seconds from `earlier` to this reading.
    func since(_ earlier: GuestProgressSample) -> (steps: UInt64, seconds: Double) {
        (steps &- earlier.steps, Double(at &- earlier.at) / 1e9)
    }
}

/// How fast the guest got on before, during and after the migration, from its progress count:
/// what throttling (pre-copy) or waiting for pages (post-copy) cost it. Source: before the
/// migration, and from its start until the guest ran on the destination; destination: while the
/// post-copy push ran, and after the migration until it stopped here (`--run-for`).
public struct GuestProgressReport: Codable, Sendable, Equatable {
    /// Source: steps a second from `SourceOptions.progressBefore` to the migration's start
    /// (nil when that was under 100 ms: too short to measure a rate).
    public var beforeStepsPerSecond: Double?
    /// Source: steps from the migration's start until the vCPUs paused for good, and the
    /// seconds from the start until the destination resumed the guest (`RESUMED`).
    public var duringSteps: UInt64?
    public var duringSeconds: Double?
    /// Source: the share of the guest's work lost in `duringSeconds` against its rate before,
    /// in percent: 100 × (1 − duringSteps ÷ (beforeStepsPerSecond × duringSeconds)). The
    /// blackout counts (the guest did nothing); after a post-copy switch, the push's waits are
    /// the destination's (`postcopyStepsPerSecond`).
    public var slowdownPercent: Double?
    /// Destination: steps, and seconds, from the guest's resume until the last post-copy page
    /// was verified.
    public var postcopySteps: UInt64?
    public var postcopySeconds: Double?
    /// Destination: steps, and seconds, from the end of the migration (resume, or the last
    /// post-copy page) until the guest stopped here.
    public var afterSteps: UInt64?
    public var afterSeconds: Double?

    public init() {}

    public var duringStepsPerSecond: Double? { Self.rate(duringSteps, duringSeconds) }
    public var postcopyStepsPerSecond: Double? { Self.rate(postcopySteps, postcopySeconds) }
    public var afterStepsPerSecond: Double? { Self.rate(afterSteps, afterSeconds) }

    static func rate(_ steps: UInt64?, _ seconds: Double?) -> Double? {
        guard let steps, let seconds, seconds >= Self.shortestWindow else { return nil }
        return Double(steps) / seconds
    }

    /// Windows shorter than this give no rate.
    static let shortestWindow = 0.1

    /// Source: the part before the guest left, from the samples at `before`, the migration's
    /// start, the final pause and `RESUMED`.
    static func source(
        before: GuestProgressSample?, start: GuestProgressSample?, paused: GuestProgressSample?, resumedAt: UInt64
    ) -> GuestProgressReport? {
        guard let start else { return nil }
        var report = GuestProgressReport()
        if let before {
            let window = start.since(before)
            report.beforeStepsPerSecond = rate(window.steps, window.seconds)
        }
        if let paused {
            report.duringSteps = paused.since(start).steps
            report.duringSeconds = Double(resumedAt &- start.at) / 1e9
        }
        if let rate = report.beforeStepsPerSecond, rate > 0, let steps = report.duringSteps,
            let seconds = report.duringSeconds, seconds > 0
        {
            report.slowdownPercent = 100 * (1 - Double(steps) / (rate * seconds))
        }
        return report
    }

    enum CodingKeys: String, CodingKey {
        case beforeStepsPerSecond = "before_steps_per_s"
        case duringSteps = "during_steps"
        case duringSeconds = "during_s"
        case slowdownPercent = "slowdown_percent"
        case postcopySteps = "postcopy_steps"
        case postcopySeconds = "postcopy_s"
        case afterSteps = "after_steps"
        case afterSeconds = "after_s"
    }

    /// One line for the text report.
    var text: String {
        func rate(_ value: Double?) -> String { value.map { "\(Int($0.rounded()))/s" } ?? "—" }
        var parts: [String] = []
        if beforeStepsPerSecond != nil || duringSteps != nil {
            parts.append("before \(rate(beforeStepsPerSecond)), during \(rate(duringStepsPerSecond))")
        }
        if let slowdownPercent { parts.append(String(format: "slowed by %.0f%%", slowdownPercent)) }
        if postcopySteps != nil { parts.append("during the post-copy push \(rate(postcopyStepsPerSecond))") }
        if afterSteps != nil { parts.append("after \(rate(afterStepsPerSecond))") }
        return "steps " + parts.joined(separator: ", ")
    }
}
