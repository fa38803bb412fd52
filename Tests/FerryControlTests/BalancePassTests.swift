import FerryControl
import FerryTestSupport
import Testing

/// Balancing passes: hand cases, then passes over random clusters replayed and checked, and the
/// first move of a pass against a brute force over every single move.
@Suite struct BalancePassTests {
    static let gib = 1 << 30
    /// 1 Gbit/s: 4 GiB goes in about 34 s.
    static let model = MigrationCostModel(linkBytesPerSecond: 125_000_000)

    static func host(_ id: String, vcpus: Int = 16, kvm: Bool = false, takes: Bool = true) -> ClusterHost {
        ClusterHost(
            id: id, capacity: Resources(vcpus: vcpus, memoryBytes: vcpus * 4 * gib, diskBytes: vcpus * 40 * gib),
            takesGuests: takes, runsKVM: kvm)
    }

    static func guest(
        _ id: String, on host: String, load: Double, vcpus: Int = 4, memoryGiB: Int = 2, dirty: Double = 1e6,
        kvm: Bool = false, movable: Bool = true, since: Double? = nil
    ) -> BalanceGuest {
        BalanceGuest(
            id: id, host: host, resources: Resources(vcpus: vcpus, memoryBytes: memoryGiB * gib, diskBytes: 10 * gib),
            load: load, needsKVM: kvm,
            profile: MigrationProfile(memoryBytes: Int64(memoryGiB * gib), dirtyBytesPerSecond: dirty),
            movable: movable, secondsSinceLastMove: since)
    }

    static func parameters(allowed: Int = 100, coolDown: Double = 3600) -> BalanceParameters {
        BalanceParameters(
            highThreshold: 0.8, target: 0.65, margin: 0.05, movesAllowed: allowed, coolDownSeconds: coolDown,
            minimumBenefitPerSecond: 0.0001, costModel: model)
    }

    /// A hot host (14 of 16 vCPUs busy) and a cold one (2): the busiest guest that the cold host
    /// can take below 60% goes, the cheaper of two equal ones first; then the hot host is under
    /// the threshold and the pass stops.
    @Test func aHotHostGivesItsBestGuestToACoolOne() {
        let hosts = [Self.host("a"), Self.host("b")]
        let guests = [
            Self.guest("g1", on: "a", load: 4, memoryGiB: 4), Self.guest("g2", on: "a", load: 4, memoryGiB: 2),
            Self.guest("g3", on: "a", load: 4, memoryGiB: 2, dirty: 1e9), Self.guest("g4", on: "a", load: 2),
            Self.guest("g5", on: "b", load: 2),
        ]
        let plan = BalancePass.plan(hosts: hosts, guests: guests, parameters: Self.parameters())
        #expect(plan.moves.map(\.guest) == ["g2"], "\(plan.moves)")
        let move = plan.moves[0]
        #expect(move.from == "a" && move.to == "b" && move.fromLoadAfter == 10.0 / 16 && move.toLoadAfter == 6.0 / 16)
        #expect(move.benefit == 8.0 / 16 && move.costSeconds == Self.model.estimate(guests[1].profile).seconds)
        #expect(plan.spreadBefore == 6.0 / 16 && plan.spreadAfter == 2.0 / 16)
    }

