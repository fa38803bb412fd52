// Consolidation at low demand (issue 18, part 3): which hosts to empty by live migration so that
// the guests sit on as few hosts as capacity and policy allow and the freed hosts can be put in
// standby. Pure: the caller passes the hosts and guests as they are now and carries out the moves.

/// A guest as consolidation sees it.
public struct ClusterGuest: Sendable, Equatable {
    public var id: String
    public var host: String
    public var resources: Resources
    public var needsKVM: Bool
    /// It may be live-migrated (running, nothing else being done to it, its policy allows). A guest
    /// that may not keeps its host in use.
    public var movable: Bool

    public init(id: String, host: String, resources: Resources, needsKVM: Bool = false, movable: Bool = true) {
        self.id = id
        self.host = host
        self.resources = resources
        self.needsKVM = needsKVM
        self.movable = movable
    }
}

/// One live migration of a guest.
public struct GuestMove: Sendable, Equatable, Hashable, CustomStringConvertible {
    public var guest: String
    public var from: String
    public var to: String

    public init(guest: String, from: String, to: String) {
        self.guest = guest
        self.from = from
        self.to = to
    }

    public var description: String { "\(guest) \(from) → \(to)" }
}

/// What a consolidation does.
public struct ClusterConsolidationPlan: Sendable, Equatable {
    /// The hosts that hold guests now and none once the moves are done, in the order emptied.
    public var emptied: [String]
    /// The moves, host by host in the order of `emptied`. Each goes from an emptied host to one
    /// that keeps guests, so they may run in any order or all at once.
    public var moves: [GuestMove]
    /// Hosts holding guests before and after the moves.
    public var hostsUsedBefore: Int
    public var hostsUsedAfter: Int

    /// `hostsUsedBefore − hostsUsedAfter`: the hosts that can go to standby.
    public var hostsFreed: Int { hostsUsedBefore - hostsUsedAfter }
}

/// The rules:
///
/// - A move takes a movable guest off a host that ends empty (a host holding a guest that may not
///   move is never emptied) onto a host that takes guests (with KVM for a KVM guest) and keeps
///   them; guests on kept hosts stay where they are.
/// - A host receiving guests keeps `headroom` of its capacity free in every dimension afterwards
///   (its own guests are not moved to make it so).
/// - The plan uses the fewest hosts it finds, and for that count the fewest moves.
///
/// Exact up to `exhaustiveHosts` hosts (holding guests or taking them) and `exhaustiveGuests`
/// guests: every set of hosts to keep, smallest first, is tried with every placement of the moving
/// guests (a host empty now may be among them). Beyond, greedy: the hosts with the fewest guests
/// (then the least memory) are emptied first, each only if all its guests fit; a guest goes to the
/// fullest host that holds guests, is not being emptied, and has room for it (best fit), which
/// keeps that host from being emptied later. Hosts empty now are not used as destinations.
public enum ClusterConsolidation {
    public static let exhaustiveHosts = 6
    public static let exhaustiveGuests = 8

    public static func plan(hosts: [ClusterHost], guests: [ClusterGuest], headroom: Double = 0.1)
        -> ClusterConsolidationPlan
    {
        let picture = ConsolidationPicture(hosts: hosts, guests: guests, headroom: headroom)
        let holding = picture.hosts.indices.filter { picture.count[$0] > 0 }
        let relevant = picture.hosts.indices.filter { picture.count[$0] > 0 || picture.hosts[$0].takesGuests }
        let emptied: [Int]
        let moves: [(guest: Int, to: Int)]
        if relevant.count <= exhaustiveHosts && picture.guests.count <= exhaustiveGuests {
            (emptied, moves) = picture.exact(relevant)
        } else {
            (emptied, moves) = picture.greedy(holding)
        }
        var after = Set(holding)
        after.subtract(emptied)
        after.formUnion(moves.map(\.to))
        return ClusterConsolidationPlan(
            emptied: emptied.map { picture.hosts[$0].id },
            moves: moves.map { move in
                GuestMove(
                    guest: picture.guests[move.guest].id, from: picture.hosts[picture.host[move.guest]].id,
                    to: picture.hosts[move.to].id)
            }, hostsUsedBefore: holding.count, hostsUsedAfter: after.count)
    }

