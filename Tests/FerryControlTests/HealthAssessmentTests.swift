import FerryDecisions
import Testing

/// A host's hardware signals judged (`HealthAssessment`, `HealthTracker`): each signal's table,
/// rates and the deadlines they imply, a reset counter, several signals at once.
@Suite struct HealthAssessmentTests {
    static let wall: Int64 = 1_796_000_000
    static let limits = HealthThresholds()

    static func mc(_ corrected: Int64, _ uncorrected: Int64 = 0, name: String = "mc0") -> HealthReading {
        HealthReading(memoryControllers: [
            MemoryControllerCounts(name: name, corrected: corrected, uncorrected: uncorrected)
        ])
    }

    static func assess(_ reading: HealthReading, baseline: HealthReading? = nil, window: Double = 3600)
        -> HealthVerdict
    {
        HealthAssessment.assess(
            reading, at: 10_000, baseline: baseline.map { ($0, 10_000 - window) }, wallClockSeconds: wall)
    }

    static func disk(_ attributes: [SMARTAttribute], name: String = "sda") -> HealthReading {
        HealthReading(disks: [SMARTDisk(name: name, attributes: attributes)])
    }

    static func attribute(_ id: Int, value: Int = 100, threshold: Int = 10, raw: Int64 = 0) -> SMARTAttribute {
        SMARTAttribute(id: id, name: "attr\(id)", value: value, worst: value, threshold: threshold, raw: raw)
    }

    static func event(_ text: String, asserted: Bool = true, ago: Int64? = 60, sensor: String = "Memory #0x01")
        -> SELEntry
    {
        SELEntry(timeSeconds: ago.map { wall - $0 }, sensor: sensor, event: text, asserted: asserted)
    }

