import FerryGuestMigration
import FerryKVMMigration
import FerryTestSupport
import Testing

@testable import FerryMigration

@Suite struct ConvergencePolicyTests {
    func observation(round: Int, sent: Int, seconds: Double, dirty: Int, elapsed: Double = 1, fixed: Double = 0.002)
        -> RoundObservation
    {
        RoundObservation(
            round: round, pagesSent: sent, transferSeconds: seconds, dirtyPages: dirty,
            dirtySeconds: seconds, elapsed: elapsed, costs: BlackoutForecast.Costs(pauseSeconds: fixed),
            throttlePercent: 0)
    }

    @Test func switchesOverWhenPredictionFitsTarget() {
        var policy = ConvergencePolicy(settings: ConvergenceSettings(downtimeTarget: .seconds(0.050)))
        // Round 0 (pages in order) never switches over while pages are dirty: its rate flatters.
        let first = policy.decide(observation(round: 0, sent: 262_144, seconds: 0.5, dirty: 10_000))
        #expect(first.action == .nextRound)
        // Round 1: 20000 scattered pages in 0.05 s → 400000 pages/s (slower than round 0's 524288,
        // so the prediction uses it); 10000 dirty pages → 25 ms + 2 ms fixed.
        let decision = policy.decide(observation(round: 1, sent: 20_000, seconds: 0.05, dirty: 10_000))
        #expect(decision.action == .switchover)
        #expect(abs(decision.predictedDowntime - (0.002 + 10_000.0 / 400_000.0)) < 1e-9)
    }

    /// Pages dirtied while the source waited for ROUND_ACK join the final round: the prediction
    /// counts them (on a 1 Gbit/s link it had said 31 ms for a blackout of 52 ms without them).
    @Test func pagesDirtiedDuringTheAckWaitCount() {
        var policy = ConvergencePolicy(settings: ConvergenceSettings(downtimeTarget: .seconds(0.030)))
        _ = policy.decide(observation(round: 0, sent: 262_144, seconds: 0.5, dirty: 10_000))
        var round = observation(round: 1, sent: 20_000, seconds: 0.05, dirty: 8_000)  // 400000 pages/s
        let without = policy.decide(round)
        #expect(without.action == .switchover)  // 2 ms + 20 ms
        var again = ConvergencePolicy(settings: ConvergenceSettings(downtimeTarget: .seconds(0.030)))
        _ = again.decide(observation(round: 0, sent: 262_144, seconds: 0.5, dirty: 10_000))
        round.dirtiedSinceHarvest = 6_000
        let with = again.decide(round)
        #expect(with.action == .nextRound)  // 2 ms + 35 ms
        #expect(abs(with.predictedDowntime - (0.002 + 14_000.0 / 400_000.0)) < 1e-9)
    }

    @Test func continuesWhenPredictionExceedsTarget() {
        var policy = ConvergencePolicy(settings: ConvergenceSettings(downtimeTarget: .seconds(0.050)))
        let decision = policy.decide(observation(round: 0, sent: 262_144, seconds: 0.5, dirty: 100_000))
        #expect(decision.action == .nextRound)
        #expect(decision.predictedDowntime > 0.050)
    }

    @Test func fixedCostsCountInThePrediction() {
        var policy = ConvergencePolicy(settings: ConvergenceSettings(downtimeTarget: .seconds(0.010)))
        let decision = policy.decide(observation(round: 0, sent: 100_000, seconds: 1, dirty: 100, fixed: 0.020))
        #expect(decision.action == .nextRound)
        #expect(abs(decision.predictedDowntime - 0.021) < 1e-9)
    }

    /// With nothing left to send, another round cannot lower the blackout: switch over even though
    /// the fixed costs alone exceed the target (an idle guest over a slow link must not spin).
    @Test func switchesOverWhenOnlyFixedCostsRemain() {
        var policy = ConvergencePolicy(settings: ConvergenceSettings(downtimeTarget: .seconds(0.010)))
        let decision = policy.decide(observation(round: 0, sent: 1000, seconds: 0.01, dirty: 0, fixed: 0.020))
        #expect(decision.action == .switchover)
        #expect(decision.predictedDowntime == 0.020)
        #expect(decision.reason.contains("fixed costs"))
    }

