// What a live migration costs, predicted from a guest's memory and dirty rate and the link it
// crosses: the pre-copy rounds Ferry's engine makes (a full copy, then the pages dirtied during
// each round, until the rest fits the downtime target), each round's bytes at the link's share.
// Pure; the drain, the balancing pass and the simulator plan with it, and the controller calibrates
// it from the migrations it watched (`MigrationObservation`).

/// One guest as a migration sees it.
public struct MigrationProfile: Sendable, Equatable {
    public var memoryBytes: Int64
    /// Distinct bytes the guest dirties per second (measured by a migration of it, or assumed).
    public var dirtyBytesPerSecond: Double

    public init(memoryBytes: Int64, dirtyBytesPerSecond: Double) {
        self.memoryBytes = memoryBytes
        self.dirtyBytesPerSecond = dirtyBytesPerSecond
    }
}

/// A migration as `MigrationCostModel` predicts it.
public struct MigrationEstimate: Sendable, Equatable {
    /// The whole migration, setup and blackout included.
    public var seconds: Double
    /// On the wire.
    public var bytes: Double
    /// Pre-copy rounds, the full copy included.
    public var rounds: Int
    /// The rest fits the downtime target within `maxRounds`: no throttling needed.
    public var converges: Bool
    /// The blackout: the last round's bytes at the link's share.
    public var downtimeSeconds: Double

    public init(seconds: Double, bytes: Double, rounds: Int, converges: Bool, downtimeSeconds: Double) {
        self.seconds = seconds
        self.bytes = bytes
        self.rounds = rounds
        self.converges = converges
        self.downtimeSeconds = downtimeSeconds
    }
}

/// The link and the engine's settings a prediction assumes. Two rates bound a migration: what
/// all the migrations out of a host carry together (`linkBytesPerSecond`: the link, or the CPUs
/// when they run out first), shared equally, and what one migration carries alone
/// (`streamBytesPerSecond`: its engine's pace, round trips and harvests included), so that several
/// at once can be faster than one when one does not fill the link.
public struct MigrationCostModel: Sendable, Equatable {
    /// What the migrations out of one host carry together per second, on the wire.
    public var linkBytesPerSecond: Double
    /// What one migration carries alone per second, on the wire (nil: as much as the link).
    public var streamBytesPerSecond: Double?
    /// Fixed cost of one migration: preparation, handoff and resume.
    public var setupSeconds: Double
    public var downtimeTarget: Double
    public var maxRounds: Int
    /// Bytes on the wire per byte of guest memory sent (below 1: zero pages and compression).
    public var wireRatio: Double

    public init(
        linkBytesPerSecond: Double, setupSeconds: Double = 0.15, downtimeTarget: Double = 0.05, maxRounds: Int = 30,
        wireRatio: Double = 1, streamBytesPerSecond: Double? = nil
    ) {
        self.linkBytesPerSecond = linkBytesPerSecond
        self.streamBytesPerSecond = streamBytesPerSecond
        self.setupSeconds = setupSeconds
        self.downtimeTarget = downtimeTarget
        self.maxRounds = maxRounds
        self.wireRatio = wireRatio
    }