    @Test func memoryCounters() {
        // No baseline: counts alone, no rate.
        #expect(Self.assess(Self.mc(5)).state == .healthy)
        let ue = Self.assess(Self.mc(0, 1))
        #expect(ue.state == .failing && ue.deadlineSeconds == 900)
        #expect(ue.reason == "memory controller mc0: 1 uncorrected error")
        let atLimit = Self.assess(Self.mc(1000))
        #expect(atLimit.state == .failing && atLimit.deadlineSeconds == 900 && atLimit.reason.contains("limit 1000"))
        // 10 more in an hour, 990 to go: 99 h, past the day's horizon: a warning.
        let slow = Self.assess(Self.mc(10), baseline: Self.mc(0))
        #expect(slow.state == .warning && slow.deadlineSeconds == nil, "\(slow)")
        #expect(
            slow.reason == "memory controller mc0: corrected errors at 10/h (10 of the limit 1000); the limit in 99 h")
        // No new errors since the baseline: healthy, whatever the count since boot.
        #expect(Self.assess(Self.mc(300), baseline: Self.mc(300)).state == .healthy)
    }

    /// The deadline is the time the rate takes to reach the limit.
    @Test(
        arguments: [
            (0, 100, 3600, 9 * 3600), (500, 800, 1800, 1200), (0, 900, 600, 600 / 9),
        ] as [(Int64, Int64, Double, Double)])
    func ratesExtrapolateToTheLimit(before: Int64, now: Int64, window: Double, deadline: Double) {
        let verdict = Self.assess(Self.mc(now), baseline: Self.mc(before), window: window)
        #expect(verdict.state == .failing, "\(verdict)")
        #expect(abs((verdict.deadlineSeconds ?? 0) - deadline) < 0.001, "\(verdict)")
    }

    /// One error between looks a fifth of a second apart is at most 6 an hour, not 18,000; a counter that went down was reset (a DIMM swapped) and counts from zero.
    @Test func shortWindowsAndResetsAreNoEndlessRate() {
        let blip = Self.assess(Self.mc(1), baseline: Self.mc(0), window: 0.2)
        #expect(blip.state == .warning && blip.reason.contains("at 6.0/h"), "\(blip)")
        let reset = Self.assess(Self.mc(0), baseline: Self.mc(900), window: 60)
        #expect(reset == .healthy, "\(reset)")
        let afterReset = Self.assess(Self.mc(2), baseline: Self.mc(900), window: 3600)
        #expect(afterReset.state == .warning && afterReset.reason.contains("at 2.0/h"), "\(afterReset)")
        let swapped = Self.assess(Self.mc(0, 0), baseline: Self.mc(0, 3))
        #expect(swapped == .healthy)
    }

    @Test func smartAttributes() {
        #expect(Self.assess(Self.disk([Self.attribute(5), Self.attribute(9, raw: 40_000)])) == .healthy)
        let reallocated = Self.assess(Self.disk([Self.attribute(5, raw: 8)]))
        #expect(reallocated.state == .warning && reallocated.reason == "disk sda: SMART 5 attr5 counts 8")
        // A raw count of an attribute that is not watched says nothing.
        #expect(Self.assess(Self.disk([Self.attribute(194, raw: 40)])) == .healthy)
        let atThreshold = Self.assess(Self.disk([Self.attribute(197, value: 10, threshold: 10, raw: 3)]))
        #expect(atThreshold.state == .failing && atThreshold.deadlineSeconds == 900)
        #expect(atThreshold.reason == "disk sda: SMART 197 attr197 at 10, at or below its threshold 10")
        // A threshold of zero means the attribute never fails.
        #expect(Self.assess(Self.disk([Self.attribute(9, value: 0, threshold: 0)])) == .healthy)
    }

    @Test(arguments: [
        ("Uncorrectable ECC", SELSeverity.critical), ("Correctable ECC", .warning),
        ("Lower Critical going low", .critical), ("Upper Non-critical going high", .warning),
        ("Upper Non-recoverable going high", .critical), ("Predictive Failure", .warning),
        ("Presence detected", .info), ("Fatal error", .critical), ("Transition to Degraded", .warning),
    ])
    func eventSeverities(text: String, severity: SELSeverity) {
        #expect(Self.event(text).severity == severity)
    }

    @Test func eventLog() {
        let critical = Self.assess(HealthReading(events: [Self.event("Uncorrectable ECC")]))
        #expect(critical.state == .failing && critical.deadlineSeconds == 300)
        #expect(critical.reason == "IPMI event: Memory #0x01 Uncorrectable ECC asserted 60 s ago")
        let cleared = [
            Self.event("Lower Critical going low", ago: 90), Self.event("Lower Critical going low", asserted: false),
        ]
        #expect(Self.assess(HealthReading(events: cleared)) == .healthy)
        #expect(Self.assess(HealthReading(events: [Self.event("Uncorrectable ECC", ago: 2 * 86_400)])) == .healthy)
        #expect(Self.assess(HealthReading(events: [Self.event("Uncorrectable ECC", ago: nil)])).state == .failing)
        #expect(Self.assess(HealthReading(events: [Self.event("Correctable ECC")])).state == .warning)
        #expect(Self.assess(HealthReading(events: [Self.event("Presence detected")])) == .healthy)
    }

    /// The worst finding decides, and says how many more there are; among failing ones the
    /// earliest deadline; an unreadable file is a warning naming it, after the signals.
    @Test func theWorstSignalWins() {
        var reading = Self.mc(10)
        reading.disks = [SMARTDisk(name: "sdb", attributes: [Self.attribute(5, value: 5)])]
        reading.events = [Self.event("Uncorrectable ECC"), Self.event("Correctable ECC", sensor: "Memory #0x02")]
        reading.unreadable = ["smart/sdc.json: not JSON"]
        let verdict = Self.assess(reading, baseline: Self.mc(0))
        #expect(verdict.state == .failing && verdict.deadlineSeconds == 300, "\(verdict)")
        #expect(verdict.reason == "IPMI event: Memory #0x01 Uncorrectable ECC asserted 60 s ago (and 4 more)")
        #expect(
            verdict.detail.count == 5 && verdict.detail[1].hasPrefix("disk sdb")
                && verdict.detail.last == "unreadable: smart/sdc.json: not JSON")
        let warnings = Self.assess(
            HealthReading(
                disks: [SMARTDisk(name: "sda", attributes: [Self.attribute(187, raw: 1)])],
                events: [Self.event("Correctable ECC")]))
        #expect(
            warnings.state == .warning && warnings.reason.hasPrefix("disk sda")
                && warnings.reason.hasSuffix("(and 1 more)"))
        let onlyUnreadable = Self.assess(HealthReading(unreadable: ["ipmi/sel line 2: 3 fields"]))
        #expect(onlyUnreadable.state == .warning && onlyUnreadable.reason == "unreadable: ipmi/sel line 2: 3 fields")
        #expect(onlyUnreadable.detail == ["unreadable: ipmi/sel line 2: 3 fields"])
        #expect(onlyUnreadable.deadlineSeconds == nil)
    }

    /// The optional limits (`ferry agent --health-ce-warning`, `--health-smart-failing-raw`) and a
    /// lower failing limit change the verdict on the same reading; without them it is as before.
    @Test func thresholdsChangeTheOutcome() {
        func judge(_ reading: HealthReading, _ thresholds: HealthThresholds) -> HealthVerdict {
            HealthAssessment.assess(reading, at: 0, baseline: nil, wallClockSeconds: Self.wall, thresholds: thresholds)
        }
        #expect(judge(Self.mc(50), Self.limits) == .healthy)
        let warned = judge(Self.mc(50), HealthThresholds(correctedErrorWarning: 40))
        #expect(
            warned.state == .warning
                && warned.reason == "memory controller mc0: 50 corrected errors, at or over the warning level 40")
        #expect(judge(Self.mc(39), HealthThresholds(correctedErrorWarning: 40)) == .healthy)
        let limited = judge(Self.mc(50), HealthThresholds(correctedErrorLimit: 50, shortDeadlineSeconds: 60))
        #expect(limited.state == .failing && limited.deadlineSeconds == 60, "\(limited)")
        let reallocated = Self.disk([Self.attribute(5, raw: 3)])
        #expect(judge(reallocated, Self.limits).state == .warning)
        #expect(judge(reallocated, HealthThresholds(smartRawFailing: 4)).state == .warning)
        let failing = judge(reallocated, HealthThresholds(smartRawFailing: 3))
        #expect(failing.state == .failing && failing.reason == "disk sda: SMART 5 attr5 counts 3, at or over 3")
        #expect(failing.deadlineSeconds == 900)
        // A rate that warns keeps its own reason over the count's.
        let rate = HealthAssessment.assess(
            Self.mc(45), at: 3600, baseline: (Self.mc(20), 0), wallClockSeconds: Self.wall,
            thresholds: HealthThresholds(correctedErrorWarning: 40))
        #expect(rate.state == .warning && rate.reason.contains("corrected errors at 25/h"), "\(rate)")
    }

    /// The tracker: the first reading is the baseline, a fixed deadline runs down from the look
    /// that found it, a nearer one replaces it, and recovery drops it.
    @Test func theTrackerKeepsBaselinesAndDeadlines() {
        var tracker = HealthTracker()
        #expect(tracker.observe(Self.mc(0), at: 0, wallClockSeconds: Self.wall) == .healthy)
        // 100 errors in 10 minutes: 600/h; 900 to go: 1.5 h.
        let rising = tracker.observe(Self.mc(100), at: 600, wallClockSeconds: Self.wall)
        #expect(rising.state == .failing && abs((rising.deadlineSeconds ?? 0) - 5400) < 0.001, "\(rising)")
        // Ten minutes later with no more errors the rate since the baseline halved: the deadline
        // it implies (3 h) is later, so the first one's remainder (1.5 h - 10 min) stands.
        let later = tracker.observe(Self.mc(100), at: 1200, wallClockSeconds: Self.wall)
        #expect(later.state == .failing && abs((later.deadlineSeconds ?? 0) - 4800) < 0.001, "\(later)")
        let ue = tracker.observe(Self.mc(100, 1), at: 1300, wallClockSeconds: Self.wall)
        #expect(ue.deadlineSeconds == 900)
        #expect(tracker.observe(Self.mc(100, 1), at: 1400, wallClockSeconds: Self.wall).deadlineSeconds == 800)
        #expect(tracker.observe(Self.mc(100, 1), at: 2500, wallClockSeconds: Self.wall).deadlineSeconds == 0)
        // The counters reset (the DIMM swapped): healthy, the deadline gone; failing again later
        // starts a new one.
        #expect(tracker.observe(Self.mc(0, 0), at: 2600, wallClockSeconds: Self.wall) == .healthy)
        #expect(tracker.observe(Self.mc(0, 2), at: 2700, wallClockSeconds: Self.wall).deadlineSeconds == 900)
    }

    /// Baselines are kept every five minutes for an hour: an hour after the start the rate is
    /// over the last hour, not since the start.
    @Test func baselinesAgeOut() {
        var tracker = HealthTracker()
        for minute in stride(from: 0, through: 120, by: 1) {
            let count: Int64 = minute < 60 ? Int64(minute) * 10 : 600  // 600/h for an hour, then none
            let verdict = tracker.observe(Self.mc(count), at: Double(minute * 60), wallClockSeconds: Self.wall)
            if minute == 30 { #expect(verdict.state == .failing, "\(minute): \(verdict)") }
            if minute == 120 { #expect(verdict == .healthy, "\(minute): \(verdict)") }
        }
    }
}
