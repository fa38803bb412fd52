import FerryControl
import FerryTestSupport
import Testing

/// Cluster consolidation: hand cases, the lower bound, a brute force over every placement of
/// every guest on small clusters, and the greedy search's promises on larger ones.
@Suite struct ClusterConsolidationTests {
    static func host(_ id: String, size: Int = 10, kvm: Bool = false, takes: Bool = true) -> ClusterHost {
        ClusterHost(
            id: id, capacity: Resources(vcpus: size, memoryBytes: size << 30, diskBytes: size << 34),
            takesGuests: takes, runsKVM: kvm)
    }

    static func guest(_ id: String, on host: String, size: Int = 1, kvm: Bool = false, movable: Bool = true)
        -> ClusterGuest
    {
        ClusterGuest(
            id: id, host: host, resources: Resources(vcpus: size, memoryBytes: size << 30, diskBytes: size << 30),
            needsKVM: kvm, movable: movable)
    }

    /// Three hosts a third full: two are emptied into the fullest, which keeps 10% free.
    @Test func thinHostsAreEmptiedIntoTheFullest() {
        let hosts = [Self.host("h1"), Self.host("h2"), Self.host("h3")]
        let guests = [
            Self.guest("a", on: "h1", size: 3), Self.guest("b", on: "h2", size: 2), Self.guest("c", on: "h3", size: 2),
            Self.guest("d", on: "h3", size: 2),
        ]
        let plan = ClusterConsolidation.plan(hosts: hosts, guests: guests, headroom: 0.1)
        #expect(plan.emptied == ["h1", "h2"] && plan.hostsUsedBefore == 3 && plan.hostsUsedAfter == 1)
        #expect(Set(plan.moves) == [.init(guest: "b", from: "h2", to: "h3"), .init(guest: "a", from: "h1", to: "h3")])
        // With 40% headroom h3 may hold 6: one host is freed, not two.
        let roomy = ClusterConsolidation.plan(hosts: hosts, guests: guests, headroom: 0.4)
        #expect(roomy.hostsFreed == 1 && roomy.moves.count == 1, "\(roomy)")
        Self.check(roomy, hosts: hosts, guests: guests, headroom: 0.4)
    }

