// Which members a group's scale-in removes and which it live-migrates first, so that a loaded
// member is not stopped while an idle one could go instead, and the hosts the group leaves are
// emptied (issue 17: "consolidation by migration comes before killing loaded guests"). Pure: the
// caller passes the members, their hosts and the count to remove.

/// A member a scale-in may remove or move: it runs, and nothing else is being done to it.
public struct ConsolidationMember: Sendable, Equatable {
    public var id: String
    public var host: String
    public var resources: Resources
    /// Its metric is above the group's loaded level (`ScaleInConsolidation.isLoaded`).
    public var loaded: Bool

    public init(id: String, host: String, resources: Resources, loaded: Bool) {
        self.id = id
        self.host = host
        self.resources = resources
        self.loaded = loaded
    }
}

/// A host as the plan sees it.
public struct ConsolidationHost: Sendable, Equatable {
    public var id: String
    /// What is free on it now (what its guests hold, moving ones on both hosts, taken off).
    public var free: Resources
    /// It takes guests, and the group's kind (KVM for a `kvm` image).
    public var accepts: Bool
    /// It holds a group member that can be neither moved nor removed now (building, busy, moving,
    /// suspended): it is never emptied.
    public var pinned: Bool

    public init(id: String, free: Resources, accepts: Bool, pinned: Bool = false) {
        self.id = id
        self.free = free
        self.accepts = accepts
        self.pinned = pinned
    }
}

/// One live migration of a member.
public struct ConsolidationMove: Sendable, Equatable, Hashable, CustomStringConvertible {
    public var member: String
    public var from: String
    public var to: String

    public init(member: String, from: String, to: String) {
        self.member = member
        self.from = from
        self.to = to
    }

    public var description: String { "\(member) \(from) → \(to)" }
}

/// What a scale-in does: the moves first, then the removals.
public struct ScaleInPlan: Sendable, Equatable {
    /// The members to stop and delete, in the policy's order.
    public var remove: [String]
    /// The live migrations, each from a host in `emptied` to one that keeps members.
    public var moves: [ConsolidationMove]
    /// The hosts that held members and hold none once the moves and removals are done, sorted.
    public var emptied: [String]

    public init(remove: [String], moves: [ConsolidationMove], emptied: [String]) {
        self.remove = remove
        self.moves = moves
        self.emptied = emptied
    }
}

/// The rules, in order of precedence:
///
/// 1. **Loaded members last.** A member is *loaded* when its mean metric over the policy's window
///    is above the group's loaded level (`isLoaded`: the target of target tracking, the threshold
///    of a threshold policy; a member without a metric is not loaded). The plan removes a loaded
///    member only when fewer idle members than the count are left: never a loaded one while an
///    idle one stays.
/// 2. **Most hosts emptied.** Among those removals, the plan empties as many of the hosts that hold
///    members as it can, by choosing which idle (or, past them, loaded) members to remove and by
///    live-migrating the others off those hosts onto hosts that keep members. A move is made only
///    as part of emptying a host; a destination takes guests, has the room now (the moves come
///    before the removals, so the room a removal frees is not counted) and is never also a source.
///    A pinned host is never emptied.
/// 3. **Fewest moves.** Removals fall on the emptied hosts first.
/// 4. **Where most members were.** Of two plans equal so far, the one whose emptied hosts held
///    fewer members: the members gather on the hosts that held most of them.
/// 5. **The policy's order** decides the rest: the removals elsewhere follow it, and of two plans
///    equal so far the one whose removals come earlier in it.
///
/// Exact up to `exhaustiveHosts` hosts holding members (every set of hosts to empty is tried);
/// beyond, hosts are added greedily, those with the fewest members first. With members of one
/// size (a group has one flavor) the packing is exact; with mixed sizes it is first-fit
/// decreasing, so a possible packing may be missed (never an impossible one made).
public enum ScaleInConsolidation {
    public static let exhaustiveHosts = 12

    /// A member's `load` (percent) against the group's loaded `level`: above it is loaded.
    public static func isLoaded(_ load: Double?, level: Double) -> Bool {
        guard let load, load.isFinite else { return false }
        return load > level
    }

