/// Where a lease's reserved units go at the start of its window, and which on-demand guests must
/// be live-migrated away to make room; pure.
///
/// **The pool.** A delivered lease holds *slots*: on each host of its pool, a number of its units
/// set aside for it alone. On-demand placement sees a host's capacity minus its guests and minus
/// every slot of a delivered lease on it; only the lessee's guests go into the slots.
///
/// **The plan.** Admission promised that the units fit the cluster's capacity in total, not how
/// they pack onto hosts. At the start:
/// 1. Units go where room is free already, the hosts with the most room first (few hosts per
///    lease, no migration).
/// 2. For each unit still missing, the host that needs the fewest migrations to free one more
///    unit gives it: its on-demand guests, smallest first, move to other hosts that have room
///    for them beside their slots (the most room first). Guests are migrated, never stopped;
///    guests that cannot move stay, and the unit is not made there.
/// 3. Units that no host can give are *short*: the lease is delivered short, visibly.
///
/// Every move's destination has room for the guest when the plan is made (each move is counted
/// against its destination before the next is chosen), no host ends over its capacity, and a
/// host is never both a source and a destination of one plan's moves.
public enum LeaseDelivery {
    public static func plan(unit: Resources, count: Int, needsKVM: Bool, hosts: [DeliveryHost]) -> DeliveryPlan {
        var state = PlanState(hosts: hosts.filter { $0.takesGuests && ($0.runsKVM || !needsKVM) }, all: hosts)
        guard count > 0, unit != .zero else { return DeliveryPlan(slots: [:], moves: [], short: max(0, count)) }
        var missing = count
        // 1. Free room, the roomiest hosts first.
        let roomiest = state.eligible.sorted {
            (state.freeUnits($0, unit), -$0) > (state.freeUnits($1, unit), -$1)
        }
        for index in roomiest {
            guard missing > 0 else { break }
            let take = min(missing, state.freeUnits(index, unit))
            if take > 0 {
                state.allot(index, take, unit)
                missing -= take
            }
        }
        // 2. One unit at a time, from the host that frees it with the fewest moves.
        while missing > 0, let (index, moves) = state.cheapestUnit(unit) {
            for move in moves { state.apply(move) }
            state.allot(index, 1, unit)
            missing -= 1
        }
        return DeliveryPlan(slots: state.slots, moves: state.moves, short: missing)
    }
}

/// A host as the delivery plan sees it.
public struct DeliveryHost: Sendable, Equatable {
    public var id: String
    public var capacity: Resources
    /// What its guests and the slots of other delivered leases hold on it.
    public var held: Resources
    /// It may be given units.
    public var takesGuests: Bool
    /// A guest may be migrated onto it (false for a host in standby: units there wake it, a
    /// migration cannot).
    public var takesMoves: Bool
    public var runsKVM: Bool
    /// The on-demand guests on it that may be live-migrated (running, not moving already).
    public var movable: [MovableGuest]

    public init(
        id: String, capacity: Resources, held: Resources, takesGuests: Bool, runsKVM: Bool,
        movable: [MovableGuest], takesMoves: Bool? = nil
    ) {
        self.takesMoves = takesMoves ?? takesGuests
        self.id = id
        self.capacity = capacity
        self.held = held
        self.takesGuests = takesGuests
        self.runsKVM = runsKVM
        self.movable = movable
    }
}

public struct MovableGuest: Sendable, Equatable {
    public var id: String
    public var resources: Resources
    public var needsKVM: Bool

    public init(id: String, resources: Resources, needsKVM: Bool) {
        self.id = id
        self.resources = resources
        self.needsKVM = needsKVM
    }
}

public struct DeliveryMove: Sendable, Equatable {
    public var guest: String
    public var from: String
    public var to: String

    public init(guest: String, from: String, to: String) {
        self.guest = guest
        self.from = from
        self.to = to
    }
}

public struct DeliveryPlan: Sendable, Equatable {
    /// Units set aside per host.
    public var slots: [String: Int]
    /// Live migrations to make before the slots are free, in order.
    public var moves: [DeliveryMove]
    /// Units no host could give.
    public var short: Int

    public init(slots: [String: Int], moves: [DeliveryMove], short: Int) {
        self.slots = slots
        self.moves = moves
        self.short = short
    }
}