    /// The migration of `profile` while `sharing` migrations share the link (each gets an equal
    /// part, at most what one carries alone). Round 0 sends all memory; round i sends what was dirtied during round i-1 (never
    /// more than the guest's memory); when a round's bytes fit the downtime target they are the
    /// blackout. A guest that dirties as fast as its share carries never gets there: `converges`
    /// is false and the figures are those of `maxRounds` rounds and a blackout of what is left.
    public func estimate(_ profile: MigrationProfile, sharing: Int = 1) -> MigrationEstimate {
        let share = min(streamBytesPerSecond ?? .infinity, linkBytesPerSecond / Double(max(1, sharing)))
        guard share > 0 else {
            return MigrationEstimate(
                seconds: .infinity, bytes: .infinity, rounds: 0, converges: false, downtimeSeconds: .infinity)
        }
        let memory = Double(max(0, profile.memoryBytes))
        let dirty = max(0, profile.dirtyBytesPerSecond)
        var pending = memory
        var seconds = setupSeconds
        var bytes = 0.0
        var rounds = 0
        while true {
            let roundSeconds = pending * wireRatio / share
            let converged = rounds > 0 && roundSeconds <= downtimeTarget
            if converged || rounds >= maxRounds {
                bytes += pending * wireRatio
                return MigrationEstimate(
                    seconds: seconds + roundSeconds, bytes: bytes, rounds: rounds, converges: converged,
                    downtimeSeconds: roundSeconds)
            }
            bytes += pending * wireRatio
            seconds += roundSeconds
            rounds += 1
            let next = min(memory, dirty * roundSeconds)
            if rounds > 1, next >= pending {  // not shrinking: it never fits the target
                return MigrationEstimate(
                    seconds: seconds + next * wireRatio / share, bytes: bytes + next * wireRatio, rounds: rounds,
                    converges: false, downtimeSeconds: next * wireRatio / share)
            }
            pending = next
        }
    }

    /// This model with what the observed migrations measured (medians, so one odd run does not
    /// swing the plan; without observations, the model unchanged):
    /// - one migration's own rate: the median rate of those that ran alone (of all, if none did);
    /// - the rate of all together: the median of rate × sharing over those that shared the host
    ///   with others, never above the configured link; with none shared, the configured link
    ///   (the plan then tries more at once, and learns);
    /// - the fixed cost and the wire ratio: medians.
    public func calibrated(by observations: [MigrationObservation]) -> MigrationCostModel {
        guard !observations.isEmpty else { return self }
        var model = self
        let alone = observations.filter { $0.sharing <= 1 }.compactMap(\.sendBytesPerSecond)
        if let stream = Self.median(alone.isEmpty ? observations.compactMap(\.sendBytesPerSecond) : alone),
            stream > 0
        {
            model.streamBytesPerSecond = stream
        }
        let together = observations.filter { $0.sharing > 1 }.compactMap { observation in
            observation.sendBytesPerSecond.map { $0 * Double(observation.sharing) }
        }
        if let link = Self.median(together), link > 0 { model.linkBytesPerSecond = min(linkBytesPerSecond, link) }
        if let setup = Self.median(observations.compactMap(\.setupSeconds)) { model.setupSeconds = setup }
        let ratios = observations.compactMap { observation -> Double? in
            guard let sent = observation.memorySentBytes, sent > 0, let wire = observation.wireBytes else { return nil }
            return Double(wire) / Double(sent)
        }
        if let ratio = Self.median(ratios), ratio > 0 { model.wireRatio = min(1, ratio) }
        return model
    }

    public static func median(_ values: [Double]) -> Double? {
        guard !values.isEmpty else { return nil }
        let sorted = values.sorted()
        let middle = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
    }
}

/// What one finished migration measured, as its source reported it.
public struct MigrationObservation: Sendable, Equatable {
    /// The guest's dirty rate over the migration.
    public var dirtyBytesPerSecond: Double?
    /// The migration's own rate: wire bytes per second of its rounds.
    public var sendBytesPerSecond: Double?
    /// Migrations out of the same host at the time (itself included).
    public var sharing: Int
    public var setupSeconds: Double?
    /// Guest memory sent (pages × page size), and what it took on the wire.
    public var memorySentBytes: Int64?
    public var wireBytes: Int64?
    /// The guest's measured downtime (its blackout, from pause to resume).
    public var downtimeSeconds: Double?

    public init(
        dirtyBytesPerSecond: Double?, sendBytesPerSecond: Double?, sharing: Int, setupSeconds: Double?,
        memorySentBytes: Int64? = nil, wireBytes: Int64? = nil, downtimeSeconds: Double? = nil
    ) {
        self.downtimeSeconds = downtimeSeconds
        self.dirtyBytesPerSecond = dirtyBytesPerSecond
        self.sendBytesPerSecond = sendBytesPerSecond
        self.sharing = sharing
        self.setupSeconds = setupSeconds
        self.memorySentBytes = memorySentBytes
        self.wireBytes = wireBytes
    }
}