    @Test func aGuestThatMayNotMoveKeepsItsHostAndKVMIsRespected() {
        let hosts = [Self.host("h2"), Self.host("h1", kvm: true), Self.host("h3", takes: false)]
        let pinned = [Self.guest("a", on: "h1", movable: false), Self.guest("b", on: "h2")]
        #expect(
            ClusterConsolidation.plan(hosts: hosts, guests: pinned).moves == [.init(guest: "b", from: "h2", to: "h1")])
        // Emptying h1 onto h2 would be tried first, but a needs KVM.
        let kvm = [Self.guest("a", on: "h1", kvm: true), Self.guest("b", on: "h2")]
        #expect(ClusterConsolidation.plan(hosts: hosts, guests: kvm).moves == [.init(guest: "b", from: "h2", to: "h1")])
        let bothPinned = [Self.guest("a", on: "h1", movable: false), Self.guest("b", on: "h2", movable: false)]
        #expect(ClusterConsolidation.plan(hosts: hosts, guests: bothPinned).moves.isEmpty)
        // h3 takes no guests: its guest leaves, nothing arrives on it.
        let draining = [Self.guest("a", on: "h3"), Self.guest("b", on: "h2")]
        #expect(
            ClusterConsolidation.plan(hosts: hosts, guests: draining).moves == [.init(guest: "a", from: "h3", to: "h2")]
        )
        // The same rules on the greedy path (more hosts than the exhaustive search takes).
        let many = hosts + (4..<10).map { Self.host("h\($0)") }
        #expect(
            ClusterConsolidation.plan(hosts: many, guests: pinned).moves == [.init(guest: "b", from: "h2", to: "h1")])
        #expect(ClusterConsolidation.plan(hosts: many, guests: kvm).moves == [.init(guest: "b", from: "h2", to: "h1")])
        #expect(ClusterConsolidation.plan(hosts: many, guests: bothPinned).moves.isEmpty)
    }

    @Test func theLowerBound() {
        let hosts = (0..<10).map { Self.host("h\($0)") }
        let guests = (0..<7).map { Self.guest("g\($0)", on: "h\($0)", size: 3) }  // 21 of 10 a host
        #expect(ClusterConsolidation.lowerBound(hosts: hosts, guests: guests) == 3)
        #expect(ClusterConsolidation.lowerBound(hosts: hosts, guests: guests, headroom: 0.5) == 5)
        #expect(ClusterConsolidation.lowerBound(hosts: hosts, guests: []) == 0)
        // Mixed: the largest first (20 + 10 ≥ 21).
        let mixed = [Self.host("big", size: 20)] + hosts
        #expect(ClusterConsolidation.lowerBound(hosts: mixed, guests: guests) == 2)
        // Memory decides when it is the tighter dimension.
        let memory = [
            ClusterGuest(id: "m", host: "h0", resources: Resources(vcpus: 1, memoryBytes: 25 << 30, diskBytes: 0))
        ]
        #expect(ClusterConsolidation.lowerBound(hosts: hosts, guests: memory) == 3)
    }

    /// Random clusters of up to 6 hosts and 8 guests (sizes 1–6 of 10, KVM, pinned guests, hosts
    /// taking no guests, headroom 0–30%): the plan frees as many hosts as the best placement a
    /// brute force finds, with at most one migration more.
    @Test(arguments: [UInt64(1), 2, 3, 4])
    func smallClustersMatchTheBruteForce(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        var freedSome = 0
        for round in 0..<150 {
            let large = round % 10 == 0
            let (hosts, guests) = Self.randomCluster(
                &random, hosts: large ? 6 : Int.random(in: 1...5, using: &random),
                guests: large ? 8 : Int.random(in: 0...6, using: &random), sizes: 1...6)
            let headroom = [0, 0.1, 0.3].randomElement(using: &random)!
            let plan = ClusterConsolidation.plan(hosts: hosts, guests: guests, headroom: headroom)
            Self.check(plan, hosts: hosts, guests: guests, headroom: headroom)
            let best = ConsolidationOracle.best(hosts: hosts, guests: guests, headroom: headroom)
            #expect(plan.hostsFreed == best.freed, "\(hosts) \(guests) \(headroom): \(plan)")
            #expect(plan.moves.count <= best.moves + 1, "\(guests): \(plan)")
            if best.freed > 0 { freedSome += 1 }
        }
        #expect(freedSome > 30, "too few clusters with a host to free (\(freedSome)) to mean much")
    }

    /// Clusters beyond the exhaustive search (greedy best fit): the promises hold, the hosts used
    /// never fall below the lower bound, and on uniform clusters (every host takes every guest)
    /// they exceed it by at most one host or 10%, whichever is more.
    @Test(arguments: [UInt64(5), 6, 7])
    func largerClustersKeepThePromises(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        for _ in 0..<20 {
            let (hosts, guests) = Self.randomCluster(&random, hosts: 30, guests: 120, sizes: 1...2)
            let plan = ClusterConsolidation.plan(hosts: hosts, guests: guests, headroom: 0)
            Self.check(plan, hosts: hosts, guests: guests, headroom: 0)
            let bound = ClusterConsolidation.lowerBound(hosts: hosts, guests: guests)
            #expect(plan.hostsUsedAfter >= bound)
            let uniform = hosts.map { ClusterHost(id: $0.id, capacity: $0.capacity, runsKVM: true) }
            let simple = guests.map { ClusterGuest(id: $0.id, host: $0.host, resources: $0.resources) }
            let packed = ClusterConsolidation.plan(hosts: uniform, guests: simple, headroom: 0)
            Self.check(packed, hosts: uniform, guests: simple, headroom: 0)
            let simpleBound = ClusterConsolidation.lowerBound(hosts: uniform, guests: simple)
            #expect(
                Double(packed.hostsUsedAfter) <= max(Double(simpleBound + 1), Double(simpleBound) * 1.1), "\(packed)")
        }
    }

    static func randomCluster(
        _ random: inout SplitMix64, hosts count: Int, guests guestCount: Int, sizes: ClosedRange<Int>
    )
        -> ([ClusterHost], [ClusterGuest])
    {
        let hosts = (0..<count).map { index in
            Self.host(
                "h\(index)", kvm: Int.random(in: 0..<3, using: &random) > 0,
                takes: Int.random(in: 0..<6, using: &random) > 0)
        }
        var used = [Int](repeating: 0, count: count)
        var guests: [ClusterGuest] = []
        for index in 0..<guestCount {
            let size = Int.random(in: sizes, using: &random)
            let place = Int.random(in: 0..<count, using: &random)
            guard used[place] + size <= 10 else { continue }
            used[place] += size
            let kvm = hosts[place].runsKVM && Int.random(in: 0..<4, using: &random) == 0
            guests.append(
                Self.guest(
                    "g\(index)", on: "h\(place)", size: size, kvm: kvm,
                    movable: Int.random(in: 0..<8, using: &random) > 0))
        }
        return (hosts, guests)
    }

    /// Replays `plan` and checks the rules: moves of movable guests off emptied hosts onto hosts
    /// that take them (KVM) and keep them, within capacity less the headroom; the counts right.
    static func check(
        _ plan: ClusterConsolidationPlan, hosts: [ClusterHost], guests: [ClusterGuest], headroom: Double,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        let hostByID = Dictionary(uniqueKeysWithValues: hosts.map { ($0.id, $0) })
        var place = Dictionary(uniqueKeysWithValues: guests.map { ($0.id, $0.host) })
        let byID = Dictionary(uniqueKeysWithValues: guests.map { ($0.id, $0) })
        #expect(Set(plan.moves.map(\.guest)).count == plan.moves.count, sourceLocation: sourceLocation)
        for move in plan.moves {
            let guest = byID[move.guest]!
            let destination = hostByID[move.to]!
            #expect(guest.movable && guest.host == move.from && destination.takesGuests, sourceLocation: sourceLocation)
            #expect(destination.runsKVM || !guest.needsKVM, sourceLocation: sourceLocation)
            place[move.guest] = move.to
        }
        let before = Set(guests.map(\.host))
        let after = Set(place.values)
        let sources = Set(plan.moves.map(\.from))
        #expect(sources.isDisjoint(with: after), "a source keeps guests: \(plan)", sourceLocation: sourceLocation)
        #expect(Set(plan.emptied) == before.subtracting(after) && plan.emptied.count == sources.count)
        #expect(
            plan.hostsUsedBefore == before.count && plan.hostsUsedAfter == after.count, sourceLocation: sourceLocation)
        for destination in Set(plan.moves.map(\.to)) {
            let capacity = hostByID[destination]!.capacity
            let held = guests.filter { place[$0.id] == destination }.reduce(Resources.zero) { $0 + $1.resources }
            let keep = 1 - headroom
            #expect(
                Double(held.vcpus) <= Double(capacity.vcpus) * keep + 1e-9
                    && Double(held.memoryBytes) <= Double(capacity.memoryBytes) * keep + 1,
                "\(destination) holds \(held)", sourceLocation: sourceLocation)
        }
    }
}

