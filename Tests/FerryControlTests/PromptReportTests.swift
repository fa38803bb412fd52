import FerryControl
import FerryTestSupport
import Testing

/// When an agent reports before its interval: hand cases, then the agent's loop simulated against
/// the controller's own arithmetic (`Telemetry.usage`, `groupMean`) for every instant of a spike.
@Suite struct PromptReportTests {
    static let rule = PromptReport()

    static func guest(_ cpu: UInt64?, state: String = "running", load: Int? = nil) -> PromptReport.Guest {
        PromptReport.Guest(state: state, cpuNanoseconds: cpu, vcpus: 1, loadPermille: load)
    }

    static let idle = PromptReport.Sent(
        timeMilliseconds: 0, guests: ["a": guest(1_000_000_000)], cpuPercent: ["a": 0])

    @Test func nothingChangedWaitsForTheInterval() {
        #expect(Self.rule.reason(last: Self.idle, now: 200, guests: ["a": Self.guest(1_000_000_000)]) == nil)
        // 10 points of CPU is below the 25 that count.
        #expect(Self.rule.reason(last: Self.idle, now: 500, guests: ["a": Self.guest(1_050_000_000)]) == nil)
    }

    @Test func aSpikeIsReportedOnceItsWindowIsLongEnough() {
        let busy = ["a": Self.guest(1_000_000_000 + 75_000_000)]
        #expect(Self.rule.reason(last: Self.idle, now: 100, guests: busy) == nil, "100 ms: under the 150 ms window")
        let said = Self.rule.reason(last: Self.idle, now: 200, guests: ["a": Self.guest(1_000_000_000 + 150_000_000)])
        #expect(said == "guest a uses 75% of its vCPUs (was 0%)")
        // And a drop, from a busy interval.
        var hot = Self.idle
        hot.cpuPercent = ["a": 100]
        #expect(Self.rule.reason(last: hot, now: 400, guests: ["a": Self.guest(1_000_000_000)]) != nil)
    }

