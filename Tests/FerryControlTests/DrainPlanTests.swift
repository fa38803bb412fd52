import FerryDecisions
import FerryTestSupport
import Testing

@Suite struct MigrationCostTests {
    let gigabit = MigrationCostModel(linkBytesPerSecond: 125_000_000, setupSeconds: 0.1)

    @Test func anIdleGuestCostsOneCopyAndTheSetup() {
        let estimate = gigabit.estimate(MigrationProfile(memoryBytes: 250_000_000, dirtyBytesPerSecond: 0))
        #expect(estimate.converges)
        #expect(estimate.rounds == 1)
        #expect(abs(estimate.seconds - 2.1) < 1e-9)
        #expect(estimate.bytes == 250_000_000)
        #expect(estimate.downtimeSeconds == 0)
    }

    /// The rounds against a direct page-by-page account of the same rule: 256 MiB at 50 MB/s over
    /// 1 Gbit/s shrinks by 0.4 a round until the rest fits 50 ms.
    @Test func aDirtyingGuestTakesRoundsThatShrinkByItsRateOverTheLink() {
        let profile = MigrationProfile(memoryBytes: 268_435_456, dirtyBytesPerSecond: 50_000_000)
        let estimate = gigabit.estimate(profile)
        var pending = 268_435_456.0
        var seconds = 0.1
        var rounds = 0
        while rounds == 0 || pending / 125_000_000 > 0.05 {
            let t = pending / 125_000_000
            seconds += t
            rounds += 1
            pending = 50_000_000 * t
        }
        #expect(estimate.converges)
        #expect(estimate.rounds == rounds)
        #expect(abs(estimate.seconds - (seconds + pending / 125_000_000)) < 1e-6)
        #expect(estimate.downtimeSeconds <= 0.05)
    }

    @Test func aGuestDirtyingFasterThanItsShareNeverConverges() {
        let profile = MigrationProfile(memoryBytes: 268_435_456, dirtyBytesPerSecond: 50_000_000)
        #expect(gigabit.estimate(profile, sharing: 2).converges)  // 62.5 MB/s each: slow but it shrinks
        let three = gigabit.estimate(profile, sharing: 3)
        #expect(!three.converges)
        #expect(three.downtimeSeconds > 1)
    }

    @Test func compressionShortensEveryRound() {
        let profile = MigrationProfile(memoryBytes: 268_435_456, dirtyBytesPerSecond: 50_000_000)
        var compressed = gigabit
        compressed.wireRatio = 0.25
        #expect(compressed.estimate(profile).seconds < gigabit.estimate(profile).seconds / 3)
    }

    /// Alone, a migration measured 110 and 900 MB/s (median 505); two sharing measured 50 each and
    /// four sharing 40 each (together 100 and 160: median 130, below the configured link).
    @Test func calibrationTakesTheMediansOfWhatMigrationsMeasured() {
        let observations = [
            MigrationObservation(
                dirtyBytesPerSecond: 1, sendBytesPerSecond: 50_000_000, sharing: 2, setupSeconds: 0.2,
                memorySentBytes: 100, wireBytes: 40),
            MigrationObservation(
                dirtyBytesPerSecond: 1, sendBytesPerSecond: 40_000_000, sharing: 4, setupSeconds: 0.2,
                memorySentBytes: 100, wireBytes: 45),
            MigrationObservation(
                dirtyBytesPerSecond: 1, sendBytesPerSecond: 110_000_000, sharing: 1, setupSeconds: 0.3,
                memorySentBytes: 100, wireBytes: 50),
            MigrationObservation(
                dirtyBytesPerSecond: 1, sendBytesPerSecond: 900_000_000, sharing: 1, setupSeconds: 0.25,
                memorySentBytes: 100, wireBytes: 60),
        ]
        let model = gigabit.calibrated(by: observations)
        #expect(model.streamBytesPerSecond == 505_000_000)
        #expect(model.linkBytesPerSecond == 125_000_000, "never above the configured link")
        var fast = gigabit
        fast.linkBytesPerSecond = 1e12
        #expect(fast.calibrated(by: observations).linkBytesPerSecond == 130_000_000)
        #expect(model.setupSeconds == 0.225)
        #expect(model.wireRatio == 0.475)
        #expect(gigabit.calibrated(by: []) == gigabit)
    }

    /// One migration that carries a fifth of the link alone: several at once each keep their own
    /// pace until together they fill it.
    @Test func aMigrationSlowerThanTheLinkLeavesRoomForOthers() {
        var model = gigabit
        model.streamBytesPerSecond = 25_000_000
        let profile = MigrationProfile(memoryBytes: 250_000_000, dirtyBytesPerSecond: 0)
        #expect(model.estimate(profile, sharing: 4).seconds == model.estimate(profile, sharing: 1).seconds)
        #expect(model.estimate(profile, sharing: 10).seconds > model.estimate(profile, sharing: 5).seconds)
    }
}