    @Test func smallRoundsDoNotOverwriteTheRateEstimate() {
        var policy = ConvergencePolicy(settings: ConvergenceSettings(downtimeTarget: .seconds(0.001)))
        _ = policy.decide(observation(round: 0, sent: 100_000, seconds: 1.0, dirty: 50_000))
        // 10 pages in 1 s would suggest 10 pages/s; the policy keeps 100000 pages/s.
        let decision = policy.decide(observation(round: 1, sent: 10, seconds: 1.0, dirty: 50_000))
        #expect(decision.transferRate == 100_000)
    }

    @Test func predictsWithTheSlowestOfTheRecentRounds() {
        var policy = ConvergencePolicy(settings: ConvergenceSettings(downtimeTarget: .seconds(0.001), maxRounds: 100))
        _ = policy.decide(observation(round: 0, sent: 100_000, seconds: 1.0, dirty: 50_000))  // 100000 pages/s
        _ = policy.decide(observation(round: 1, sent: 50_000, seconds: 0.25, dirty: 20_000))  // 200000 pages/s
        let third = policy.decide(observation(round: 2, sent: 20_000, seconds: 0.05, dirty: 5_000))  // 400000 pages/s
        #expect(third.transferRate == 100_000)
        #expect(abs(third.predictedDowntime - (0.002 + 5_000.0 / 100_000)) < 1e-9)
        // Round 0 leaves the window after three newer measurements.
        let fourth = policy.decide(observation(round: 3, sent: 5_000, seconds: 0.0125, dirty: 1_000))  // 400000 pages/s
        #expect(fourth.transferRate == 200_000)
    }

    @Test func throttlesInStepsWhileGuestOutpacesLink() {
        var policy = ConvergencePolicy(settings: ConvergenceSettings(downtimeTarget: .seconds(0.050), maxRounds: 100))
        _ = policy.decide(observation(round: 0, sent: 262_144, seconds: 1, dirty: 200_000))
        var throttles: [Int] = []
        for round in 1...12 {
            let decision = policy.decide(observation(round: round, sent: 200_000, seconds: 1, dirty: 180_000))
            if case .throttle(let percent) = decision.action { throttles.append(percent) }
        }
        #expect(throttles == [20, 30, 40, 50, 60, 70])
    }

    @Test func noThrottleWithoutAutoConverge() {
        var policy = ConvergencePolicy(
            settings: ConvergenceSettings(downtimeTarget: .seconds(0.050), maxRounds: 100, autoConverge: false))
        for round in 0..<10 {
            let decision = policy.decide(observation(round: round, sent: 200_000, seconds: 1, dirty: 180_000))
            #expect(decision.action == .nextRound)
        }
    }

    @Test(arguments: [false, true])
    func givesUpOrForcesAtMaxRounds(force: Bool) {
        var policy = ConvergencePolicy(
            settings: ConvergenceSettings(
                downtimeTarget: .seconds(0.050), maxRounds: 3, autoConverge: false, forceSwitchover: force))
        var actions: [ConvergenceDecision.Action] = []
        for round in 0..<3 {
            actions.append(policy.decide(observation(round: round, sent: 100_000, seconds: 1, dirty: 90_000)).action)
        }
        #expect(actions == [.nextRound, .nextRound, force ? .switchover : .giveUp])
    }

    /// The round-0 rule never stretches a migration past --max-rounds.
    @Test func maxRoundsOfOneEndsAfterRoundZero() {
        var policy = ConvergencePolicy(
            settings: ConvergenceSettings(downtimeTarget: .seconds(0.050), maxRounds: 1, forceSwitchover: true))
        let decision = policy.decide(observation(round: 0, sent: 262_144, seconds: 0.5, dirty: 10))
        #expect(decision.action == .switchover)
    }

    @Test func givesUpAtTimeout() {
        var policy = ConvergencePolicy(
            settings: ConvergenceSettings(downtimeTarget: .seconds(0.050), timeout: .seconds(10)))
        let decision = policy.decide(observation(round: 1, sent: 100_000, seconds: 1, dirty: 90_000, elapsed: 10.5))
        #expect(decision.action == .giveUp)
        #expect(decision.reason.contains("--timeout"))
    }
}