    /// A change of the host's health state goes at once (a failing host is quarantined within a
    /// look); the same state again waits for the interval, and the report records the state.
    @Test func aHealthChangeIsReportedAtOnce() {
        let same = ["a": Self.guest(1_000_000_000)]
        #expect(
            Self.rule.reason(last: Self.idle, now: 10, guests: same, health: "failing")
                == "the host's health is failing (was healthy)")
        let sent = Self.rule.sent(after: Self.idle, now: 10, guests: same, health: "failing")
        #expect(sent.health == "failing")
        #expect(Self.rule.reason(last: sent, now: 20, guests: same, health: "failing") == nil)
        #expect(
            Self.rule.reason(last: sent, now: 20, guests: same, health: "warning")
                == "the host's health is warning (was failing)")
    }

    @Test func statesGuestsAndLoadsAreReportedAtOnce() {
        #expect(
            Self.rule.reason(last: Self.idle, now: 10, guests: ["a": Self.guest(nil, state: "suspended")])
                == "guest a is suspended (was running)")
        #expect(Self.rule.reason(last: Self.idle, now: 10, guests: [:]) == "guest a is gone")
        let two = ["a": Self.guest(1_000_000_000), "b": Self.guest(nil, state: "starting")]
        #expect(Self.rule.reason(last: Self.idle, now: 10, guests: two) == "guest b appeared")
        var loaded = Self.idle
        loaded.guests["a"]?.loadPermille = 100
        #expect(Self.rule.reason(last: loaded, now: 10, guests: ["a": Self.guest(1_000_000_000, load: 300)]) == nil)
        #expect(
            Self.rule.reason(last: loaded, now: 10, guests: ["a": Self.guest(1_000_000_000, load: 350)])
                == "guest a's load is 350‰ (was 100‰)")
        #expect(Self.rule.reason(last: Self.idle, now: 10, guests: ["a": Self.guest(1_000_000_000, load: 5)]) != nil)
    }

    /// A spike that began just before a look, long after the last report: the use since the
    /// previous look shows it, where the use since the report would be diluted below 25 points.
    @Test func theUseSinceThePreviousLookCounts() {
        let look = PromptReport.Sent(timeMilliseconds: 600, guests: ["a": Self.guest(1_000_000_000)])
        let spiked = ["a": Self.guest(1_000_000_000 + 198_000_000)]
        #expect(Self.rule.reason(last: Self.idle, now: 800, guests: spiked) == nil, "24.75% since the report")
        #expect(
            Self.rule.reason(last: Self.idle, previousLook: look, now: 800, guests: spiked)
                == "guest a uses 99% of its vCPUs (was 0%)")
        let recent = PromptReport.Sent(timeMilliseconds: 700, guests: look.guests)
        #expect(
            Self.rule.reason(last: Self.idle, previousLook: recent, now: 800, guests: spiked) == nil,
            "a look 100 ms ago is too short a window: the report's is used")
    }

    @Test func aGuestWithoutCountersDecidesNothingByItsCPU() {
        #expect(Self.rule.reason(last: Self.idle, now: 900, guests: ["a": Self.guest(nil)]) == nil)
        let gone = PromptReport.Sent(timeMilliseconds: 0, guests: ["a": Self.guest(nil)], cpuPercent: [:])
        #expect(Self.rule.reason(last: gone, now: 900, guests: ["a": Self.guest(900_000_000)]) == nil)
    }

    @Test func aSentReportKeepsTheUseTheControllerComputes() {
        let next = Self.rule.sent(
            after: Self.idle, now: 500, guests: ["a": Self.guest(1_250_000_000), "b": Self.guest(7)])
        #expect(next.cpuPercent == ["a": 50], "b has no report before this one")
        #expect(Self.rule.sent(after: nil, now: 0, guests: ["a": Self.guest(1)]).cpuPercent.isEmpty)
    }

    /// A guest idle until `spike`, then using its one vCPU fully. The agent looks every `watch` ms
    /// and reports every second or when `PromptReport` says so; the controller stamps each report
    /// on arrival and its scaler sees the group's series (1 s buckets). The result: how long after
    /// the spike the series first shows the guest above 50%.
    static func detection(spike: Int64, watch: Int64?) -> Int64? {
        let interval: Int64 = 1000
        func counter(_ time: Int64) -> UInt64 { UInt64(max(0, time - spike)) * 1_000_000 + 5_000_000_000 }
        var last: PromptReport.Sent?
        var previousLook: PromptReport.Sent?
        var lastAt: Int64 = 0
        var reports: [GuestSample] = []
        var time: Int64 = 0
        while time < spike + 5000 {
            let seen = ["a": guest(counter(time))]
            let early = last.flatMap { rule.reason(last: $0, previousLook: previousLook, now: time, guests: seen) }
            previousLook = PromptReport.Sent(timeMilliseconds: time, guests: seen)
            if last == nil || time >= lastAt + interval || early != nil {
                reports.append(GuestSample(timeMilliseconds: time, cpuNanoseconds: counter(time), vcpus: 1))
                last = rule.sent(after: last, now: time, guests: seen)
                lastAt = time
            }
            time = watch.map { min(lastAt + interval, time + $0) } ?? (lastAt + interval)
        }
        let series = Telemetry.groupMean([Telemetry.usage(reports)], bucketMilliseconds: 1000)
        return series.first { $0.timeMilliseconds >= spike && $0.cpuPercent > 50 }.map { $0.timeMilliseconds - spike }
    }

    @Test func aSpikeReachesTheScalerWithinTwoLooksAndAQuarter() {
        var worstPrompt: Int64 = 0
        var worstInterval: Int64 = 0
        for spike in stride(from: Int64(3000), to: 4000, by: 7) {
            let prompt = Self.detection(spike: spike, watch: 200)
            let plain = Self.detection(spike: spike, watch: nil)
            #expect(prompt != nil && plain != nil, "spike at \(spike)")
            worstPrompt = max(worstPrompt, prompt ?? .max)
            worstInterval = max(worstInterval, plain ?? .max)
        }
        // A spike less than 50 ms old at a look is under 25 points of that look's 200 ms; the
        // next look reports, with the use since the last report (diluted by the quiet time
        // before the spike, perhaps under the threshold); the one after reports the full use.
        #expect(worstPrompt <= 450, "with looks every 200 ms: \(worstPrompt) ms")
        #expect(worstInterval > 1000, "reports every second alone: \(worstInterval) ms")
    }
}
