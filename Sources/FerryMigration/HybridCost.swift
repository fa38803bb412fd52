import Foundation

/// What each way of ending a migration that has not converged costs the guest from here on, in
/// seconds of its full-speed running time lost (docs/postcopy.md, "Choosing post-copy").
///
/// Pure: the policy's measurements in, two predictions out. Pre-copy's cost is the throttle it
/// needs times the time it needs it for; post-copy's is the time its vCPUs wait on pages that are
/// still on the source while the push runs.
public struct HybridCost: Sendable, Equatable {
    /// What the prediction starts from.
    public struct Inputs: Sendable, Equatable {
        /// Pages the destination lacks now: the next round's (or, after a switch, the stale pages).
        public var pendingPages: Int
        /// Pages of the guest's memory.
        public var pageCount: Int
        /// Pages per second the link moves (the policy's rate).
        public var transferRate: Double
        /// Pages per second the guest dirtied in the last round, under `throttlePercent`.
        public var dirtyRate: Double
        /// The throttle in force (0…99).
        public var throttlePercent: Int
        public var vcpus: Int
        /// Seconds a vCPU waits for a page it touched after the switch: a round trip, the push's
        /// queue (`PushQueueBudget.queueSeconds`) and the page's own time on the link.
        public var faultWaitSeconds: Double
        /// Pages the final round may hold and still fit the downtime target.
        public var finalRoundPages: Double
        /// Rounds the migration may still send (`--max-rounds`).
        public var roundsLeft: Int
        /// The throttle's first step, its step and its ceiling (`--max-throttle`).
        public var throttleInitial: Int
        public var throttleStep: Int
        public var throttleMax: Int
        /// Whether the policy may throttle at all (`--no-auto-converge` says no).
        public var autoConverge: Bool

        public init(
            pendingPages: Int, pageCount: Int, transferRate: Double, dirtyRate: Double, throttlePercent: Int,
            vcpus: Int, faultWaitSeconds: Double, finalRoundPages: Double, roundsLeft: Int,
            throttleInitial: Int = 20, throttleStep: Int = 10, throttleMax: Int = 99, autoConverge: Bool = true,
            dirtySeconds: Double = 0, outpacedRounds: Int = 0, nextThrottlePercent: Int? = nil
        ) {
            self.nextThrottlePercent = nextThrottlePercent
            self.dirtySeconds = dirtySeconds
            self.outpacedRounds = outpacedRounds
            self.pendingPages = pendingPages
            self.pageCount = pageCount
            self.transferRate = transferRate
            self.dirtyRate = dirtyRate
            self.throttlePercent = throttlePercent
            self.vcpus = vcpus
            self.faultWaitSeconds = faultWaitSeconds
            self.finalRoundPages = finalRoundPages
            self.roundsLeft = roundsLeft
            self.throttleInitial = throttleInitial
            self.throttleStep = throttleStep
            self.throttleMax = throttleMax
            self.autoConverge = autoConverge
        }

        /// Seconds over which `dirtyRate` was counted (the distinct pages of the last round).
        public var dirtySeconds: Double
        /// Rounds in a row the guest has outpaced the link since the throttle last rose (the
        /// policy's own count).
        public var outpacedRounds: Int
        /// The throttle the next round runs at, when the policy just changed it.
        public var nextThrottlePercent: Int?

        /// Page writes a second with no throttle: the distinct pages of the last round turned
        /// back into writes (`writes(dirtying:pageCount:)`), the throttle taken out.
        var writeRate: Double {
            guard dirtySeconds > 0 else { return dirtyRate * 100 / Double(max(1, 100 - throttlePercent)) }
            let distinct = dirtyRate * dirtySeconds
            let writes = HybridCost.writes(dirtying: distinct, pageCount: max(1, pageCount)) / dirtySeconds
            return writes * 100 / Double(max(1, 100 - throttlePercent))
        }
    }

    /// Pre-copy from here: the throttle it ends at, how long it still takes, and what that costs.
    public struct Precopy: Sendable, Equatable {
        public var throttlePercent: Int
        public var seconds: Double
        public var costSeconds: Double
    }

    /// Post-copy from here: how long the push takes, how many pages the guest asks for on the
    /// way, and the running time its vCPUs lose waiting for them.
    public struct Postcopy: Sendable, Equatable {
        public var seconds: Double
        public var faults: Double
        public var costSeconds: Double
    }