/// When a migration allowed to switch to post-copy does so (`ConvergencePolicy.weighPostcopy`).
@Suite struct PostcopySwitchDecisionTests {
    /// A 2 GiB guest (524,288 pages, 2 vCPUs) on a link of 30,000 pages/s, 0.2 ms round trip.
    static func round(_ index: Int, dirty: Int, dirtyRate: Double, throttle: Int = 0, sent: Int = 100_000)
        -> RoundObservation
    {
        RoundObservation(
            round: index, pagesSent: sent, transferSeconds: Double(sent) / 30_000, dirtyPages: dirty,
            dirtySeconds: Double(dirty) / dirtyRate, elapsed: 1, costs: BlackoutForecast.Costs(pauseSeconds: 0.002),
            throttlePercent: throttle,
            pageCount: 524_288, vcpus: 2, roundTripSeconds: 0.0002)
    }

    static func policy(_ postcopy: PostcopySettings?, offered: Bool = true, maxThrottle: Int = 99)
        -> ConvergencePolicy
    {
        var policy = ConvergencePolicy(
            settings: ConvergenceSettings(
                downtimeTarget: .milliseconds(50), throttleMax: maxThrottle, postcopy: postcopy))
        policy.postcopyOffered = offered
        return policy
    }

    @Test func onlyWhenAllowedAndOffered() {
        for (settings, offered) in [(nil, true), (PostcopySettings(afterRounds: 1), false)] {
            var policy = Self.policy(settings, offered: offered)
            _ = policy.decide(Self.round(0, dirty: 90_000, dirtyRate: 60_000, sent: 524_288))
            let decision = policy.decide(Self.round(1, dirty: 90_000, dirtyRate: 60_000))
            #expect(decision.action == .nextRound)
            #expect(decision.costs == nil)
        }
    }

    @Test func afterTheRoundsAllowedButNeverInsteadOfAFittingSwitchover() {
        var policy = Self.policy(PostcopySettings(afterRounds: 2))
        // A guest that barely dirties: round 0 goes on (its rate flatters), round 1 fits the target.
        #expect(policy.decide(Self.round(0, dirty: 500, dirtyRate: 1_000, sent: 524_288)).action == .nextRound)
        #expect(policy.decide(Self.round(1, dirty: 500, dirtyRate: 1_000)).action == .switchover)
        // One that does not fit but converges without a throttle: pre-copy's cost is 0, so another
        // round, until --postcopy-after's 2 rounds are done.
        var slow = Self.policy(PostcopySettings(afterRounds: 2))
        #expect(slow.decide(Self.round(0, dirty: 9_000, dirtyRate: 9_000, sent: 524_288)).action == .nextRound)
        let late = slow.decide(Self.round(1, dirty: 9_000, dirtyRate: 9_000))
        #expect(late.action == .postcopy)
        #expect(late.reason.contains("--postcopy-after 2"))
        // --postcopy-after 1 switches after round 0 already.
        var early = Self.policy(PostcopySettings(afterRounds: 1))
        #expect(early.decide(Self.round(0, dirty: 9_000, dirtyRate: 9_000, sent: 524_288)).action == .postcopy)
    }

    /// 60,000 pages/s against a link of 30,000: pre-copy needs a throttle of 80% (the policy's steps
    /// from 20 by 10) for seconds; post-copy's waits cost less.
    @Test func whenThrottlingWouldCostTheGuestMore() throws {
        var policy = Self.policy(PostcopySettings())
        #expect(policy.decide(Self.round(0, dirty: 100_000, dirtyRate: 60_000, sent: 524_288)).action == .nextRound)
        let decision = policy.decide(Self.round(1, dirty: 100_000, dirtyRate: 60_000))
        #expect(decision.action == .postcopy)
        let costs = try #require(decision.costs)
        let precopy = try #require(costs.precopy)
        #expect(precopy.throttlePercent == 80)
        #expect(costs.postcopy.costSeconds < precopy.costSeconds)
        #expect(decision.reason.contains("throttled to 80%"))
    }

    /// A guest that outpaces the link only a little but has half its memory stale: throttling it
    /// (to 40% in the end) is cheaper than post-copy, whose vCPUs would wait on every other page
    /// they touch.
    @Test func notWhenAMildThrottleIsCheaper() throws {
        var policy = Self.policy(PostcopySettings())
        _ = policy.decide(Self.round(0, dirty: 250_000, dirtyRate: 17_000, sent: 524_288))
        let decision = policy.decide(Self.round(1, dirty: 250_000, dirtyRate: 17_000))
        #expect(decision.action == .nextRound)
        let costs = try #require(decision.costs)
        let precopy = try #require(costs.precopy)
        #expect(precopy.throttlePercent == 40)
        #expect(precopy.costSeconds < costs.postcopy.costSeconds)
    }

