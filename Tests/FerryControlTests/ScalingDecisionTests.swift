import FerryControl
import FerryTestSupport
import Testing

/// Target tracking against the Kubernetes HPA's documented behaviours, and threshold policies.
@Suite struct ScalingDecisionTests {
    static let now: Int64 = 10_000_000

    static func sample(_ value: Double, secondsAgo: Int64 = 0) -> MetricSample {
        MetricSample(timeMilliseconds: now - secondsAgo * 1000, value: value)
    }

    static func tracking(target: Double = 60, min: Int = 1, max: Int = 20, down: Int64 = 300_000) throws
        -> TargetTracking
    {
        try TargetTracking(
            target: target, scaleDownStabilisationMilliseconds: down, minReplicas: min, maxReplicas: max)
    }

    // MARK: - Target tracking

    @Test func theToleranceHoldsARatioOf105() throws {
        let policy = try Self.tracking()
        let held = policy.decide(current: 10, samples: [Self.sample(63)], history: [], now: Self.now)
        #expect(held.desired == 10)
        #expect(held.recommendation == ScalingRecommendation(timeMilliseconds: Self.now, replicas: 10))
        #expect(held.reason.contains("within the tolerance"), "\(held)")
        // The edge is inside: 66 / 60 is 1.1 (1.1000000000000001 in binary).
        #expect(policy.decide(current: 10, samples: [Self.sample(66)], history: [], now: Self.now).desired == 10)
        let low = policy.decide(current: 10, samples: [Self.sample(57)], history: [], now: Self.now)
        #expect(low.desired == 10)
        // 67 / 60 = 1.117: ceil(11.17) = 12.
        let beyond = policy.decide(current: 10, samples: [Self.sample(67)], history: [], now: Self.now)
        #expect(beyond.desired == 12, "\(beyond)")
        #expect(beyond.reason.contains("ceil(10 × 1.12) recommends 12"), "\(beyond)")
    }

    @Test func theFormulaIsCeilOfCurrentTimesTheRatio() throws {
        // 0.6 / 0.3 is 2.0000000000000004 in binary: still 4, not 5.
        let exact = try Self.tracking(target: 0.3).decide(
            current: 2, samples: [Self.sample(0.6)], history: [], now: Self.now)
        #expect(exact.desired == 4)
        // The mean of the window's samples, not the latest: (90 + 150) / 2 = 120, twice the target.
        let mean = try Self.tracking().decide(
            current: 3, samples: [Self.sample(90, secondsAgo: 10), Self.sample(150), Self.sample(500, secondsAgo: 20)],
            history: [], now: Self.now)
        #expect(mean.desired == 6, "\(mean)")
    }

    @Test func scalingUpIsImmediateAndDownWaitsForTheWindow() throws {
        let policy = try Self.tracking()
        let up = policy.decide(current: 4, samples: [Self.sample(120)], history: [], now: Self.now)
        #expect(up.desired == 8)
        // A recommendation of 10 made 200 s ago holds the group at 10 although the metric asks 5.
        let recent = [ScalingRecommendation(timeMilliseconds: Self.now - 200_000, replicas: 10)]
        let held = policy.decide(current: 10, samples: [Self.sample(30)], history: recent, now: Self.now)
        #expect(held.desired == 10)
        #expect(held.recommendation?.replicas == 5)
        #expect(held.reason.contains("held at 10 by the highest recommendation of the last 300 s"), "\(held)")
        // A recommendation made exactly 300 s ago is out of the window.
        let old = [ScalingRecommendation(timeMilliseconds: Self.now - 300_000, replicas: 10)]
        #expect(policy.decide(current: 10, samples: [Self.sample(30)], history: old, now: Self.now).desired == 5)
        // Partway: the highest in the window (7) is between the current and the recommendation.
        let partway = recent + [ScalingRecommendation(timeMilliseconds: Self.now - 100_000, replicas: 7)]
        #expect(policy.retained(partway + old, now: Self.now) == partway)
        let older = [ScalingRecommendation(timeMilliseconds: Self.now - 100_000, replicas: 7)]
        #expect(policy.decide(current: 10, samples: [Self.sample(30)], history: older, now: Self.now).desired == 7)
    }

