/// How bad a host's hardware signals are, and by when it should be empty; pure (times are
/// seconds passed in, on the caller's clocks).
///
/// Each signal gives a finding; the worst decides (`failing` before `warning` before `healthy`,
/// and among failing ones the earliest deadline), and its reason names the signal:
///
/// - **Corrected memory errors** (EDAC `ce_count`, per memory controller): a controller at or
///   over `correctedErrorLimit` is failing by `shortDeadlineSeconds`. Below it, the rate since
///   the baseline (an older reading, `HealthTracker`) extrapolates the time the count reaches the
///   limit: within `correctedErrorHorizonSeconds` it is failing with that time as its deadline;
///   later, a warning. A counter lower than the baseline's was reset (a DIMM swapped,
///   `reset_counters`): the errors since are its count, never a negative or infinite rate. The
///   rate divides by at least `minimumRateWindowSeconds` (ten minutes), so one error between two
///   looks a fifth of a second apart is 6 an hour, not 18,000.
/// - **Uncorrected memory errors** (`ue_count` above zero): failing by `shortDeadlineSeconds`.
/// - **SMART**: any attribute whose normalised value is at or below its threshold (a threshold
///   above zero) is failing by `shortDeadlineSeconds`; a watched pre-failure attribute
///   (`SMARTAttribute.watched`) with a raw count above zero is a warning.
/// - **IPMI events**: per sensor and event, the latest entry decides (a deassertion ends the
///   condition); an asserted `critical` one no older than `eventMaxAgeSeconds` is failing by
///   `criticalEventDeadlineSeconds` (the shortest); an asserted `warning` one is a warning. An
///   entry with no time (`Pre-Init`) or a time ahead of now counts as new.
/// - **Unreadable files** (`HealthReading.unreadable`): a warning each, naming the file (its
///   signal is unknown; a last good reading standing in for it is judged as above).
///
/// Optional limits (`ferry agent --health-ce-warning`, `--health-smart-failing-raw`): a
/// corrected count at or over `correctedErrorWarning` is a warning whatever its rate; a watched
/// SMART attribute counting `smartRawFailing` or more is failing by `shortDeadlineSeconds`.
public enum HealthAssessment {
    /// The verdict on `reading` at `now` (seconds on the caller's steady clock) given the
    /// `baseline` (an older reading and when it was taken) for rates; `wallClockSeconds` (Unix)
    /// ages the event log's entries.
    public static func assess(
        _ reading: HealthReading, at now: Double, baseline: (reading: HealthReading, at: Double)?,
        wallClockSeconds: Int64, thresholds: HealthThresholds = HealthThresholds()
    ) -> HealthVerdict {
        let found = findings(
            reading, at: now, baseline: baseline, wallClockSeconds: wallClockSeconds, thresholds: thresholds)
        // A file that cannot be read is a warning naming it: its signal is unknown (its last good
        // reading, if any, still judged).
        let unreadable = reading.unreadable.map { HealthFinding(state: .warning, reason: "unreadable: \($0)") }
        let bad = found.filter { $0.state != .healthy } + unreadable
        var worst: [HealthFinding] = []
        for finding in bad {
            let index = worst.firstIndex { finding.isWorse(than: $0) } ?? worst.count
            worst.insert(finding, at: index)
        }
        guard let first = worst.first else { return .healthy }
        let others = worst.count - 1
        let reason = others == 0 ? first.reason : "\(first.reason) (and \(others) more)"
        return HealthVerdict(
            state: first.state, reason: reason, deadlineSeconds: first.deadlineSeconds, detail: worst.map(\.reason))
    }