    /// --max-throttle 30 against a guest that needs 80%: pre-copy cannot converge, post-copy it is;
    /// without post-copy the throttle stops at 30%.
    @Test func whenPrecopyCannotConvergeWithinMaxThrottle() throws {
        var policy = Self.policy(PostcopySettings(), maxThrottle: 30)
        _ = policy.decide(Self.round(0, dirty: 100_000, dirtyRate: 60_000, sent: 524_288))
        let decision = policy.decide(Self.round(1, dirty: 100_000, dirtyRate: 60_000))
        #expect(decision.action == .postcopy)
        #expect(try #require(decision.costs).precopy == nil)
        #expect(decision.reason.contains("--max-throttle 30%"))
        var capped = Self.policy(nil, maxThrottle: 30)
        var throttles: [Int] = []
        for index in 0..<8 {
            let decision = capped.decide(
                Self.round(index, dirty: 100_000, dirtyRate: 60_000, throttle: capped.throttlePercent))
            if case .throttle(let percent) = decision.action { throttles.append(percent) }
        }
        #expect(throttles == [20, 30])
    }

    /// The rounds a 2 GiB guest writing 61,000 pages/s at random measured on a tc-shaped 1 Gbit/s
    /// link (`Tools/bench/run`, 2026-12-07): carried on, pre-copy throttled it by 20–50% over its
    /// last 4 s and it lost 5–8% of 13.4–15.4 s, 0.7–1.2 s; switched to post-copy after these
    /// rounds it lost 1.4–1.5 s (13–14% of 11.4 s). Round 0's rate counts only pages with data (the
    /// image's zero pages cost nearly nothing), so it is the slowest; the costs take the last
    /// round's. The policy keeps pre-copy, and predicts both within a factor.
    @Test func theBenchGuestOnAGigabitLinkStaysPrecopy() throws {
        var policy = Self.policy(PostcopySettings())
        let round0 = RoundObservation(
            round: 0, pagesSent: 440_000, transferSeconds: 6.849, dirtyPages: 172_297, dirtySeconds: 7.0,
            elapsed: 7.0, costs: BlackoutForecast.Costs(pauseSeconds: 0.003), throttlePercent: 0, pageCount: 524_288,
            vcpus: 2,
            roundTripSeconds: 0.0002)
        #expect(policy.decide(round0).action == .nextRound)
        let round1 = RoundObservation(
            round: 1, pagesSent: 172_297, transferSeconds: 2.279, dirtyPages: 121_976, dirtySeconds: 2.28,
            elapsed: 9.3, costs: BlackoutForecast.Costs(pauseSeconds: 0.003), throttlePercent: 0,
            dirtiedSinceHarvest: 8_000, pageCount: 524_288,
            vcpus: 2, roundTripSeconds: 0.0002)
        let decision = policy.decide(round1)
        #expect(decision.action == .nextRound, "\(decision.reason)")
        let costs = try #require(decision.costs)
        let precopy = try #require(costs.precopy)
        #expect((0.37...1.5).contains(precopy.costSeconds), "\(precopy)")
        #expect((0.7...2.8).contains(costs.postcopy.costSeconds), "\(costs.postcopy)")
    }

    @Test func insteadOfGivingUp() {
        var policy = ConvergencePolicy(
            settings: ConvergenceSettings(maxRounds: 2, autoConverge: false, postcopy: PostcopySettings()))
        policy.postcopyOffered = true
        _ = policy.decide(Self.round(0, dirty: 9_000, dirtyRate: 9_000, sent: 524_288))
        let decision = policy.decide(Self.round(1, dirty: 9_000, dirtyRate: 9_000))
        #expect(decision.action == .postcopy)
        #expect(decision.reason.hasPrefix("instead of giving up"))
    }
}

/// `HybridCost` against oracles: a round-by-round walk of the policy's throttle steps, and a
/// step-by-step simulation of vCPUs that wait on stale pages while the push runs.
@Suite struct HybridCostTests {
    static let inputs = HybridCost.Inputs(
        pendingPages: 100_000, pageCount: 524_288, transferRate: 30_000, dirtyRate: 60_000, throttlePercent: 0,
        vcpus: 2, faultWaitSeconds: 0.00125, finalRoundPages: 1_300, roundsLeft: 28)