    /// The plan removing `count` of `members` (given in the order the group's policy takes them)
    /// with `hosts` as they are now (a member's host missing from them is never a destination).
    public static func plan(members: [ConsolidationMember], count: Int, hosts: [ConsolidationHost]) -> ScaleInPlan {
        let count = max(0, min(count, members.count))
        let held = Array(Set(members.map(\.host))).sorted()
        let byID = Dictionary(hosts.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        let emptiable = held.filter { !(byID[$0]?.pinned ?? false) }
        let search = Search(members: members, count: count, held: held, hosts: byID)
        var best = search.evaluate([])!
        if emptiable.count <= exhaustiveHosts {
            for mask in 1..<(1 << emptiable.count) {
                let set = Set(emptiable.indices.filter { mask & (1 << $0) != 0 }.map { emptiable[$0] })
                if let candidate = search.evaluate(set), candidate.better(than: best) { best = candidate }
            }
        } else {
            var set: Set<String> = []
            let fewestFirst = emptiable.sorted { a, b in
                let (ca, cb) = (members.count { $0.host == a }, members.count { $0.host == b })
                return ca != cb ? ca < cb : a < b
            }
            for host in fewestFirst {
                if let candidate = search.evaluate(set.union([host])), candidate.better(than: best) {
                    best = candidate
                    set.insert(host)
                }
            }
        }
        return best.plan
    }

    /// One candidate: the plan and what ranks it.
    struct Candidate {
        var plan: ScaleInPlan
        /// How many members the emptied hosts held before.
        var gathered: Int
        /// The sum of the removed members' places in the policy's order.
        var rank: Int

        func better(than other: Candidate) -> Bool {
            if plan.emptied.count != other.plan.emptied.count { return plan.emptied.count > other.plan.emptied.count }
            if plan.moves.count != other.plan.moves.count { return plan.moves.count < other.plan.moves.count }
            if gathered != other.gathered { return gathered < other.gathered }
            return rank < other.rank
        }
    }

    struct Search {
        let members: [ConsolidationMember]
        let count: Int
        let held: [String]
        let hosts: [String: ConsolidationHost]

        /// The plan that empties `target` (nil if its members do not fit elsewhere).
        func evaluate(_ target: Set<String>) -> Candidate? {
            let idleBudget = min(count, members.count { !$0.loaded })
            var budget = (idle: idleBudget, loaded: count - idleBudget)
            var removed = Set<Int>()
            // Removals on the hosts to empty first, then elsewhere, each in the policy's order.
            for onTarget in [true, false] {
                for (index, member) in members.enumerated() where target.contains(member.host) == onTarget {
                    if member.loaded, budget.loaded > 0 {
                        budget.loaded -= 1
                        removed.insert(index)
                    } else if !member.loaded, budget.idle > 0 {
                        budget.idle -= 1
                        removed.insert(index)
                    }
                }
            }
            let moving = members.indices.filter { !removed.contains($0) && target.contains(members[$0].host) }
            guard let moves = pack(moving.map { members[$0] }, avoiding: target) else { return nil }
            var kept = Set(held.filter { hosts[$0]?.pinned ?? false })
            for index in members.indices where !removed.contains(index) && !target.contains(members[index].host) {
                kept.insert(members[index].host)
            }
            kept.formUnion(moves.map(\.to))
            let emptied = held.filter { !kept.contains($0) }
            let remove = removed.sorted().map { members[$0].id }
            let gathered = members.count { emptied.contains($0.host) }
            return Candidate(
                plan: ScaleInPlan(remove: remove, moves: moves, emptied: emptied), gathered: gathered,
                rank: removed.reduce(0, +))
        }

        /// First-fit decreasing of `moving` onto the hosts that hold members, outside `target`, accept
        /// guests: the fullest first (packing).
        func pack(_ moving: [ConsolidationMember], avoiding target: Set<String>) -> [ConsolidationMove]? {
            guard !moving.isEmpty else { return [] }
            var free = held.filter { !target.contains($0) }.compactMap { id in
                hosts[id].flatMap { $0.accepts ? ($0.id, $0.free) : nil }
            }
            free.sort { a, b in
                a.1.memoryBytes != b.1.memoryBytes
                    ? a.1.memoryBytes < b.1.memoryBytes : a.1.vcpus != b.1.vcpus ? a.1.vcpus < b.1.vcpus : a.0 < b.0
            }
            let largestFirst = moving.sorted { a, b in
                a.resources.memoryBytes != b.resources.memoryBytes
                    ? a.resources.memoryBytes > b.resources.memoryBytes : a.resources.vcpus > b.resources.vcpus
            }
            var moves: [ConsolidationMove] = []
            for member in largestFirst {
                guard let slot = free.firstIndex(where: { $0.1.fits(member.resources) }) else { return nil }
                free[slot].1 = free[slot].1 - member.resources
                moves.append(ConsolidationMove(member: member.id, from: member.host, to: free[slot].0))
            }
            let order = Dictionary(moving.enumerated().map { ($1.id, $0) }, uniquingKeysWith: { a, _ in a })
            return moves.sorted { order[$0.member]! < order[$1.member]! }
        }
    }
}