    /// What each signal says, in the order memory, disks, events.
    public static func findings(
        _ reading: HealthReading, at now: Double, baseline: (reading: HealthReading, at: Double)?,
        wallClockSeconds: Int64, thresholds: HealthThresholds = HealthThresholds()
    ) -> [HealthFinding] {
        let window = baseline.map { max(now - $0.at, thresholds.minimumRateWindowSeconds) }
        var found: [HealthFinding] = []
        for controller in reading.memoryControllers {
            let before = baseline?.reading.memoryControllers.first { $0.name == controller.name }
            found.append(
                memory(controller, before: before, windowSeconds: window ?? 0, thresholds: thresholds))
        }
        for disk in reading.disks { found.append(contentsOf: smart(disk, thresholds: thresholds)) }
        found.append(contentsOf: events(reading.events, wallClockSeconds: wallClockSeconds, thresholds: thresholds))
        return found
    }

    /// One memory controller's finding; `before` its counters in the baseline, `windowSeconds`
    /// the baseline's age (at least the minimum).
    static func memory(
        _ now: MemoryControllerCounts, before: MemoryControllerCounts?, windowSeconds: Double,
        thresholds: HealthThresholds
    ) -> HealthFinding {
        let name = "memory controller \(now.name)"
        if now.uncorrected > 0 {
            return HealthFinding(
                state: .failing, reason: "\(name): \(count(now.uncorrected, "uncorrected error"))",
                deadlineSeconds: thresholds.shortDeadlineSeconds)
        }
        let limit = thresholds.correctedErrorLimit
        if now.corrected >= limit {
            return HealthFinding(
                state: .failing,
                reason: "\(name): \(count(now.corrected, "corrected error")), at or over the limit \(limit)",
                deadlineSeconds: thresholds.shortDeadlineSeconds)
        }
        let level = thresholds.correctedErrorWarning.flatMap { level in
            now.corrected >= level ? level : nil
        }
        let quiet =
            level.map {
                HealthFinding(
                    state: .warning,
                    reason: "\(name): \(count(now.corrected, "corrected error")), at or over the warning level \($0)")
            } ?? HealthFinding(state: .healthy, reason: name)
        guard let before, windowSeconds > 0 else { return quiet }
        // A counter below the baseline's was reset: what it counts now is since then.
        let new = now.corrected >= before.corrected ? now.corrected - before.corrected : now.corrected
        guard new > 0 else { return quiet }
        let perSecond = Double(new) / windowSeconds
        let toLimit = Double(limit - now.corrected) / perSecond
        let rate =
            "\(name): corrected errors at \(rounded(perSecond * 3600))/h (\(now.corrected) of the limit \(limit))"
        guard toLimit <= thresholds.correctedErrorHorizonSeconds else {
            return HealthFinding(state: .warning, reason: "\(rate); the limit in \(duration(toLimit))")
        }
        return HealthFinding(
            state: .failing, reason: "\(rate) reach the limit in \(duration(toLimit))", deadlineSeconds: toLimit)
    }

    /// One disk's findings: every attribute at or below its threshold, every watched one counting.
    static func smart(_ disk: SMARTDisk, thresholds: HealthThresholds) -> [HealthFinding] {
        disk.attributes.compactMap { attribute in
            let name = "disk \(disk.name): SMART \(attribute.id) \(attribute.name)"
            if attribute.threshold > 0, attribute.value <= attribute.threshold {
                return HealthFinding(
                    state: .failing,
                    reason: "\(name) at \(attribute.value), at or below its threshold \(attribute.threshold)",
                    deadlineSeconds: thresholds.shortDeadlineSeconds)
            }
            if SMARTAttribute.watched.contains(attribute.id), attribute.raw > 0 {
                if let failing = thresholds.smartRawFailing, attribute.raw >= failing {
                    return HealthFinding(
                        state: .failing, reason: "\(name) counts \(attribute.raw), at or over \(failing)",
                        deadlineSeconds: thresholds.shortDeadlineSeconds)
                }
                return HealthFinding(state: .warning, reason: "\(name) counts \(attribute.raw)")
            }
            return nil
        }
    }