@Suite struct DrainPlanTests {
    let gigabit = MigrationCostModel(linkBytesPerSecond: 125_000_000, setupSeconds: 0.15)

    static func guests(_ count: Int, memory: Int64, dirty: Double) -> [DrainGuest] {
        (0..<count).map {
            DrainGuest(id: "g\($0)", profile: MigrationProfile(memoryBytes: memory, dirtyBytesPerSecond: dirty))
        }
    }

    /// Issue 18's drain: 8 guests of 256 MiB dirtying 50 MB/s over 1 Gbit/s. Two at once would give
    /// each 62.5 MB/s, barely above its dirty rate: many rounds. One at a time is faster.
    @Test func dirtyGuestsOnASlowLinkGoOneAtATime() {
        let plan = DrainPlan.make(
            Self.guests(8, memory: 268_435_456, dirty: 50_000_000), model: gigabit, maxConcurrency: 4)
        #expect(plan.concurrency == 1)
        #expect(plan.notConverging.isEmpty)
        let one = gigabit.estimate(MigrationProfile(memoryBytes: 268_435_456, dirtyBytesPerSecond: 50_000_000))
        #expect(abs(plan.seconds - 8 * one.seconds) < 1e-6)
    }

    /// Idle guests with a large fixed cost each: several at once hide it.
    @Test func idleGuestsWithAFixedCostGoSeveralAtOnce() {
        var model = gigabit
        model.setupSeconds = 1
        let plan = DrainPlan.make(Self.guests(8, memory: 10_000_000, dirty: 0), model: model, maxConcurrency: 4)
        #expect(plan.concurrency == 4)
        #expect(plan.seconds < 8 * 1.08 / 2)
    }

    /// A guest that does not converge even alone goes last; the others keep a concurrency that
    /// lets them converge.
    @Test func aGuestThatCannotConvergeGoesLastAndIsNamed() {
        var guests = Self.guests(3, memory: 100_000_000, dirty: 1_000_000)
        guests.append(
            DrainGuest(id: "hot", profile: MigrationProfile(memoryBytes: 100_000_000, dirtyBytesPerSecond: 200_000_000))
        )
        let plan = DrainPlan.make(guests, model: gigabit, maxConcurrency: 4)
        #expect(plan.notConverging == ["hot"])
        #expect(plan.order.last == "hot")
        #expect(Set(plan.order) == Set(guests.map(\.id)))
    }

    /// The chosen plan's predicted time is never worse than any concurrency's, within the 2%
    /// a larger concurrency must win by; and against a brute force over all orders for small
    /// cases, longest-first is within 4/3 of the best order (Graham's bound for LPT).
    @Test func theChosenConcurrencyIsTheFastestAndTheOrderNearTheBest() {
        var generator = SplitMix64(seed: 18)
        for _ in 0..<300 {
            let count = Int.random(in: 1...6, using: &generator)
            let guests = (0..<count).map { index in
                DrainGuest(
                    id: "g\(index)",
                    profile: MigrationProfile(
                        memoryBytes: Int64.random(in: 10_000_000...500_000_000, using: &generator),
                        dirtyBytesPerSecond: Double.random(in: 0...40_000_000, using: &generator)))
            }
            var model = gigabit
            model.setupSeconds = Double.random(in: 0...1, using: &generator)
            let limit = Int.random(in: 1...4, using: &generator)
            let plan = DrainPlan.make(guests, model: model, maxConcurrency: limit)
            #expect(plan.concurrency >= 1 && plan.concurrency <= limit)
            #expect(Set(plan.order) == Set(guests.map(\.id)) && plan.order.count == guests.count)
            let durations = plan.order.map { plan.estimates[$0] ?? 0 }
            let best = Self.permutations(durations).map { DrainPlan.makespan($0, slots: plan.concurrency) }.min() ?? 0
            #expect(plan.seconds <= best * 4 / 3 + 1e-9)
            for k in 1...min(limit, guests.count) where k != plan.concurrency {
                let durationsK = guests.map { model.estimate($0.profile, sharing: k) }
                guard durationsK.allSatisfy(\.converges) else { continue }
                let sorted = durationsK.map(\.seconds).sorted(by: >)
                #expect(plan.seconds <= DrainPlan.makespan(sorted, slots: k) / 0.98 + 1e-9)
            }
        }
    }