/// Every placement of every guest (stay, or any host) under the rules, depth first: the most
/// hosts freed, and for that the fewest moves. Pruned only where a rule is broken for good: a
/// receiving host over its limit, a host both left and held.
struct ConsolidationOracle {
    let hosts: [ClusterHost]
    let guests: [ClusterGuest]
    let home: [Int]
    let keep: Double
    var held: [Resources]
    var placed: [Int]
    var left: [Int]
    var received: [Int]
    var best = (freed: 0, moves: 0)

    static func best(hosts: [ClusterHost], guests: [ClusterGuest], headroom: Double) -> (freed: Int, moves: Int) {
        let home = guests.map { guest in hosts.firstIndex { $0.id == guest.host }! }
        var oracle = ConsolidationOracle(
            hosts: hosts, guests: guests, home: home, keep: 1 - headroom,
            held: Array(repeating: .zero, count: hosts.count), placed: Array(repeating: 0, count: hosts.count),
            left: Array(repeating: 0, count: hosts.count), received: Array(repeating: 0, count: hosts.count))
        oracle.visit(0, moves: 0)
        return oracle.best
    }

    mutating func visit(_ index: Int, moves: Int) {
        guard index < guests.count else {
            let freed = Set(home).count - placed.count { $0 > 0 }
            if freed > best.freed || (freed == best.freed && moves < best.moves) { best = (freed, moves) }
            return
        }
        let guest = guests[index]
        for host in [home[index]] + hosts.indices.filter({ $0 != home[index] }) {
            let moving = host != home[index]
            if moving {
                guard guest.movable, hosts[host].takesGuests, hosts[host].runsKVM || !guest.needsKVM else { continue }
            }
            held[host] = held[host] + guest.resources
            placed[host] += 1
            if moving {
                left[home[index]] += 1
                received[host] += 1
            }
            if fine(host), !moving || fine(home[index]) { visit(index + 1, moves: moves + (moving ? 1 : 0)) }
            held[host] = held[host] - guest.resources
            placed[host] -= 1
            if moving {
                left[home[index]] -= 1
                received[host] -= 1
            }
        }
    }

    /// No rule broken for good on `host`: not both left and held, within its limit if it receives.
    func fine(_ host: Int) -> Bool {
        if left[host] > 0 && placed[host] > 0 { return false }
        guard received[host] > 0 else { return true }
        let capacity = hosts[host].capacity
        return Double(held[host].vcpus) <= Double(capacity.vcpus) * keep
            && Double(held[host].memoryBytes) <= Double(capacity.memoryBytes) * keep
            && Double(held[host].diskBytes) <= Double(capacity.diskBytes) * keep
    }
}
