import FerrySystem

/// Settings that bound a pre-copy migration.
public struct ConvergenceSettings: Sendable, Equatable {
    /// Largest acceptable predicted blackout.
    public var downtimeTarget: Duration
    /// Rounds after which the migration gives up (or switches over with `forceSwitchover`).
    public var maxRounds: Int
    /// Time after which the migration gives up (or switches over).
    public var timeout: Duration
    /// `downtimeTarget` and `timeout` in seconds, as the policy computes with them.
    var downtimeTargetSeconds: Double { downtimeTarget.inSeconds }
    var timeoutSeconds: Double { timeout.inSeconds }
    /// Slow the vCPUs down in steps while they dirty memory faster than it can be sent.
    public var autoConverge: Bool
    /// Switch over at `maxRounds`/`timeout` even though the downtime target is not met.
    public var forceSwitchover: Bool
    public var throttleInitial: Int
    public var throttleStep: Int
    public var throttleMax: Int

    public init(
        downtimeTarget: Duration = .milliseconds(50), maxRounds: Int = 30, timeout: Duration = .seconds(300),
        autoConverge: Bool = true, forceSwitchover: Bool = false,
        throttleInitial: Int = 20, throttleStep: Int = 10, throttleMax: Int = 99
    ) {
        self.downtimeTarget = downtimeTarget
        self.maxRounds = maxRounds
        self.timeout = timeout
        self.autoConverge = autoConverge
        self.forceSwitchover = forceSwitchover
        self.throttleInitial = throttleInitial
        self.throttleStep = throttleStep
        self.throttleMax = throttleMax
    }
}

/// What one pre-copy round measured, as the policy sees it.
public struct RoundObservation: Sendable, Equatable {
    public var round: Int
    /// Pages with data (not zero markers) sent in this round.
    public var pagesSent: Int
    /// Seconds from the round's first page read to the destination's acknowledgement.
    public var transferSeconds: Double
    /// Pages found dirty by the harvest that ended the round (what the next round must send).
    public var dirtyPages: Int
    /// Seconds the guest had to dirty those pages (since the previous harvest).
    public var dirtySeconds: Double
    /// Seconds since the migration started.
    public var elapsed: Double
    /// Measured costs of a blackout that do not depend on the number of pages: pausing the vCPUs,
    /// the final harvest, round trips, the destination's digest and resume.
    public var fixedCostSeconds: Double
    /// vCPU slow-down in force during the round (0-99).
    public var throttlePercent: Int
    /// Pages the guest is expected to dirty between the harvest and the decision (it keeps
    /// running while the source waits for ROUND_ACK, which on a slow link includes draining the
    /// queued bytes): they join the final round if the source switches over now.
    public var dirtiedSinceHarvest: Int

    public init(
        round: Int, pagesSent: Int, transferSeconds: Double, dirtyPages: Int, dirtySeconds: Double,
        elapsed: Double, fixedCostSeconds: Double, throttlePercent: Int, dirtiedSinceHarvest: Int = 0
    ) {
        self.dirtiedSinceHarvest = dirtiedSinceHarvest
        self.round = round
        self.pagesSent = pagesSent
        self.transferSeconds = transferSeconds
        self.dirtyPages = dirtyPages
        self.dirtySeconds = dirtySeconds
        self.elapsed = elapsed
        self.fixedCostSeconds = fixedCostSeconds
        self.throttlePercent = throttlePercent
    }

    /// Pages per second the guest dirtied during the round.
    public var dirtyRate: Double { dirtySeconds > 0 ? Double(dirtyPages) / dirtySeconds : 0 }
}

public struct ConvergenceDecision: Sendable, Equatable {
    public enum Action: Sendable, Equatable, CustomStringConvertible {
        /// Send another round.
        case nextRound
        /// Set the vCPU throttle to this percentage, then send another round.
        case throttle(percent: Int)
        /// Pause the guest and finish.
        case switchover
        /// Stop migrating; the guest keeps running on the source.
        case giveUp

        public var description: String {
            switch self {
            case .nextRound: return "next round"
            case .throttle(let percent): return "throttle vCPUs by \(percent)%"
            case .switchover: return "switch over"
            case .giveUp: return "give up"
            }
        }
    }

    public var action: Action
    /// Predicted blackout if the guest were paused now, in seconds.
    public var predictedDowntime: Double
    /// Pages per second the policy expects the link to move.
    public var transferRate: Double
    public var reason: String
}

/// Decides after each pre-copy round whether to go on, slow the guest, switch over or give up.
///
/// Pure: statistics in, decision out; no clock, no I/O. It keeps a little history (the measured
/// transfer rate and how many rounds in a row the guest outpaced the link).
public struct ConvergencePolicy: Sendable {
    public let settings: ConvergenceSettings
    /// Rounds that sent fewer pages than this do not update the transfer-rate estimate:
    /// their time is dominated by fixed costs, not by the link.
    public static let minimumPagesForRate = 256

