/// Time-left estimates for the progress, pure: figures in, seconds out, nil when unknown.
public enum ProgressETA {
    /// What the convergence model knows after a round, from which it projects the rounds to come.
    public struct Model: Sendable, Equatable {
        /// Pages (with data) per second the link moves, as the policy estimates it.
        public var sendPagesPerSecond: Double
        /// Pages per second the guest dirtied in the last round.
        public var dirtyPagesPerSecond: Double
        /// The blackout's costs that do not depend on pages (pause, harvest, digest, round trips).
        public var fixedCostSeconds: Double
        /// The policy switches over once the predicted blackout is at most this long.
        public var switchoverSeconds: Double

        public init(
            sendPagesPerSecond: Double, dirtyPagesPerSecond: Double, fixedCostSeconds: Double,
            switchoverSeconds: Double
        ) {
            self.sendPagesPerSecond = sendPagesPerSecond
            self.dirtyPagesPerSecond = dirtyPagesPerSecond
            self.fixedCostSeconds = fixedCostSeconds
            self.switchoverSeconds = switchoverSeconds
        }
    }

    /// Seconds until a round that has sent `pagesSent` of its `pagesInRound` pages in
    /// `sendingSeconds` has sent them all, at the round's rate so far: 0 once all are out, nil
    /// before a page went out.
    public static func round(pagesSent: Int, pagesInRound: Int, sendingSeconds: Double) -> Double? {
        if pagesSent >= pagesInRound { return 0 }
        guard pagesSent > 0, sendingSeconds > 0, sendingSeconds.isFinite else { return nil }
        return Double(pagesInRound - pagesSent) * sendingSeconds / Double(pagesSent)
    }

    /// Seconds from the start of a round of `nextRoundPages` pages to the end of the blackout,
    /// as the convergence policy would play it: each round takes its pages over the link, the
    /// guest dirties pages meanwhile (the next round's), and the source switches over once a
    /// blackout of the fixed costs plus the pages left fits `switchoverSeconds` (or nothing is
    /// left), after at least `minimumRounds` more rounds. Nil when that does not happen within
    /// `roundsLeft` rounds (the guest outpaces the link; the policy would throttle, give up or
    /// force the switchover) or the link's rate is unknown.
    public static func migration(nextRoundPages: Int, roundsLeft: Int, minimumRounds: Int = 0, model: Model) -> Double?
    {
        let rate = model.sendPagesPerSecond
        guard rate > 0, rate.isFinite, model.dirtyPagesPerSecond >= 0, model.dirtyPagesPerSecond.isFinite,
            nextRoundPages >= 0
        else { return nil }
        var pages = Double(nextRoundPages)
        var seconds = 0.0
        var rounds = 0
        // Bounded: a projection of more rounds than this means nothing.
        let limit = min(roundsLeft, 1000)
        while true {
            let sendSeconds = pages / rate
            let blackout = model.fixedCostSeconds + sendSeconds
            if rounds >= minimumRounds && (blackout <= model.switchoverSeconds || pages == 0) {
                return seconds + blackout
            }
            if rounds >= limit { return nil }
            seconds += sendSeconds
            pages = model.dirtyPagesPerSecond * sendSeconds
            rounds += 1
        }
    }

    /// Seconds until the migration ends, during a round with `roundSecondsLeft` to go of
    /// `roundSeconds` in all: the rest of the round, then what the guest dirtied while it was
    /// sent, projected by `migration(nextRoundPages:roundsLeft:minimumRounds:model:)`.
    public static func migration(
        roundSecondsLeft: Double, roundSeconds: Double, roundsLeft: Int, model: Model
    ) -> Double? {
        guard roundSecondsLeft >= 0, roundSeconds >= 0, roundSeconds.isFinite else { return nil }
        let dirtied = (model.dirtyPagesPerSecond * roundSeconds).rounded()
        guard dirtied.isFinite, dirtied < Double(Int.max / 2),
            let rest = migration(nextRoundPages: Int(dirtied), roundsLeft: roundsLeft, model: model)
        else { return nil }
        return roundSecondsLeft + rest
    }
}