/// The plan's working copy of the hosts: what each holds as moves and slots are added.
private struct PlanState {
    var hosts: [DeliveryHost]
    /// Indexes of the hosts that may take units.
    var eligible: [Int]
    var slots: [String: Int] = [:]
    var moves: [DeliveryMove] = []
    /// Hosts that gave guests: no move goes to them.
    var closedToArrivals: Set<Int> = []
    /// Hosts that received guests: no move leaves them.
    var receivers: Set<Int> = []

    init(hosts eligibleHosts: [DeliveryHost], all: [DeliveryHost]) {
        hosts = all
        let ids = Set(eligibleHosts.map(\.id))
        eligible = all.indices.filter { ids.contains(all[$0].id) }
    }

    func free(_ index: Int) -> Resources { hosts[index].capacity - hosts[index].held }

    func freeUnits(_ index: Int, _ unit: Resources) -> Int { Self.units(of: unit, in: free(index)) }

    static func units(of unit: Resources, in room: Resources) -> Int {
        guard room.isNonNegative else { return 0 }
        var fit = Int.max
        if unit.vcpus > 0 { fit = min(fit, room.vcpus / unit.vcpus) }
        if unit.memoryBytes > 0 { fit = min(fit, room.memoryBytes / unit.memoryBytes) }
        if unit.diskBytes > 0 { fit = min(fit, room.diskBytes / unit.diskBytes) }
        return fit == Int.max ? 0 : fit
    }

    mutating func allot(_ index: Int, _ count: Int, _ unit: Resources) {
        for _ in 0..<count { hosts[index].held = hosts[index].held + unit }
        slots[hosts[index].id, default: 0] += count
    }

    mutating func apply(_ move: (guest: MovableGuest, from: Int, to: Int)) {
        hosts[move.from].held = hosts[move.from].held - move.guest.resources
        hosts[move.from].movable.removeAll { $0.id == move.guest.id }
        hosts[move.to].held = hosts[move.to].held + move.guest.resources
        moves.append(DeliveryMove(guest: move.guest.id, from: hosts[move.from].id, to: hosts[move.to].id))
        closedToArrivals.insert(move.from)
        receivers.insert(move.to)
    }

    /// The eligible host that frees one more unit with the fewest moves, and those moves; nil if
    /// none can.
    func cheapestUnit(_ unit: Resources) -> (Int, [(guest: MovableGuest, from: Int, to: Int)])? {
        var best: (Int, [(guest: MovableGuest, from: Int, to: Int)])?
        for index in eligible where !receivers.contains(index) {
            guard let moves = movesFreeing(unit, on: index) else { continue }
            if best.map({ moves.count < $0.1.count }) ?? true { best = (index, moves) }
        }
        return best
    }

    /// Moves of guests off `index`, smallest first, each to the roomiest host open to arrivals
    /// that runs it, until a unit fits there; nil if the guests that can move do not free one.
    func movesFreeing(_ unit: Resources, on index: Int) -> [(guest: MovableGuest, from: Int, to: Int)]? {
        var room = free(index)
        var destinations = hosts.indices.filter { $0 != index && !closedToArrivals.contains($0) }
            .filter { hosts[$0].takesGuests && hosts[$0].takesMoves }
        var destinationFree = Dictionary(uniqueKeysWithValues: destinations.map { ($0, free($0)) })
        var chosen: [(guest: MovableGuest, from: Int, to: Int)] = []
        let guests = hosts[index].movable.sorted { Self.size($0.resources) < Self.size($1.resources) }
        for guest in guests {
            if room.fits(unit) { break }
            destinations.sort {
                let (left, right) = (Self.size(destinationFree[$0]!), Self.size(destinationFree[$1]!))
                return left == right ? $0 < $1 : left > right
            }
            guard
                let to = destinations.first(where: {
                    destinationFree[$0]!.fits(guest.resources) && (hosts[$0].runsKVM || !guest.needsKVM)
                })
            else { continue }
            destinationFree[to] = destinationFree[to]! - guest.resources
            room = room + guest.resources
            chosen.append((guest, index, to))
        }
        return room.fits(unit) ? chosen : nil
    }

    /// A rough order of sizes (memory first, then vCPUs, then disk).
    static func size(_ resources: Resources) -> [Int] {
        [resources.memoryBytes, resources.vcpus, resources.diskBytes]
    }
}

extension Array where Element == Int {
    fileprivate static func < (lhs: [Int], rhs: [Int]) -> Bool { lhs.lexicographicallyPrecedes(rhs) }
    fileprivate static func > (lhs: [Int], rhs: [Int]) -> Bool { rhs.lexicographicallyPrecedes(lhs) }
}
