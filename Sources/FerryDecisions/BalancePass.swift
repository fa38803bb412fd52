// Load balancing between hosts (issue 18, part 2): which guests a periodic pass live-migrates from
// hot hosts to cool ones, chosen by benefit over migration cost, with hysteresis so that passes
// over an unchanged cluster stop moving guests and never move one back. Pure: the caller passes
// the hosts, the guests with their measured loads, the moves still allowed this hour, and reads
// the moves in order; the period, the hourly count and the clock are the caller's.

/// A host as balancing and consolidation see it.
public struct ClusterHost: Sendable, Equatable {
    public var id: String
    /// What it has in all (not what is free: the guests listed on it are what it holds).
    public var capacity: Resources
    /// Healthy, heard from recently, not drained: it may receive guests.
    public var takesGuests: Bool
    /// Its agent reports a usable /dev/kvm.
    public var runsKVM: Bool

    public init(id: String, capacity: Resources, takesGuests: Bool = true, runsKVM: Bool = false) {
        self.id = id
        self.capacity = capacity
        self.takesGuests = takesGuests
        self.runsKVM = runsKVM
    }
}

/// A guest as balancing sees it.
public struct BalanceGuest: Sendable, Equatable {
    public var id: String
    public var host: String
    public var resources: Resources
    /// Its CPU load in **vCPU-units**: how many of its vCPUs are busy on average over the caller's
    /// window (0 … `resources.vcpus`; 1.5 is one and a half vCPUs busy). A host's load is the sum of
    /// its guests' loads divided by its vCPUs, so a guest weighs the same wherever it runs and a
    /// move's effect on hosts of different sizes is exact.
    public var load: Double
    public var needsKVM: Bool
    /// What a live migration of it costs (`MigrationCostModel.estimate`).
    public var profile: MigrationProfile
    /// It may be live-migrated now (running, nothing else being done to it, its policy allows).
    public var movable: Bool
    /// Seconds since it last moved (any migration); nil: not within memory.
    public var secondsSinceLastMove: Double?

    public init(
        id: String, host: String, resources: Resources, load: Double, needsKVM: Bool = false,
        profile: MigrationProfile, movable: Bool = true, secondsSinceLastMove: Double? = nil
    ) {
        self.id = id
        self.host = host
        self.resources = resources
        self.load = load
        self.needsKVM = needsKVM
        self.profile = profile
        self.movable = movable
        self.secondsSinceLastMove = secondsSinceLastMove
    }
}

/// The knobs of a pass. Loads are fractions of a host's vCPUs (0.8 = 80% busy).
public struct BalanceParameters: Sendable, Equatable {
    /// A host above it is hot: only hot hosts give guests away.
    public var highThreshold: Double
    /// A host receiving a guest must stay below `target - margin` after it.
    public var target: Double
    /// The hysteresis: the gap kept below the target, and the least benefit of a move.
    public var margin: Double
    /// The moves the hourly cap still allows (the cap minus the moves of the last hour, the caller
    /// counts); at most this many are chosen.
    public var movesAllowed: Int
    /// A guest that moved less than this long ago stays.
    public var coolDownSeconds: Double
    /// The least benefit (a fraction of a host's load) per second of migration.
    public var minimumBenefitPerSecond: Double
    public var costModel: MigrationCostModel

    public init(
        highThreshold: Double = 0.8, target: Double = 0.65, margin: Double = 0.05, movesAllowed: Int = 20,
        coolDownSeconds: Double = 3600, minimumBenefitPerSecond: Double = 0.002,
        costModel: MigrationCostModel = MigrationCostModel(linkBytesPerSecond: 125_000_000)
    ) {
        self.highThreshold = highThreshold
        self.target = target
        self.margin = margin
        self.movesAllowed = movesAllowed
        self.coolDownSeconds = coolDownSeconds
        self.minimumBenefitPerSecond = minimumBenefitPerSecond
        self.costModel = costModel
    }
}

