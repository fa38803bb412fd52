/// What a migration is doing now, as numbers: the engine hands one to its `ProgressHandler`
/// while a round is sent (a few times a second) and at each round's end; a user of the library
/// (the CLI, a control plane) formats it as it likes.
///
/// Rates follow one definition (`SendRate`): bytes on the wire per second of sending. The live
/// value is measured over the last seconds of sending (`SendRateWindow`); at a round's end it is
/// the round's own rate, the figure the report's `per_round[].send_rate_mbps` carries.
public struct MigrationProgress: Sendable, Equatable {
    public enum Role: String, Sendable, Equatable {
        case source
        case destination
    }

    /// What a progress value is about.
    public enum Kind: Sendable, Equatable {
        /// A round is being sent: the figures so far.
        case live
        /// The round has ended (source: acknowledged and decided; destination: acknowledged).
        case roundEnded
        /// The connections were lost while `round` was sent, `percentSent` of it out; the source
        /// is making connection attempt `attempt` of `attempts`.
        case reconnecting(percentSent: Int, attempt: Int, attempts: Int)
        /// The source is back: the destination holds `pagesHeld` of the guest's pages, and the
        /// next round resends `pagesInRound`.
        case resumed(pagesHeld: Int)
    }

    public var role: Role
    public var kind: Kind
    public var round: Int
    /// Pages of this round sent so far (source) or received in it (destination, at its end).
    public var pagesSent: Int
    /// Pages the round sends; nil where it is not known (the destination).
    public var pagesInRound: Int?
    /// The guest's pages (the image's size in pages).
    public var pageCount: Int
    public var pageSize: Int
    /// Bytes written (source) or read (destination) on the page streams in this round so far.
    public var roundWireBytes: UInt64
    /// The same since the migration started.
    public var wireBytes: UInt64
    /// Seconds since the migration started.
    public var elapsedSeconds: Double
    /// Wire bytes per second of sending (`SendRate`); nil before it was measured.
    public var sendBytesPerSecond: Double?
    /// Guest pages per second dirtied during the last complete round (0 before one ended).
    public var dirtyPagesPerSecond: Double
    /// The blackout the convergence policy predicts if the guest switched over now; nil before
    /// a round ended (or when the link's rate is unknown).
    public var predictedDowntimeSeconds: Double?
    /// Seconds until this round has sent its pages (`ProgressETA.round`); nil when unknown.
    public var roundETASeconds: Double?
    /// Seconds until the migration ends, by the convergence model (`ProgressETA.migration`); nil
    /// while it is not predictable (round 0, a guest that outpaces the link).
    public var migrationETASeconds: Double?

    public init(
        role: Role, kind: Kind, round: Int, pagesSent: Int, pagesInRound: Int?, pageCount: Int, pageSize: Int,
        roundWireBytes: UInt64, wireBytes: UInt64, elapsedSeconds: Double, sendBytesPerSecond: Double? = nil,
        dirtyPagesPerSecond: Double = 0, predictedDowntimeSeconds: Double? = nil, roundETASeconds: Double? = nil,
        migrationETASeconds: Double? = nil
    ) {
        self.role = role
        self.kind = kind
        self.round = round
        self.pagesSent = pagesSent
        self.pagesInRound = pagesInRound
        self.pageCount = pageCount
        self.pageSize = pageSize
        self.roundWireBytes = roundWireBytes
        self.wireBytes = wireBytes
        self.elapsedSeconds = elapsedSeconds
        self.sendBytesPerSecond = sendBytesPerSecond
        self.dirtyPagesPerSecond = dirtyPagesPerSecond
        self.predictedDowntimeSeconds = predictedDowntimeSeconds
        self.roundETASeconds = roundETASeconds
        self.migrationETASeconds = migrationETASeconds
    }

    /// Share of the round sent, 0...1; nil when the round's size is not known.
    public var fractionOfRound: Double? {
        guard let pagesInRound else { return nil }
        return pagesInRound > 0 ? min(1, Double(pagesSent) / Double(pagesInRound)) : 1
    }

    /// The wire bytes the whole round will take, extrapolated from the pages sent so far; nil
    /// before a page went out or when the round's size is unknown.
    public var roundWireBytesEstimate: UInt64? {
        guard let pagesInRound, pagesSent > 0 else { return nil }
        if pagesSent >= pagesInRound { return roundWireBytes }
        return UInt64(Double(roundWireBytes) * Double(pagesInRound) / Double(pagesSent))
    }
}

/// Called by the engine with each progress value: from the session's thread at round ends and
/// from a page stream's thread during a round (never two at once for one migration).
public typealias ProgressHandler = @Sendable (MigrationProgress) -> Void