    /// The hysteresis: a host just below the threshold gives nothing; a destination that would
    /// reach `target − margin` takes nothing; a move of less than the margin is not made.
    @Test func hostsNearTheLinesAreLeftAlone() {
        let belowThreshold = [Self.guest("g1", on: "a", load: 12.8), Self.guest("g2", on: "b", load: 0)]
        #expect(
            BalancePass.plan(
                hosts: [Self.host("a"), Self.host("b")], guests: belowThreshold, parameters: Self.parameters()
            )
            .moves.isEmpty)
        // b at 5.8 of 16 + 4: over 60%.
        let fullDestination = [
            Self.guest("g1", on: "a", load: 4), Self.guest("g2", on: "a", load: 10),
            Self.guest("g3", on: "b", load: 5.8),
        ]
        #expect(
            BalancePass.plan(
                hosts: [Self.host("a"), Self.host("b")], guests: fullDestination, parameters: Self.parameters()
            )
            .moves.map(\.guest) == [])
        // Guests of 0.3 vCPU bring two 16-vCPU hosts 0.0375 closer: under the margin.
        let small = (0..<45).map { Self.guest("g\($0)", on: "a", load: 0.3, vcpus: 0, memoryGiB: 0) }
        #expect(
            BalancePass.plan(hosts: [Self.host("a"), Self.host("b")], guests: small, parameters: Self.parameters())
                .moves.isEmpty)
    }

    /// The cap, the cool-down, a guest that may not move, one that would not converge, KVM, room.
    @Test func theCapCoolDownPolicyConvergenceKVMAndRoomHold() {
        let noMemory = ClusterHost(id: "c", capacity: Resources(vcpus: 16, memoryBytes: Self.gib, diskBytes: 1 << 40))
        let hosts = [Self.host("a", kvm: true), Self.host("b"), noMemory, Self.host("d", takes: false)]
        let guests = [
            Self.guest("cooling", on: "a", load: 3, vcpus: 2, since: 600),
            Self.guest("pinned", on: "a", load: 3, vcpus: 2, movable: false),
            Self.guest("racing", on: "a", load: 3, vcpus: 2, dirty: 2e8),
            Self.guest("kvm", on: "a", load: 3, vcpus: 2, kvm: true),
            Self.guest("free1", on: "a", load: 1, vcpus: 2, since: 3600),
            Self.guest("free2", on: "a", load: 1, vcpus: 2),
        ]
        let plan = BalancePass.plan(hosts: hosts, guests: guests, parameters: Self.parameters())
        #expect(Set(plan.moves.map(\.guest)) == ["free1", "free2"] && plan.moves.allSatisfy { $0.to == "b" })
        let capped = BalancePass.plan(hosts: hosts, guests: guests, parameters: Self.parameters(allowed: 1))
        #expect(capped.moves.count == 1)
        #expect(BalancePass.plan(hosts: hosts, guests: guests, parameters: Self.parameters(allowed: 0)).moves.isEmpty)
        let warm = BalancePass.plan(hosts: hosts, guests: guests, parameters: Self.parameters(coolDown: 0))
        #expect(warm.moves.map(\.guest) == ["cooling"])
        #expect(!Self.model.estimate(guests[2].profile).converges)
    }

    /// Ten passes five minutes apart over a cluster whose loads do not change, each pass's moves
    /// applied: the moves stop after the first passes and no guest returns to a host it left, with
    /// and without the cool-down; the hourly cap counts the moves of the passes before.
    @Test(arguments: [(seed: UInt64(1), coolDown: 3600.0), (2, 3600), (3, 0), (4, 0)])
    func tenPassesStopAndNeverPingPong(seed: UInt64, coolDown: Double) {
        var random = SplitMix64(seed: seed)
        var (hosts, guests) = Self.randomCluster(&random, hosts: 12, guests: 50)
        var left: Set<[String]> = []
        var perPass: [Int] = []
        let cap = 40
        for _ in 0..<10 {
            let allowed = cap - perPass.reduce(0, +)
            let plan = BalancePass.plan(
                hosts: hosts, guests: guests, parameters: Self.parameters(allowed: allowed, coolDown: coolDown))
            Self.check(plan, hosts: hosts, guests: guests, parameters: Self.parameters(allowed: allowed))
            perPass.append(plan.moves.count)
            for move in plan.moves {
                #expect(!left.contains([move.guest, move.to]), "\(move.guest) back to \(move.to): \(perPass)")
                left.insert([move.guest, move.from])
            }
            guests = Self.apply(plan.moves, to: guests, elapsed: 300)
            hosts.shuffle(using: &random)
        }
        #expect(perPass[0] > 0 && perPass.suffix(7).allSatisfy { $0 == 0 }, "moves per pass \(perPass)")
        #expect(perPass.reduce(0, +) < cap, "the cap, not the hysteresis, stopped the moves")
    }

    /// A pass over its own result, the cool-down off and no cap, chooses nothing.
    @Test(arguments: [UInt64(5), 6, 7, 8])
    func aPassOverItsOwnResultChoosesNothing(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        for _ in 0..<50 {
            let (hosts, guests) = Self.randomCluster(&random, hosts: 8, guests: 40, mixed: true)
            let parameters = Self.parameters(allowed: 1000, coolDown: 0)
            let plan = BalancePass.plan(hosts: hosts, guests: guests, parameters: parameters)
            let again = BalancePass.plan(
                hosts: hosts, guests: Self.apply(plan.moves, to: guests), parameters: parameters)
            #expect(again.moves.isEmpty, "\(plan.moves) then \(again.moves)")
        }
    }

    /// Random small clusters (hosts of mixed sizes, KVM, hosts taking no guests): the pass keeps
    /// its promises (room, KVM, the lines, the spread never rising, predictions equal to a replay),
    /// and its first move is the one a brute force over every guest and host ranks best.
    @Test(arguments: [UInt64(11), 12, 13, 14])
    func theFirstMoveIsTheBruteForcesBest(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        var (withMoves, total) = (0, 0)
        for _ in 0..<400 {
            let (hosts, guests) = Self.randomCluster(
                &random, hosts: Int.random(in: 2...5, using: &random), guests: Int.random(in: 2...12, using: &random),
                mixed: true)
            let parameters = Self.parameters(allowed: Int.random(in: 0...4, using: &random))
            let plan = BalancePass.plan(hosts: hosts, guests: guests, parameters: parameters)
            Self.check(plan, hosts: hosts, guests: guests, parameters: parameters)
            let legal = BalanceOracle.legalMoves(hosts: hosts, guests: guests, parameters: parameters)
            total += 1
            guard parameters.movesAllowed > 0 else { continue }
            guard let first = plan.moves.first else {
                #expect(legal.isEmpty, "no move chosen, but \(legal) are legal: \(guests)")
                continue
            }
            withMoves += 1
            let ratio = first.benefit / first.costSeconds
            let chosen = legal.first { $0.guest == first.guest && $0.to == first.to }
            #expect(chosen.map { abs($0.ratio - ratio) <= 1e-9 * ratio } == true, "\(first) is not legal: \(guests)")
            // Nothing legal ranks higher: a better ratio, or as good a ratio and a less loaded destination.
            let better = legal.filter { other in
                other.ratio > ratio * (1 + 1e-9)
                    || (other.ratio >= ratio * (1 - 1e-9) && other.toAfter < first.toLoadAfter - 1e-9)
            }
            #expect(better.isEmpty, "\(first) chosen, \(better) rank higher: \(guests)")
        }
        #expect(withMoves > total / 5, "too few clusters with a legal move (\(withMoves) of \(total)) to mean much")
    }

    /// A cluster of `hosts` hosts of 16 vCPUs (or mixed 8/16/32), a quarter of them hot.
    static func randomCluster(_ random: inout SplitMix64, hosts count: Int, guests guestCount: Int, mixed: Bool = false)
        -> ([ClusterHost], [BalanceGuest])
    {
        let hosts = (0..<count).map { index in
            Self.host(
                "h\(index)", vcpus: mixed ? (index == 0 ? [8, 16] : [8, 16, 32]).randomElement(using: &random)! : 16,
                kvm: Bool.random(using: &random), takes: Int.random(in: 0..<6, using: &random) > 0)
        }
        var used = [Int](repeating: 0, count: count)
        var guests: [BalanceGuest] = []
        for index in 0..<guestCount {
            let vcpus = [1, 2, 4].randomElement(using: &random)!
            let place = Bool.random(using: &random) ? 0 : Int.random(in: 0..<count, using: &random)
            guard used[place] + vcpus <= hosts[place].capacity.vcpus else { continue }
            used[place] += vcpus
            let hot = place % 4 == 0
            let load = Double(vcpus) * Double.random(in: hot ? 0.8...1 : 0...0.6, using: &random)
            guests.append(
                Self.guest(
                    "g\(index)", on: "h\(place)", load: load, vcpus: vcpus, memoryGiB: vcpus * 2,
                    dirty: Double.random(in: 0...150e6, using: &random),
                    kvm: Int.random(in: 0..<4, using: &random) == 0,
                    movable: Int.random(in: 0..<8, using: &random) > 0,
                    since: Bool.random(using: &random) ? nil : Double.random(in: 0...7200, using: &random)))
        }
        return (hosts, guests)
    }

    static func apply(_ moves: [BalanceMove], to guests: [BalanceGuest], elapsed: Double = 0) -> [BalanceGuest] {
        let destination = Dictionary(uniqueKeysWithValues: moves.map { ($0.guest, $0.to) })
        return guests.map { guest in
            var guest = guest
            if let to = destination[guest.id] {
                guest.host = to
                guest.secondsSinceLastMove = elapsed
            } else {
                guest.secondsSinceLastMove = guest.secondsSinceLastMove.map { $0 + elapsed }
            }
            return guest
        }
    }

    /// Replays `plan`: every move legal when it is made, the predictions right, the spread down.
    static func check(
        _ plan: BalancePlan, hosts: [ClusterHost], guests: [BalanceGuest], parameters: BalanceParameters,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        let hostByID = Dictionary(uniqueKeysWithValues: hosts.map { ($0.id, $0) })
        var current = guests
        #expect(plan.moves.count <= parameters.movesAllowed, sourceLocation: sourceLocation)
        #expect(Set(plan.moves.map(\.guest)).count == plan.moves.count, "a guest twice", sourceLocation: sourceLocation)
        var spread = BalancePass.spread(Array(BalancePass.loads(hosts: hosts, guests: current).values))
        #expect(abs(spread - plan.spreadBefore) < 1e-9, sourceLocation: sourceLocation)
        for move in plan.moves {
            let loads = BalancePass.loads(hosts: hosts, guests: current)
            let guest = current.first { $0.id == move.guest }!
            let destination = hostByID[move.to]!
            #expect(guest.host == move.from && guest.movable && destination.takesGuests, sourceLocation: sourceLocation)
            #expect(destination.runsKVM || !guest.needsKVM, sourceLocation: sourceLocation)
            #expect(loads[move.from]! > parameters.highThreshold, sourceLocation: sourceLocation)
            current = apply([move], to: current)
            let after = BalancePass.loads(hosts: hosts, guests: current)
            #expect(abs(after[move.from]! - move.fromLoadAfter) < 1e-9, sourceLocation: sourceLocation)
            #expect(abs(after[move.to]! - move.toLoadAfter) < 1e-9, sourceLocation: sourceLocation)
            #expect(move.toLoadAfter < parameters.target - parameters.margin, sourceLocation: sourceLocation)
            #expect(move.benefit > parameters.margin, sourceLocation: sourceLocation)
            let held = current.filter { $0.host == move.to }.reduce(Resources.zero) { $0 + $1.resources }
            #expect(destination.capacity.fits(held), "\(move) overfills \(move.to)", sourceLocation: sourceLocation)
            let next = BalancePass.spread(Array(after.values))
            #expect(next < spread + 1e-12, "\(move) raised the spread", sourceLocation: sourceLocation)
            spread = next
        }
        #expect(abs(spread - plan.spreadAfter) < 1e-9, sourceLocation: sourceLocation)
    }
}