    /// A migration that fills a fifth of the link alone: the drain runs as many at once as the
    /// limit allows (up to five would fit).
    @Test func slowMigrationsOnAFastLinkGoSeveralAtOnce() {
        var model = gigabit
        model.streamBytesPerSecond = 25_000_000
        let plan = DrainPlan.make(
            Self.guests(8, memory: 268_435_456, dirty: 5_000_000), model: model, maxConcurrency: 4)
        #expect(plan.concurrency == 4)
    }

    @Test func theTimeLeftCountsWhatRunsAndWhatWaits() {
        #expect(DrainPlan.remaining(running: [(estimate: 5, elapsed: 2)], waiting: [4, 4], concurrency: 2) == 7)
        #expect(DrainPlan.remaining(running: [(estimate: 5, elapsed: 9)], waiting: [], concurrency: 1) == 0)
        #expect(DrainPlan.remaining(running: [], waiting: [], concurrency: 3) == 0)
    }

    static func permutations(_ values: [Double]) -> [[Double]] {
        guard values.count > 1 else { return [values] }
        return values.indices.flatMap { index -> [[Double]] in
            var rest = values
            let first = rest.remove(at: index)
            return permutations(rest).map { [first] + $0 }
        }
    }
}

@Suite struct DrainPlanForcedTests {
    /// An operator's concurrency is taken as it is, even where the model would choose another.
    @Test func aForcedConcurrencyIsKept() {
        let model = MigrationCostModel(linkBytesPerSecond: 125_000_000, setupSeconds: 0.15)
        let guests = DrainPlanTests.guests(8, memory: 268_435_456, dirty: 50_000_000)
        let plan = DrainPlan.make(guests, model: model, maxConcurrency: 4, forced: 4)
        #expect(plan.concurrency == 4)
        #expect(plan.seconds > DrainPlan.make(guests, model: model, maxConcurrency: 4).seconds)
        #expect(plan.order.count == 8)
    }
}

/// The bound on migrations at once from measured downtimes (the 50 ms target).
@Suite struct DrainDowntimeBoundTests {
    typealias Seen = [(sharing: Int, downtimeSeconds: Double)]

    @Test func nothingMeasuredLeavesTheLimit() {
        #expect(DrainPlan.downtimeBound([], target: 0.05, limit: 4) == 4)
    }

    /// Figures like drain-bench's: 24 ms alone, 35 ms two at once, 62 ms four at once.
    @Test func itClimbsOneStepWhileTheScaledDowntimeFits() {
        #expect(DrainPlan.downtimeBound([(1, 0.024)], target: 0.05, limit: 4) == 2)
        #expect(DrainPlan.downtimeBound([(1, 0.024), (2, 0.035)], target: 0.05, limit: 4) == 2)
        #expect(DrainPlan.downtimeBound([(1, 0.010), (2, 0.015)], target: 0.05, limit: 4) == 3)
        #expect(DrainPlan.downtimeBound([(1, 0.010), (2, 0.015)], target: 0.05, limit: 2) == 2)
    }

    @Test func aConcurrencyThatBrokeTheTargetIsNotUsedAgain() {
        #expect(DrainPlan.downtimeBound([(1, 0.020), (4, 0.062)], target: 0.05, limit: 4) == 2)
        #expect(DrainPlan.downtimeBound([(1, 0.005), (2, 0.010), (3, 0.051)], target: 0.05, limit: 4) == 2)
        #expect(DrainPlan.downtimeBound([(1, 0.060)], target: 0.05, limit: 4) == 1)
        #expect(DrainPlan.downtimeBound([(2, 0.060)], target: 0.05, limit: 4) == 1)
    }

    /// Against its definition on random histories: within 1…limit, below every level that broke
    /// the target, at most one above the highest that kept it, and that step only if it fits scaled.
    @Test func randomHistoriesKeepTheRules() {
        var random = SplitMix64(seed: 18)
        for _ in 0..<5_000 {
            let seen: Seen = (0..<Int.random(in: 1...6, using: &random)).map { _ in
                (Int.random(in: 1...5, using: &random), Double.random(in: 0.005...0.08, using: &random))
            }
            let limit = Int.random(in: 1...5, using: &random)
            let bound = DrainPlan.downtimeBound(seen, target: 0.05, limit: limit)
            #expect((1...limit).contains(bound))
            var worst: [Int: Double] = [:]
            for (k, d) in seen { worst[k] = max(worst[k] ?? 0, d) }
            for (k, d) in worst where d > 0.05 { #expect(bound < k || bound == 1) }
            let kept = worst.filter { $0.value <= 0.05 }.keys.max() ?? 0
            #expect(bound <= max(1, kept + 1))
            if bound == kept + 1, kept > 0 { #expect(worst[kept]! * Double(kept + 1) / Double(kept) <= 0.05) }
        }
    }
}
