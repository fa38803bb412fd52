import FerryGuestMigration
import FerryKVMMigration
import Testing

@testable import FerryMigration

@Suite struct ConvergencePolicyTests {
    func observation(round: Int, sent: Int, seconds: Double, dirty: Int, elapsed: Double = 1, fixed: Double = 0.002)
        -> RoundObservation
    {
        RoundObservation(
            round: round, pagesSent: sent, transferSeconds: seconds, dirtyPages: dirty,
            dirtySeconds: seconds, elapsed: elapsed, fixedCostSeconds: fixed, throttlePercent: 0)
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

/// When a migration allowed to switch to post-copy does so (`ConvergencePolicy.switchToPostcopy`).
@Suite struct PostcopySwitchDecisionTests {
    static func decision(_ action: ConvergenceDecision.Action) -> ConvergenceDecision {
        ConvergenceDecision(action: action, predictedDowntime: 0.2, transferRate: 1000, reason: "test")
    }

    @Test func insteadOfSlowingTheGuestOrGivingUpAndAfterTheRoundsAllowed() {
        let rule = ConvergencePolicy.switchToPostcopy
        // Not allowed: never.
        #expect(!rule(Self.decision(.throttle(percent: 20)), 5, nil))
        // Never before a round is acknowledged, never instead of a fitting switch-over.
        #expect(!rule(Self.decision(.throttle(percent: 20)), 0, 3))
        #expect(!rule(Self.decision(.switchover), 9, 1))
        // Instead of slowing the guest down or giving up, at once.
        #expect(rule(Self.decision(.throttle(percent: 20)), 1, 3))
        #expect(rule(Self.decision(.giveUp), 2, 30))
        // Another round while fewer than the allowed rounds are done; then post-copy.
        #expect(!rule(Self.decision(.nextRound), 2, 3))
        #expect(rule(Self.decision(.nextRound), 3, 3))
        #expect(rule(Self.decision(.nextRound), 1, 0), "0 counts as 1")
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