    /// Transfer rates (pages/s) of the last few rounds that sent enough pages to measure the link.
    /// Switch over when the predicted blackout is at most this share of the target.
    static let margin = 0.9
    private var recentRates: [Double] = []
    /// How many recent rounds the prediction looks at; it trusts the slowest, because the final
    /// round's rate varies by tens of percent from one round to the next and an optimistic
    /// prediction overshoots the downtime target.
    public static let rateWindow = 3
    private var transferRate: Double { recentRates.min() ?? 0 }
    private var outpacedRounds = 0
    private(set) public var throttlePercent = 0

    public init(settings: ConvergenceSettings) {
        self.settings = settings
    }

    public mutating func decide(_ round: RoundObservation) -> ConvergenceDecision {
        if round.transferSeconds > 0 && (round.pagesSent >= Self.minimumPagesForRate || recentRates.isEmpty) {
            recentRates.append(Double(max(round.pagesSent, 1)) / round.transferSeconds)
            if recentRates.count > Self.rateWindow { recentRates.removeFirst() }
        }
        let finalPages = round.dirtyPages + round.dirtiedSinceHarvest
        let sendSeconds = transferRate > 0 ? Double(finalPages) / transferRate : .infinity
        let predicted = round.fixedCostSeconds + (round.dirtyPages == 0 ? 0 : sendSeconds)

        func decision(_ action: ConvergenceDecision.Action, _ reason: String) -> ConvergenceDecision {
            ConvergenceDecision(
                action: action, predictedDowntime: predicted, transferRate: transferRate, reason: reason)
        }

        let outOfRounds = round.round + 1 >= settings.maxRounds
        let outOfTime = round.elapsed >= settings.timeoutSeconds
        if round.round == 0 && round.dirtyPages > 0 && !outOfRounds && !outOfTime {
            // Round 0 reads memory in order; the guest dirties pages scattered over it, which move
            // markedly slower (measured: about half the rate). Switch over only on a rate measured
            // on dirty pages.
            return decision(
                .nextRound,
                "round 0's rate comes from pages read in order; measuring a round of scattered dirty pages before switching over"
            )
        }
        // A 10% margin: on a 1 Gbit/s link the blackout came out ~5% above a prediction that
        // just fitted (50.6 ms for 48.1 predicted, target 50).
        if predicted <= Self.margin * settings.downtimeTargetSeconds {
            return decision(
                .switchover,
                "predicted downtime \(Self.ms(predicted)) fits the target \(Self.ms(settings.downtimeTargetSeconds)) with a 10% margin"
            )
        }
        if round.dirtyPages == 0 {
            // Nothing left to send: more rounds cannot shorten the blackout below its fixed costs.
            return decision(
                .switchover,
                "no dirty pages left; the fixed costs alone (\(Self.ms(predicted))) exceed the target \(Self.ms(settings.downtimeTargetSeconds)), and more rounds cannot lower them"
            )
        }
        if outOfRounds || outOfTime {
            let limit =
                outOfRounds
                ? "reached --max-rounds \(settings.maxRounds)" : "reached --timeout \(settings.timeoutSeconds) s"
            if settings.forceSwitchover {
                return decision(
                    .switchover,
                    "\(limit); switching over anyway (--force-switchover), predicted downtime \(Self.ms(predicted))")
            }
            return decision(
                .giveUp,
                "\(limit) without converging: predicted downtime \(Self.ms(predicted)) exceeds the target \(Self.ms(settings.downtimeTargetSeconds))"
            )
        }
        // The guest outpaces the link when it dirties more than half of what a round manages to send
        // (QEMU's auto-converge uses the same test); two such rounds in a row trigger a throttle step.
        if round.round > 0 && Double(round.dirtyPages) > 0.5 * Double(round.pagesSent) {
            outpacedRounds += 1
        } else {
            outpacedRounds = 0
        }
        if settings.autoConverge && outpacedRounds >= 2 && throttlePercent < settings.throttleMax {
            throttlePercent =
                throttlePercent == 0
                ? settings.throttleInitial
                : min(settings.throttleMax, throttlePercent + settings.throttleStep)
            outpacedRounds = 0
            return decision(
                .throttle(percent: throttlePercent),
                "guest dirtied \(round.dirtyPages) pages while \(round.pagesSent) were sent; throttling vCPUs to \(100 - throttlePercent)%"
            )
        }
        return decision(
            .nextRound,
            "predicted downtime \(Self.ms(predicted)) exceeds the target \(Self.ms(settings.downtimeTargetSeconds))")
    }

    /// Whether a migration that may switch to post-copy (`postcopyAfter` rounds at most, the
    /// destination offering it) does so after this round instead of what the policy said: when
    /// the policy would slow the guest down or give up — post-copy moves it without either —
    /// and when `postcopyAfter` rounds are done without converging. Never before one round is
    /// acknowledged, never instead of a switch-over that fits the target.
    public static func switchToPostcopy(after decision: ConvergenceDecision, roundsDone: Int, postcopyAfter: Int?)
        -> Bool
    {
        guard let postcopyAfter, roundsDone >= 1 else { return false }
        switch decision.action {
        case .switchover: return false
        case .throttle, .giveUp: return true
        case .nextRound: return roundsDone >= max(1, postcopyAfter)
        }
    }

    static func ms(_ seconds: Double) -> String {
        seconds.isFinite ? "\(Int((seconds * 1000).rounded())) ms" : "unbounded"
    }
}