    @Test func aScaleUpWindowHoldsAtTheLowestRecommendation() throws {
        let policy = try TargetTracking(
            target: 60, scaleUpStabilisationMilliseconds: 60_000, minReplicas: 1, maxReplicas: 20)
        let history = [ScalingRecommendation(timeMilliseconds: Self.now - 30_000, replicas: 6)]
        let decision = policy.decide(current: 4, samples: [Self.sample(120)], history: history, now: Self.now)
        #expect(decision.desired == 6, "\(decision)")
        #expect(decision.reason.contains("held at 6 by the lowest recommendation of the last 60 s"))
    }

    @Test func theResultIsClampedToTheBounds() throws {
        let policy = try Self.tracking(min: 2, max: 6)
        let high = policy.decide(current: 4, samples: [Self.sample(300)], history: [], now: Self.now)
        #expect(high.desired == 6)
        #expect(high.reason.hasSuffix("; lowered to the maximum 6"), "\(high)")
        let low = policy.decide(current: 3, samples: [Self.sample(1)], history: [], now: Self.now)
        #expect(low.desired == 2)
        #expect(low.reason.hasSuffix("; raised to the minimum 2"), "\(low)")
        // No sample: hold, but within the bounds.
        let silent = policy.decide(current: 9, samples: [Self.sample(60, secondsAgo: 15)], history: [], now: Self.now)
        #expect(silent.desired == 6)
        #expect(silent.recommendation == nil)
        #expect(silent.reason.hasPrefix("no metric sample in the last 15 s: holding 9"), "\(silent)")
    }