    /// Post-copy's closed form against a simulation in 1 ms steps: each vCPU runs or waits; while
    /// it runs it touches stale pages at its dirty rate times the stale share, and waits for each.
    @Test func postcopyCostMatchesASimulationOfWaitingVCPUs() throws {
        for (dirtyRate, wait) in [(60_000.0, 0.00125), (10_000, 0.0005), (200_000, 0.004), (1_000, 0.001)] {
            var inputs = Self.inputs
            inputs.dirtyRate = dirtyRate
            inputs.faultWaitSeconds = wait
            let predicted = try #require(HybridCost.postcopy(inputs))
            let push = Double(inputs.pendingPages) / inputs.transferRate
            let dt = 0.0001
            var lost = 0.0
            var faults = 0.0
            var t = 0.0
            while t < push {
                let stale = Double(inputs.pendingPages) / Double(inputs.pageCount) * (1 - t / push)
                let touches = dirtyRate / 2 * stale  // per running second, per vCPU
                let running = 1 / (1 + touches * wait)
                lost += (1 - running) * dt
                faults += 2 * running * touches * dt
                t += dt
            }
            #expect(abs(predicted.seconds - push) < 1e-9)
            #expect(abs(predicted.costSeconds - lost) <= 0.01 * max(lost, 0.001), "\(dirtyRate) pages/s, \(wait) s")
            #expect(abs(predicted.faults - faults) <= 0.01 * max(faults, 1), "\(dirtyRate) pages/s, \(wait) s")
        }
    }

    /// A guest writing pages at random, simulated page by page, and the policy itself deciding
    /// after each round: what pre-copy cost it from round 1 on (throttle × time) against the
    /// prediction made after round 1. Within 20% in time and 35% in cost: a round whose dirty
    /// pages fall just either side of half its pages moves the throttle's next step by a round.
    @Test func precopyCostMatchesThePolicyDrivingASimulatedGuest() throws {
        for (writes, rate) in [(12_000.0, 10_000.0), (20_000, 10_000), (7_000, 10_000), (30_000, 10_000)] {
            let pages = 65_536
            var policy = ConvergencePolicy(settings: ConvergenceSettings(downtimeTarget: .milliseconds(50)))
            var generator = SplitMix64(seed: UInt64(writes))
            var pending = pages
            var throttle = 0
            var prediction: HybridCost.Precopy?
            var cost = 0.0
            var seconds = 0.0
            for index in 0..<30 {
                let roundSeconds = Double(pending) / rate
                var dirty = Set<Int>()
                for _ in 0..<Int(writes * Double(100 - throttle) / 100 * roundSeconds) {
                    dirty.insert(Int(generator.next() % UInt64(pages)))
                }
                if index >= 2 {
                    cost += roundSeconds * Double(throttle) / 100
                    seconds += roundSeconds
                }
                let round = RoundObservation(
                    round: index, pagesSent: pending, transferSeconds: roundSeconds, dirtyPages: dirty.count,
                    dirtySeconds: roundSeconds, elapsed: 1, costs: BlackoutForecast.Costs(pauseSeconds: 0.002),
                    throttlePercent: throttle,
                    pageCount: pages, vcpus: 2)
                let decision = policy.decide(round)
                if index == 1 {
                    prediction = HybridCost.precopy(
                        HybridCost.Inputs(
                            pendingPages: dirty.count, pageCount: pages, transferRate: rate,
                            dirtyRate: round.dirtyRate, throttlePercent: throttle, vcpus: 2, faultWaitSeconds: 0.001,
                            finalRoundPages: (0.9 * 0.05 - 0.002) * rate, roundsLeft: 28, dirtySeconds: roundSeconds,
                            nextThrottlePercent: policy.throttlePercent))
                }
                pending = dirty.count
                if case .throttle(let percent) = decision.action { throttle = percent }
                if decision.action == .switchover { break }
            }
            let predicted = try #require(prediction, "\(writes) writes/s")
            #expect(predicted.throttlePercent == throttle, "\(writes) writes/s: \(predicted)")
            #expect(
                abs(predicted.seconds - seconds) <= 0.2 * seconds + 0.05,
                "\(writes) writes/s: \(predicted), \(seconds) s")
            #expect(
                abs(predicted.costSeconds - cost) <= 0.35 * cost + 0.02,
                "\(writes) writes/s: \(predicted), \(cost) s lost")
        }
    }

    /// `distinctDirtied` against random writes counted page by page, and its inverse.
    @Test func distinctPagesOfRandomWrites() {
        var generator = SplitMix64(seed: 7)
        for writes in [1_000, 30_000, 65_536, 200_000] {
            var dirty = Set<Int>()
            for _ in 0..<writes { dirty.insert(Int(generator.next() % 65_536)) }
            let predicted = HybridCost.distinctDirtied(writes: Double(writes), pageCount: 65_536)
            #expect(abs(predicted - Double(dirty.count)) <= 0.01 * predicted, "\(writes) writes")
            #expect(
                abs(HybridCost.writes(dirtying: predicted, pageCount: 65_536) - Double(writes)) < 1e-3 * Double(writes))
        }
    }

    @Test func precopyThatCannotConverge() {
        var inputs = Self.inputs
        inputs.throttleMax = 40  // 60,000 × 0.6 = 36,000 pages/s: more than the link
        #expect(HybridCost.precopy(inputs) == nil)
        inputs.throttleMax = 99
        inputs.roundsLeft = 5  // 16 rounds of throttle steps to reach 80%
        #expect(HybridCost.precopy(inputs) == nil)
        inputs.roundsLeft = 28
        inputs.autoConverge = false
        #expect(HybridCost.precopy(inputs) == nil)
        inputs.dirtyRate = 10_000  // converges unthrottled, at no cost
        #expect(HybridCost.precopy(inputs)?.costSeconds == 0)
    }
}

