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
    /// The most the vCPUs may be slowed down (`--max-throttle`, 1…99).
    public var throttleMax: Int
    /// Whether the migration may switch to post-copy (`--postcopy`, `--postcopy-after`), or nil.
    public var postcopy: PostcopySettings?

    public init(
        downtimeTarget: Duration = .milliseconds(50), maxRounds: Int = 30, timeout: Duration = .seconds(300),
        autoConverge: Bool = true, forceSwitchover: Bool = false,
        throttleInitial: Int = 20, throttleStep: Int = 10, throttleMax: Int = 99, postcopy: PostcopySettings? = nil
    ) {
        self.postcopy = postcopy
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

/// When a migration may leave pre-copy for post-copy (docs/postcopy.md). Only with a destination
/// that offers it; never before one round is acknowledged, never instead of a switch-over that
/// fits the target.
public struct PostcopySettings: Sendable, Equatable {
    /// Switch after this many rounds without converging at the latest (`--postcopy-after`); nil:
    /// only when post-copy costs the guest less than throttling would, or instead of giving up.
    public var afterRounds: Int?

    public init(afterRounds: Int? = nil) {
        self.afterRounds = afterRounds
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
    /// Measured costs of a blackout besides the final pages: pausing the vCPUs, the final
    /// harvest, the device state, queued bytes, the destination's digest, round trips.
    public var costs: BlackoutForecast.Costs
    /// The part of `costs` that does not depend on the link's rate.
    public var fixedCostSeconds: Double { costs.fixedSeconds }
    /// Bytes the round put on the wire (0: not known; the byte rate is then taken as a page's
    /// size per page).
    public var wireBytes: UInt64
    /// vCPU slow-down in force during the round (0-99).
    public var throttlePercent: Int
    /// Pages the guest is expected to dirty between the harvest and the decision (it keeps
    /// running while the source waits for ROUND_ACK, which on a slow link includes draining the
    /// queued bytes): they join the final round if the source switches over now.
    public var dirtiedSinceHarvest: Int
    /// The guest's pages and vCPUs, and the measured round trip: what post-copy's cost needs.
    public var pageCount: Int
    public var vcpus: Int
    public var roundTripSeconds: Double

    public init(
        round: Int, pagesSent: Int, transferSeconds: Double, dirtyPages: Int, dirtySeconds: Double,
        elapsed: Double, costs: BlackoutForecast.Costs, throttlePercent: Int, dirtiedSinceHarvest: Int = 0,
        pageCount: Int = 0, vcpus: Int = 1, roundTripSeconds: Double = 0, wireBytes: UInt64 = 0
    ) {
        self.wireBytes = wireBytes
        self.pageCount = pageCount
        self.vcpus = vcpus
        self.roundTripSeconds = roundTripSeconds
        self.dirtiedSinceHarvest = dirtiedSinceHarvest
        self.round = round
        self.pagesSent = pagesSent
        self.transferSeconds = transferSeconds
        self.dirtyPages = dirtyPages
        self.dirtySeconds = dirtySeconds
        self.elapsed = elapsed
        self.costs = costs
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
        /// Hand the guest over now and let its stale pages follow it (post-copy).
        case postcopy

        public var description: String {
            switch self {
            case .nextRound: return "next round"
            case .throttle(let percent): return "throttle vCPUs by \(percent)%"
            case .switchover: return "switch over"
            case .giveUp: return "give up"
            case .postcopy: return "switch to post-copy"
            }
        }
    }

    public var action: Action
    /// Predicted blackout if the guest were paused now, in seconds.
    public var predictedDowntime: Double
    /// Pages per second the policy expects the link to move.
    public var transferRate: Double
    public var reason: String
    /// The blackout `predictedDowntime` adds up, part by part.
    public var forecast: BlackoutForecast?
    /// What pre-copy and post-copy were predicted to cost the guest from here, when the policy
    /// weighed them (post-copy allowed and offered).
    public var costs: WeighedCosts?
}

/// The two predictions the policy compared (`HybridCost`).
public struct WeighedCosts: Sendable, Equatable {
    /// nil: pre-copy cannot converge within `--max-throttle` and the rounds left.
    public var precopy: HybridCost.Precopy?
    public var postcopy: HybridCost.Postcopy
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
    /// Wire bytes per second of the same rounds.
    private var recentByteRates: [Double] = []
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

    /// Whether the destination offered post-copy (`CodecSet.postcopy`); set after the handshake.
    public var postcopyOffered = false

    /// The decision after `round`: pre-copy's own (`precopyDecision`), or post-copy where it is
    /// allowed and costs the guest less (`weighPostcopy`).
    public mutating func decide(_ round: RoundObservation) -> ConvergenceDecision {
        let precopy = precopyDecision(round)
        guard let postcopy = settings.postcopy, postcopyOffered else { return precopy }
        return weighPostcopy(precopy, after: round, postcopy)
    }

    /// Keeps the round's page and byte rates when it moved enough pages to measure the link.
    private mutating func observeRates(_ round: RoundObservation) {
        guard round.transferSeconds > 0 && (round.pagesSent >= Self.minimumPagesForRate || recentRates.isEmpty)
        else { return }
        let pages = Double(max(round.pagesSent, 1))
        recentRates.append(pages / round.transferSeconds)
        let bytes = round.wireBytes > 0 ? Double(round.wireBytes) : pages * 4096  // wire bytes not known
        recentByteRates.append(bytes / round.transferSeconds)
        if recentRates.count > Self.rateWindow {
            recentRates.removeFirst()
            recentByteRates.removeFirst()
        }
    }

    /// The blackout if the guest were paused after `round`, at the slowest recent round's rates
    /// (pages and bytes alike).
    private func forecast(_ round: RoundObservation) -> BlackoutForecast {
        let slowest = recentRates.indices.min { recentRates[$0] < recentRates[$1] }
        return BlackoutForecast(
            costs: round.costs, dirtyPages: round.dirtyPages, stalePages: round.dirtiedSinceHarvest,
            pagesPerSecond: transferRate, bytesPerSecond: slowest.map { recentByteRates[$0] } ?? 0)
    }

    private mutating func precopyDecision(_ round: RoundObservation) -> ConvergenceDecision {
        observeRates(round)
        let blackout = forecast(round)
        let predicted = blackout.totalSeconds

        func decision(_ action: ConvergenceDecision.Action, _ reason: String) -> ConvergenceDecision {
            ConvergenceDecision(
                action: action, predictedDowntime: predicted, transferRate: transferRate, reason: reason,
                forecast: blackout)
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
        if round.dirtyPages == 0 && round.dirtiedSinceHarvest == 0 {
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
                ? min(settings.throttleMax, settings.throttleInitial)
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

    /// Post-copy instead of `precopy`'s decision: after `--postcopy-after` rounds, instead of
    /// giving up, and when pre-copy from here (throttled as it would be, within `--max-throttle`
    /// and the rounds left) is predicted to cost the guest more running time than post-copy's
    /// waits for pages (`HybridCost`). Never instead of a switch-over that fits the target; the
    /// costs are weighed from round 1 on (round 0's rate comes from pages read in order).
    func weighPostcopy(_ precopy: ConvergenceDecision, after round: RoundObservation, _ postcopy: PostcopySettings)
        -> ConvergenceDecision
    {
        if precopy.action == .switchover { return precopy }
        // The costs are expectations, so they take the last round's rate, not the slowest of the
        // last few that the downtime prediction trusts (on a 1 Gbit/s link the slowest, round 0's
        // with the image's zero pages left out, made pre-copy look twice as costly as it was).
        let costRate = recentRates.last ?? precopy.transferRate
        let inputs = HybridCost.Inputs(
            pendingPages: round.dirtyPages + round.dirtiedSinceHarvest, pageCount: round.pageCount,
            transferRate: costRate, dirtyRate: round.dirtyRate, throttlePercent: round.throttlePercent,
            vcpus: round.vcpus,
            faultWaitSeconds: HybridCost.faultWait(roundTripSeconds: round.roundTripSeconds, transferRate: costRate),
            finalRoundPages: max(0, Self.margin * settings.downtimeTargetSeconds - round.fixedCostSeconds)
                * precopy.transferRate,
            roundsLeft: settings.maxRounds - round.round - 1, throttleInitial: settings.throttleInitial,
            throttleStep: settings.throttleStep, throttleMax: settings.throttleMax,
            autoConverge: settings.autoConverge, dirtySeconds: round.dirtySeconds, outpacedRounds: outpacedRounds,
            nextThrottlePercent: throttlePercent)
        var weighed = precopy
        let postcopyCost = HybridCost.postcopy(inputs)
        let precopyCost = HybridCost.precopy(inputs)
        if let postcopyCost { weighed.costs = WeighedCosts(precopy: precopyCost, postcopy: postcopyCost) }
        func switching(_ reason: String) -> ConvergenceDecision {
            weighed.action = .postcopy
            weighed.reason = reason
            return weighed
        }
        let roundsDone = round.round + 1
        if let after = postcopy.afterRounds, roundsDone >= max(1, after) {
            return switching("\(roundsDone) round(s) without converging (--postcopy-after \(after))")
        }
        if precopy.action == .giveUp { return switching("instead of giving up: \(precopy.reason)") }
        guard round.round >= 1, let postcopyCost else { return weighed }
        let postText =
            "post-copy would cost the guest \(Self.ms(postcopyCost.costSeconds)) (about \(Int(postcopyCost.faults.rounded())) faults over a \(Self.ms(postcopyCost.seconds)) push)"
        guard let precopyCost else {
            return switching(
                "pre-copy cannot converge within --max-throttle \(settings.throttleMax)% and \(inputs.roundsLeft) round(s) left; \(postText)"
            )
        }
        if postcopyCost.costSeconds < precopyCost.costSeconds {
            return switching(
                "\(postText) against \(Self.ms(precopyCost.costSeconds)) for pre-copy (throttled to \(precopyCost.throttlePercent)% for \(Self.ms(precopyCost.seconds)))"
            )
        }
        return weighed
    }

    static func ms(_ seconds: Double) -> String {
        seconds.isFinite ? "\(Int((seconds * 1000).rounded())) ms" : "unbounded"
    }
}