    @Test func invalidPoliciesAreRefused() {
        #expect(throws: ControlError.self) { try TargetTracking(target: 0, minReplicas: 1, maxReplicas: 2) }
        #expect(throws: ControlError.self) { try TargetTracking(target: 50, minReplicas: 3, maxReplicas: 2) }
        #expect(throws: ControlError.self) {
            try ThresholdPolicy(
                metric: "cpu", comparison: .above, threshold: 80, durationMilliseconds: 0, step: 0,
                cooldownMilliseconds: 0, minReplicas: 0, maxReplicas: 1)
        }
    }

    /// An hour of a noisy square wave (period 60 s: 60 s of work for 12 guests at the target, then
    /// 60 s for 4, ±10% noise on every one-second sample), the policy asked every 15 s as the HPA
    /// is, the group resized at once. Returns the times of the changes and their directions.
    static func simulateSquareWave(_ policy: TargetTracking, seed: UInt64) -> [(time: Int64, up: Bool)] {
        var random = SplitMix64(seed: seed)
        var replicas = 4
        var samples: [MetricSample] = []
        var history: [ScalingRecommendation] = []
        var changes: [(time: Int64, up: Bool)] = []
        for second in Int64(0)..<3600 {
            let time = second * 1000
            let work = (second / 30) % 2 == 0 ? 12 * 60.0 : 4 * 60.0
            let noise = 1 + Double.random(in: -0.1...0.1, using: &random)
            samples.append(MetricSample(timeMilliseconds: time, value: work / Double(replicas) * noise))
            guard second % 15 == 14 else { continue }
            let decision = policy.decide(current: replicas, samples: samples, history: history, now: time)
            if let recommendation = decision.recommendation { history.append(recommendation) }
            history = policy.retained(history, now: time)
            samples.removeAll { $0.timeMilliseconds <= time - 60_000 }
            if decision.desired != replicas { changes.append((time, decision.desired > replicas)) }
            replicas = decision.desired
        }
        return changes
    }

    @Test func theScaleDownWindowStopsFlappingOnANoisySquareWave() throws {
        let changes = Self.simulateSquareWave(try Self.tracking(), seed: 0x5CA1_E017)
        // Up to the peak at the start (once here; an oracle that knows the wave needs one), then
        // held there by the window.
        #expect(changes.count <= 2, "\(changes)")
        for (earlier, later) in zip(changes, changes.dropFirst()) where earlier.up != later.up {
            #expect(later.time - earlier.time >= 300_000, "opposite changes within the window: \(changes)")
        }
        // Without the window the same wave makes the group flap (139 changes): the test can tell.
        let flapping = Self.simulateSquareWave(try Self.tracking(down: 0), seed: 0x5CA1_E017)
        #expect(flapping.count > 50, "\(flapping.count) changes without a window")
    }

    // MARK: - Threshold

    static func cpuAbove80(step: Int = 2, min: Int = 1, max: Int = 10) throws -> ThresholdPolicy {
        try ThresholdPolicy(
            metric: "cpu", comparison: .above, threshold: 80, durationMilliseconds: 30_000, step: step,
            cooldownMilliseconds: 60_000, minReplicas: min, maxReplicas: max)
    }

    /// One sample a second, oldest first, ending now.
    static func series(_ values: [Double]) -> [MetricSample] {
        values.enumerated().map { index, value in sample(value, secondsAgo: Int64(values.count - 1 - index)) }
    }

    @Test func theThresholdMustHoldForTheFullDuration() throws {
        let policy = try Self.cpuAbove80()
        #expect(policy.rule == "cpu > 80 for 30 s → +2, cooldown 60 s")
        // 30 samples a second apart span 29 s.
        let short = policy.decide(
            current: 4, samples: Self.series(Array(repeating: 90, count: 30)), lastActionMilliseconds: nil,
            now: Self.now)
        #expect(short.desired == 4)
        #expect(short.reason.contains("cpu above 80 for 29 s of 30 s: holding 4"), "\(short)")
        let full = policy.decide(
            current: 4, samples: Self.series([50] + Array(repeating: 90, count: 31)), lastActionMilliseconds: nil,
            now: Self.now)
        #expect(full.desired == 6, "\(full)")
        #expect(full.reason.hasSuffix("cpu above 80 for 30 s: 4 → 6"), "\(full)")
        // A sample at the threshold does not breach it, and starts the count again.
        let broken = Self.series(Array(repeating: 90, count: 20) + [80] + Array(repeating: 90, count: 20))
        #expect(policy.decide(current: 4, samples: broken, lastActionMilliseconds: nil, now: Self.now).desired == 4)
        let calm = policy.decide(
            current: 4, samples: Self.series([95, 95, 70]), lastActionMilliseconds: nil, now: Self.now)
        #expect(calm.reason.contains("the latest cpu sample is not above 80: holding 4"), "\(calm)")
    }

    @Test func theCooldownBlocksASecondAction() throws {
        let policy = try Self.cpuAbove80()
        let samples = Self.series(Array(repeating: 95, count: 120))
        let first = policy.decide(current: 4, samples: samples, lastActionMilliseconds: nil, now: Self.now)
        #expect(first.desired == 6)
        let soon = policy.decide(current: 6, samples: samples, lastActionMilliseconds: Self.now - 30_000, now: Self.now)
        #expect(soon.desired == 6)
        #expect(soon.reason.contains("but the last action was 30 s ago"), "\(soon)")
        let after = policy.decide(
            current: 6, samples: samples, lastActionMilliseconds: Self.now - 60_000, now: Self.now)
        #expect(after.desired == 8)
    }

    @Test func thresholdStepsStayWithinTheBounds() throws {
        let samples = Self.series(Array(repeating: 95, count: 40))
        let policy = try Self.cpuAbove80()
        let nearMax = policy.decide(current: 9, samples: samples, lastActionMilliseconds: nil, now: Self.now)
        #expect(nearMax.desired == 10)
        #expect(nearMax.reason.hasSuffix("9 → 11; lowered to the maximum 10"), "\(nearMax)")
        #expect(policy.decide(current: 10, samples: samples, lastActionMilliseconds: nil, now: Self.now).change == 0)
        let outside = policy.decide(current: 12, samples: [], lastActionMilliseconds: nil, now: Self.now)
        #expect(outside.desired == 10)
        let idle = try ThresholdPolicy(
            metric: "load", comparison: .below, threshold: 20, durationMilliseconds: 60_000, step: -1,
            cooldownMilliseconds: 300_000, minReplicas: 2, maxReplicas: 10)
        let quiet = Self.series(Array(repeating: 5, count: 61))
        #expect(idle.decide(current: 3, samples: quiet, lastActionMilliseconds: nil, now: Self.now).desired == 2)
        #expect(idle.decide(current: 2, samples: quiet, lastActionMilliseconds: nil, now: Self.now).desired == 2)
    }
}
