import FerryDecisions

/// A scaling policy as the simulation drives it.
enum SimulatedPolicy {
    /// Target tracking, given the group's metric and its own history of recommendations.
    case tracking(TargetTracking)
    /// Threshold policies asked in turn (the first that changes the count acts), sharing the
    /// group's last action for their cooldowns.
    case thresholds([ThresholdPolicy])
    /// The oracle's plan of counts, followed every second.
    case oracle([ScalingOracle.Run])
}

/// One group under a wave of demand, second by second: each second the group's metric is
/// sampled (the mean per serving guest, `demand × target / serving × (1 ± noise)`, the noise drawn
/// uniformly from the seeded generator), and every `cycleSeconds` the policy is asked, after that
/// second's sample, with the count, the samples of the last minute taken since the group's latest
/// change took effect, and the time. (A sample from before is a mean over another number of
/// guests: `ceil(current × metric / target)` on it overshoots. Kept with `staleSamples`, to show
/// it: a scale-up's first decision then sees the boot delay's overloaded seconds and adds a third
/// again as many guests, which the scale-down window keeps for five minutes.) A guest added
/// takes load only `bootDelaySeconds` after the decision; a guest removed (the newest first, booting
/// ones before serving ones) stops at once. The same seed gives every policy the same noise.
struct ScalingSimulation {
    struct Outcome {
        /// Each count change: when, and whether it went up.
        var changes: [(second: Int, up: Bool)] = []
        /// The count at each second (guests booting included).
        var replicas: [Int] = []
        /// Seconds × guests paid for, booting guests included.
        var guestSeconds = 0
        /// Seconds in which the demand was above the serving guests' capacity.
        var underProvisionedSeconds = 0

        /// The shortest time between two successive changes in opposite directions (nil: none).
        var shortestOppositeSeconds: Int? {
            zip(changes, changes.dropFirst()).filter { $0.up != $1.up }.map { $1.second - $0.second }.min()
        }
    }

    var wave: Wave
    var seconds: Int
    var noise: Double
    var cycleSeconds: Int
    var bootDelaySeconds: Int
    var initialReplicas: Int
    var target: Double

    /// The group's state while it runs.
    private struct Group {
        var replicas: Int
        var booting: [(readySecond: Int, count: Int)] = []
        var samples: [MetricSample] = []
        var history: [ScalingRecommendation] = []
        var lastActionMilliseconds: Int64?
        /// The second from which every guest of the latest change takes load, or has stopped.
        var settledSecond = 0
        var outcome = Outcome()

        var serving: Int { replicas - booting.reduce(0) { $0 + $1.count } }

        /// Moves to `desired` at `second`, new guests serving from `readySecond`.
        mutating func scale(to desired: Int, atSecond second: Int, readySecond: Int) {
            guard desired != replicas else { return }
            outcome.changes.append((second, desired > replicas))
            lastActionMilliseconds = Int64(second) * 1000
            settledSecond = desired > replicas ? readySecond : second + 1
            if desired > replicas {
                booting.append((readySecond, desired - replicas))
            } else {
                var removing = replicas - desired
                while removing > 0, let last = booting.popLast() {
                    let kept = max(0, last.count - removing)
                    removing -= last.count - kept
                    if kept > 0 { booting.append((last.readySecond, kept)) }
                }
            }
            replicas = desired
        }
    }

    func run(_ policy: SimulatedPolicy, seed: UInt64, staleSamples: Bool = false) -> Outcome {
        var random = SplitMix64(seed: seed)
        var group = Group(replicas: initialReplicas)
        group.outcome.replicas.reserveCapacity(seconds)
        for second in 0..<seconds {
            if case .oracle(let runs) = policy {
                let desired = ScalingOracle.replicas(runs, atSecond: second)
                group.scale(to: desired, atSecond: second, readySecond: second + bootDelaySeconds)
            }
            group.booting.removeAll { $0.readySecond <= second }
            let demand = wave.demand(atSecond: second)
            let draw = Double.random(in: -noise...noise, using: &random)
            let serving = group.serving
            if demand > Double(serving) + 1e-9 { group.outcome.underProvisionedSeconds += 1 }
            group.outcome.guestSeconds += group.replicas
            group.outcome.replicas.append(group.replicas)
            let now = Int64(second) * 1000
            if serving > 0 {
                group.samples.append(
                    MetricSample(timeMilliseconds: now, value: demand * target / Double(serving) * (1 + draw)))
            }
            guard (second + 1) % cycleSeconds == 0 else { continue }
            group.samples.removeAll { $0.timeMilliseconds <= now - 60_000 }
            // Decided at the end of this second: the new guests serve a boot delay later.
            let fresh =
                staleSamples
                ? group.samples : group.samples.filter { $0.timeMilliseconds >= group.settledSecond * 1000 }
            let desired = decide(policy, &group, fresh, now: now)
            group.scale(to: desired, atSecond: second, readySecond: second + 1 + bootDelaySeconds)
        }
        return group.outcome
    }

    private func decide(_ policy: SimulatedPolicy, _ group: inout Group, _ samples: [MetricSample], now: Int64) -> Int {
        switch policy {
        case .tracking(let tracking):
            let decision = tracking.decide(
                current: group.replicas, samples: samples, history: group.history, now: now)
            if let recommendation = decision.recommendation { group.history.append(recommendation) }
            group.history = tracking.retained(group.history, now: now)
            return decision.desired
        case .thresholds(let rules):
            for rule in rules {
                let decision = rule.decide(
                    current: group.replicas, samples: samples,
                    lastActionMilliseconds: group.lastActionMilliseconds, now: now)
                if decision.desired != group.replicas { return decision.desired }
            }
            return group.replicas
        case .oracle:
            return group.replicas
        }
    }
}