    /// Pre-copy as `ConvergencePolicy` would carry it on: the throttle rises a step every two
    /// rounds in which the guest outpaced the link (dirtied more than half of what was sent),
    /// and stops rising once it does not; each round holds the distinct pages the guest dirtied
    /// while the one before was sent (`distinctDirtied`) until the final round fits the target.
    /// nil when no throttle up to `throttleMax` gets there within the rounds left.
    public static func precopy(_ inputs: Inputs) -> Precopy? {
        let rate = inputs.transferRate
        guard rate > 0, inputs.pageCount > 0 else { return nil }
        let writes = inputs.writeRate
        var pages = Double(max(0, inputs.pendingPages))
        var throttle = inputs.nextThrottlePercent ?? inputs.throttlePercent
        var outpaced = inputs.outpacedRounds
        var seconds = 0.0
        var cost = 0.0
        var rounds = 0
        while pages > max(inputs.finalRoundPages, 1) {
            guard rounds < inputs.roundsLeft else { return nil }
            let roundSeconds = pages / rate
            let next = distinctDirtied(
                writes: writes * Double(100 - throttle) / 100 * roundSeconds, pageCount: inputs.pageCount)
            seconds += roundSeconds
            cost += roundSeconds * Double(throttle) / 100
            rounds += 1
            if next > 0.5 * pages {
                // Outpaced: two such rounds raise the throttle a step (as far as it may go); a
                // round that does not shrink at the highest throttle never converges.
                outpaced += 1
                let canRise = inputs.autoConverge && throttle < inputs.throttleMax
                if outpaced >= 2 && canRise {
                    throttle = min(
                        inputs.throttleMax, throttle == 0 ? inputs.throttleInitial : throttle + inputs.throttleStep)
                    outpaced = 0
                }
                if !canRise && next >= pages { return nil }
            } else {
                outpaced = 0
            }
            pages = next
        }
        return Precopy(throttlePercent: throttle, seconds: seconds, costSeconds: cost)
    }

    /// Distinct pages of `pageCount` that `writes` page writes land on when each falls on any
    /// page alike: `pageCount · (1 − e^(−writes/pageCount))`. A guest that dirties pages at
    /// random dirties fewer distinct pages in a long round than its rate says (measured on a 2
    /// GiB guest writing 61,000 pages/s: 119,000 distinct pages in 2.2 s, not 134,000).
    public static func distinctDirtied(writes: Double, pageCount: Int) -> Double {
        let n = Double(pageCount)
        return n * -expm1(-writes / n)
    }

    /// Page writes that dirty `distinct` pages of `pageCount` (the inverse of `distinctDirtied`).
    public static func writes(dirtying distinct: Double, pageCount: Int) -> Double {
        let n = Double(pageCount)
        return -n * log1p(-min(distinct, n * 0.999) / n)
    }

    /// Post-copy from here. The push takes pending ÷ rate; the share `s` of memory still on the
    /// source falls from pending ÷ pageCount to 0 meanwhile. A vCPU touches stale pages at
    /// `d·s` a running second (`d` its share of the unthrottled dirty rate) and waits `w` for
    /// each, so it runs `1 / (1 + d·w·s)` of the time. Integrated over the push:
    /// lost = T · (1 − ln(1 + a) / a), with a = d·w·s₀.
    public static func postcopy(_ inputs: Inputs) -> Postcopy? {
        guard inputs.transferRate > 0, inputs.pageCount > 0 else { return nil }
        let seconds = Double(max(0, inputs.pendingPages)) / inputs.transferRate
        let perVCPU = inputs.writeRate / Double(max(1, inputs.vcpus))
        let staleShare = min(1, Double(max(0, inputs.pendingPages)) / Double(inputs.pageCount))
        let a = perVCPU * inputs.faultWaitSeconds * staleShare
        let lostShare = a < 1e-9 ? a / 2 : 1 - log1p(a) / a
        let lost = seconds * lostShare
        // Each vCPU faults once per wait it spends: lost time ÷ wait, over the vCPUs.
        let faults =
            inputs.faultWaitSeconds > 0
            ? min(Double(inputs.pendingPages), lost / inputs.faultWaitSeconds * Double(max(1, inputs.vcpus))) : 0
        return Postcopy(seconds: seconds, faults: faults, costSeconds: lost)
    }

    /// A remote fault's expected wait: a round trip, the push's queue ahead of the answer, and
    /// the page itself on the link.
    public static func faultWait(roundTripSeconds: Double, transferRate: Double) -> Double {
        roundTripSeconds + PushQueueBudget.queueSeconds + (transferRate > 0 ? 1 / transferRate : 0)
    }
}