/// One live migration a pass chooses, with what it predicts.
public struct BalanceMove: Sendable, Equatable, CustomStringConvertible {
    public var guest: String
    public var from: String
    public var to: String
    /// The source's and the destination's load (fraction of their vCPUs) once it is done.
    public var fromLoadAfter: Double
    public var toLoadAfter: Double
    /// How much closer the two hosts' loads come: `(from − to) − |from′ − to′|`, a fraction.
    public var benefit: Double
    /// `MigrationCostModel.estimate(…).seconds` of the guest, alone on the link.
    public var costSeconds: Double

    public init(
        guest: String, from: String, to: String, fromLoadAfter: Double, toLoadAfter: Double, benefit: Double,
        costSeconds: Double
    ) {
        self.guest = guest
        self.from = from
        self.to = to
        self.fromLoadAfter = fromLoadAfter
        self.toLoadAfter = toLoadAfter
        self.benefit = benefit
        self.costSeconds = costSeconds
    }

    public var description: String {
        "\(guest) \(from) → \(to) (benefit \(benefit), \(costSeconds) s; after \(fromLoadAfter), \(toLoadAfter))"
    }
}

/// A pass's moves, in the order chosen (each one's prediction counts the ones before), and the
/// population standard deviation of the hosts' loads before and predicted after them.
public struct BalancePlan: Sendable, Equatable {
    public var moves: [BalanceMove]
    public var spreadBefore: Double
    public var spreadAfter: Double

    public init(moves: [BalanceMove], spreadBefore: Double, spreadAfter: Double) {
        self.moves = moves
        self.spreadBefore = spreadBefore
        self.spreadAfter = spreadAfter
    }
}

/// The rules of a pass:
///
/// - A host's **load** is the sum of its guests' loads (vCPU-units) over its vCPUs; hosts without
///   vCPUs are left out, and so are their guests.
/// - A **legal move** takes a movable guest, not moved within the cool-down, whose migration
///   converges under the cost model, from a host above `highThreshold` to another host that
///   takes guests (with KVM for a KVM guest), has room for it in every dimension, and stays below
///   `target − margin` with it; its benefit (how much closer the two hosts' loads come) exceeds
///   `margin`; benefit ÷ cost is at least `minimumBenefitPerSecond`; and the spread of all hosts'
///   loads goes down.
/// - The pass takes the legal move with the highest benefit ÷ cost (then the destination left
///   least loaded, then the smaller guest ID, then host ID), applies it to its picture, and again,
///   until none is legal or `movesAllowed` are taken; a guest moves at most once a pass.
///
/// Why no ping-pong: a guest lands only on a host left below `target − margin`, under the
/// threshold; a host under the threshold gives nothing, so with the loads unchanged the guest never
/// moves again, back or elsewhere. A host just below the threshold, and one near `target − margin`,
/// are left alone. The pass stops only when nothing is legal or the cap is reached, so a pass the
/// cap did not stop finds nothing legal when run again over its own result.
public enum BalancePass {
    public static func plan(hosts: [ClusterHost], guests: [BalanceGuest], parameters: BalanceParameters)
        -> BalancePlan
    {
        var search = BalanceSearch(hosts: hosts, guests: guests, parameters: parameters)
        let spreadBefore = search.spread()
        var moves: [BalanceMove] = []
        while moves.count < parameters.movesAllowed, let move = search.next() {
            moves.append(move)
        }
        return BalancePlan(moves: moves, spreadBefore: spreadBefore, spreadAfter: search.spread())
    }

    /// The population standard deviation of `loads`.
    public static func spread(_ loads: [Double]) -> Double {
        guard !loads.isEmpty else { return 0 }
        let mean = loads.reduce(0, +) / Double(loads.count)
        let squares = loads.reduce(0) { $0 + ($1 - mean) * ($1 - mean) }
        return (squares / Double(loads.count)).squareRoot()
    }

    /// Each host's load (fraction of its vCPUs) with `guests` on it; hosts without vCPUs are left
    /// out.
    public static func loads(hosts: [ClusterHost], guests: [BalanceGuest]) -> [String: Double] {
        var sums: [String: Double] = [:]
        for guest in guests { sums[guest.host, default: 0] += guest.load }
        var loads: [String: Double] = [:]
        for host in hosts where host.capacity.vcpus > 0 {
            loads[host.id] = (sums[host.id] ?? 0) / Double(host.capacity.vcpus)
        }
        return loads
    }
}