/// Every single move of every guest to every host, judged by the rules from scratch.
enum BalanceOracle {
    struct Move: CustomStringConvertible {
        var guest: String
        var to: String
        var ratio: Double
        var toAfter: Double
        var description: String { "\(guest) → \(to) (\(ratio), \(toAfter))" }
    }

    static func legalMoves(hosts: [ClusterHost], guests: [BalanceGuest], parameters: BalanceParameters) -> [Move] {
        let loads = BalancePass.loads(hosts: hosts, guests: guests)
        let spread = BalancePass.spread(Array(loads.values))
        var legal: [Move] = []
        for guest in guests {
            let estimate = parameters.costModel.estimate(guest.profile)
            guard let from = loads[guest.host], from > parameters.highThreshold, guest.movable, estimate.converges,
                (guest.secondsSinceLastMove ?? .infinity) >= parameters.coolDownSeconds
            else { continue }
            for host in hosts where host.id != guest.host && host.takesGuests && (host.runsKVM || !guest.needsKVM) {
                var moved = guests
                moved[moved.firstIndex { $0.id == guest.id }!].host = host.id
                let held = moved.filter { $0.host == host.id }.reduce(Resources.zero) { $0 + $1.resources }
                let after = BalancePass.loads(hosts: hosts, guests: moved)
                guard let to = loads[host.id], let toAfter = after[host.id], host.capacity.fits(held),
                    toAfter < parameters.target - parameters.margin
                else { continue }
                let benefit = (from - to) - abs(after[guest.host]! - toAfter)
                let ratio = benefit / estimate.seconds
                guard benefit > parameters.margin, ratio >= parameters.minimumBenefitPerSecond,
                    BalancePass.spread(Array(after.values)) < spread
                else { continue }
                legal.append(Move(guest: guest.id, to: host.id, ratio: ratio, toAfter: toAfter))
            }
        }
        return legal
    }
}