    /// The event log's findings: the conditions still asserted, latest entry per sensor and event.
    static func events(_ entries: [SELEntry], wallClockSeconds: Int64, thresholds: HealthThresholds)
        -> [HealthFinding]
    {
        var latest: [String: SELEntry] = [:]
        var order: [String] = []
        for entry in entries {
            let key = "\(entry.sensor)\u{0}\(entry.event)"
            if latest[key] == nil { order.append(key) }
            latest[key] = entry
        }
        return order.compactMap { key in
            guard let entry = latest[key], entry.asserted, entry.severity > .info else { return nil }
            let age = entry.timeSeconds.map { max(0, wallClockSeconds - $0) } ?? 0
            guard age <= thresholds.eventMaxAgeSeconds else { return nil }
            let reason = "IPMI event: \(entry.sensor) \(entry.event) asserted \(duration(Double(age))) ago"
            guard entry.severity == .critical else { return HealthFinding(state: .warning, reason: reason) }
            return HealthFinding(
                state: .failing, reason: reason, deadlineSeconds: thresholds.criticalEventDeadlineSeconds)
        }
    }

    static func count(_ value: Int64, _ noun: String) -> String { value == 1 ? "1 \(noun)" : "\(value) \(noun)s" }

    /// Rounded to a whole number, or to one decimal below 10.
    static func rounded(_ value: Double) -> String {
        value >= 10 ? "\(Int64(value.rounded()))" : "\(Double(Int64((value * 10).rounded())) / 10)"
    }

    /// `45 s`, `12 min`, `3.5 h`.
    static func duration(_ seconds: Double) -> String {
        if seconds < 120 { return "\(Int64(seconds.rounded())) s" }
        if seconds < 7200 { return "\(Int64((seconds / 60).rounded())) min" }
        return "\(rounded(seconds / 3600)) h"
    }
}

/// The limits `HealthAssessment` judges by (docs/control-plane.md, "Host health").
public struct HealthThresholds: Sendable, Equatable {
    /// Corrected errors one memory controller may count (since its reset) before it is failing.
    public var correctedErrorLimit: Int64
    /// Corrected errors whose rate reaches the limit within this are failing (deadline: that time);
    /// later, a warning. A day.
    public var correctedErrorHorizonSeconds: Double
    /// Rates divide by at least this (ten minutes): a short window never makes a blip look endless.
    public var minimumRateWindowSeconds: Double
    /// How old the baseline of a rate may grow (`HealthTracker` keeps readings this long: an hour).
    public var rateWindowSeconds: Double
    /// The deadline of an uncorrected error, a SMART attribute at its threshold, and a corrected
    /// count at the limit: 15 minutes.
    public var shortDeadlineSeconds: Double
    /// The deadline of a critical IPMI event, the shortest: 5 minutes.
    public var criticalEventDeadlineSeconds: Double
    /// IPMI events older than this (a day) say nothing of now.
    public var eventMaxAgeSeconds: Int64
    /// Corrected errors one memory controller may count before it is a warning whatever their
    /// rate (nil: only the rate warns).
    public var correctedErrorWarning: Int64?
    /// The raw count at which a watched SMART attribute (reallocated, pending, uncorrectable
    /// sectors) is failing rather than a warning (nil: never).
    public var smartRawFailing: Int64?

    public init(
        correctedErrorLimit: Int64 = 1000, correctedErrorHorizonSeconds: Double = 86_400,
        minimumRateWindowSeconds: Double = 600, rateWindowSeconds: Double = 3600, shortDeadlineSeconds: Double = 900,
        criticalEventDeadlineSeconds: Double = 300, eventMaxAgeSeconds: Int64 = 86_400,
        correctedErrorWarning: Int64? = nil, smartRawFailing: Int64? = nil
    ) {
        self.correctedErrorWarning = correctedErrorWarning
        self.smartRawFailing = smartRawFailing
        self.correctedErrorLimit = correctedErrorLimit
        self.correctedErrorHorizonSeconds = correctedErrorHorizonSeconds
        self.minimumRateWindowSeconds = minimumRateWindowSeconds
        self.rateWindowSeconds = rateWindowSeconds
        self.shortDeadlineSeconds = shortDeadlineSeconds
        self.criticalEventDeadlineSeconds = criticalEventDeadlineSeconds
        self.eventMaxAgeSeconds = eventMaxAgeSeconds
    }
}