    /// The fewest hosts that could hold `guests`, in every dimension taken alone: with hosts of one
    /// size, `max over dimensions of ceil(total demand ÷ capacity × (1 − headroom))`. With mixed
    /// sizes, the fewest hosts whose capacities, largest first, add up to the demand, per dimension
    /// (still a lower bound). Hosts that take guests or hold some count; if they cannot hold the
    /// demand, their number.
    public static func lowerBound(hosts: [ClusterHost], guests: [ClusterGuest], headroom: Double = 0) -> Int {
        let ids = Set(guests.map(\.host))
        let eligible = hosts.filter { $0.takesGuests || ids.contains($0.id) }
        let total = guests.reduce(Resources.zero) { $0 + $1.resources }
        let dimensions: [(Resources) -> Int] = [\.vcpus, \.memoryBytes, \.diskBytes]
        var bound = 0
        for dimension in dimensions {
            let demand = Double(dimension(total))
            guard demand > 0 else { continue }
            let sizes = eligible.map { Double(dimension($0.capacity)) * (1 - headroom) }.sorted(by: >)
            var (count, sum) = (0, 0.0)
            while sum < demand && count < sizes.count {
                sum += sizes[count]
                count += 1
            }
            bound = max(bound, count)
        }
        return bound
    }
}

/// The cluster as arrays, for both searches.
struct ConsolidationPicture {
    let hosts: [ClusterHost]
    let guests: [ClusterGuest]
    /// Each guest's host (an index into `hosts`).
    let host: [Int]
    let count: [Int]
    let used: [Resources]
    /// What a receiving host may hold: its capacity less the headroom, per dimension.
    let limit: [Resources]
    /// Each host takes guests; each runs KVM guests; each guest's resources (flat, for the scans).
    let accepts: [Bool]
    let kvm: [Bool]
    let demand: [Resources]

    init(hosts: [ClusterHost], guests: [ClusterGuest], headroom: Double) {
        var index: [String: Int] = [:]
        for (position, host) in hosts.enumerated() where index[host.id] == nil { index[host.id] = position }
        let placed = guests.compactMap { guest in index[guest.host].map { (guest, $0) } }
        self.hosts = hosts
        self.guests = placed.map(\.0)
        host = placed.map(\.1)
        var count = Array(repeating: 0, count: hosts.count)
        var used = Array(repeating: Resources.zero, count: hosts.count)
        for (guest, position) in placed {
            count[position] += 1
            used[position] = used[position] + guest.resources
        }
        self.count = count
        self.used = used
        accepts = hosts.map(\.takesGuests)
        kvm = hosts.map(\.runsKVM)
        demand = placed.map(\.0.resources)
        let keep = max(0, min(1, 1 - headroom))
        limit = hosts.map { host in
            Resources(
                vcpus: Int(Double(host.capacity.vcpus) * keep),
                memoryBytes: Int(Double(host.capacity.memoryBytes) * keep),
                diskBytes: Int(Double(host.capacity.diskBytes) * keep))
        }
    }

    /// Whether `guest` may go onto `destination` holding `used` now.
    func takes(_ destination: Int, _ guest: Int, holding used: Resources) -> Bool {
        accepts[destination] && (kvm[destination] || !guests[guest].needsKVM)
            && limit[destination].fits(used + demand[guest])
    }

    /// Larger first: memory, then vCPUs, then disk, then the input's order.
    func largestFirst(_ a: Int, _ b: Int) -> Bool {
        let (x, y) = (guests[a].resources, guests[b].resources)
        if x.memoryBytes != y.memoryBytes { return x.memoryBytes > y.memoryBytes }
        if x.vcpus != y.vcpus { return x.vcpus > y.vcpus }
        if x.diskBytes != y.diskBytes { return x.diskBytes > y.diskBytes }
        return a < b
    }
}