/// The post-copy push's queue follows the link (`PushQueueBudget`): about 1 ms of it.
@Suite struct PushQueueBudgetTests {
    @Test func aboutAMillisecondOfTheMeasuredLinkWithinItsBounds() {
        var budget = PushQueueBudget()
        #expect(budget.limit == 1 << 20, "1 MiB until measured")
        budget.observe(acknowledged: 0, at: 0)
        // 1 Gbit/s: 125,000 bytes a millisecond.
        budget.observe(acknowledged: 1_250_000, at: 10_000_000)
        #expect(budget.limit == 125_000)
        // Sooner than 5 ms after the last measurement: not measured again.
        budget.observe(acknowledged: 1_250_001, at: 11_000_000)
        #expect(budget.limit == 125_000)
        // Nothing acknowledged for a while (the push waited): the limit stays.
        budget.observe(acknowledged: 1_250_000, at: 30_000_000)
        #expect(budget.limit == 125_000)
        // 100 Mbit/s: 12.5 kB a millisecond, under the 64 KiB floor.
        budget.observe(acknowledged: 1_500_000, at: 50_000_000)
        #expect(budget.limit == 64 << 10)
        // 40 GB/s (loopback): capped at 8 MiB.
        budget.observe(acknowledged: 401_500_000, at: 60_000_000)
        #expect(budget.limit == 8 << 20)
    }
}

/// The guest's progress figures from their samples (`GuestProgressReport`).
@Suite struct GuestProgressReportTests {
    @Test func ratesAndSlowdownFromTheSamples() throws {
        let second: UInt64 = 1_000_000_000
        // 1,000 steps/s before; 3,000 steps in the 4 s until the destination resumed (the last
        // of them paused): a quarter of its work lost.
        let report = try #require(
            GuestProgressReport.source(
                before: GuestProgressSample(steps: 0, at: 0), start: GuestProgressSample(steps: 2_000, at: 2 * second),
                paused: GuestProgressSample(steps: 5_000, at: 5 * second), resumedAt: 6 * second))
        #expect(report.beforeStepsPerSecond == 1_000)
        #expect(report.duringSteps == 3_000 && report.duringSeconds == 4)
        #expect(report.duringStepsPerSecond == 750)
        #expect(report.slowdownPercent == 25)
        // A window under 100 ms gives no rate, and no slowdown; a guest without a count, no report.
        let short = try #require(
            GuestProgressReport.source(
                before: GuestProgressSample(steps: 0, at: 0), start: GuestProgressSample(steps: 5, at: second / 20),
                paused: GuestProgressSample(steps: 100, at: second), resumedAt: second))
        #expect(short.beforeStepsPerSecond == nil && short.slowdownPercent == nil)
        #expect(GuestProgressReport.source(before: nil, start: nil, paused: nil, resumedAt: 0) == nil)
    }
}
