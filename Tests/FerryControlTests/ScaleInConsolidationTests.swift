import FerryControl
import FerryTestSupport
import Testing

struct ScaleInConsolidationTests {
    static let unit = Resources(vcpus: 1, memoryBytes: 1024, diskBytes: 10)

    static func member(_ id: String, on host: String, loaded: Bool = false, size: Resources = unit)
        -> ConsolidationMember
    {
        ConsolidationMember(id: id, host: host, resources: size, loaded: loaded)
    }

    static func host(_ id: String, room: Int = 4, accepts: Bool = true, pinned: Bool = false) -> ConsolidationHost {
        ConsolidationHost(
            id: id, free: Resources(vcpus: room, memoryBytes: 1024 * room, diskBytes: 10 * room), accepts: accepts,
            pinned: pinned)
    }

    /// Issue 17's case: the policy (newest first) takes the loaded member alone on h2; an idle one
    /// on h1 goes instead and the loaded one moves to h1, which empties h2.
    @Test func aLoadedMemberAloneOnAHostMovesAndAnIdleOneGoes() {
        let members = [
            Self.member("c", on: "h2", loaded: true), Self.member("b", on: "h1"), Self.member("a", on: "h1"),
        ]
        let hosts = [Self.host("h1", room: 1), Self.host("h2")]
        let plan = ScaleInConsolidation.plan(members: members, count: 1, hosts: hosts)
        #expect(plan == ScaleInPlan(remove: ["b"], moves: [.init(member: "c", from: "h2", to: "h1")], emptied: ["h2"]))
        Self.checkInvariants(plan, members: members, count: 1, hosts: hosts)
    }

    /// Emptying h1 (moving an idle member to h2) would take one move too; the members gather where
    /// most of them were, so the lone h2 is emptied, whichever host names come first.
    @Test func theHostWithFewerMembersIsEmptied() {
        for (lone, other) in [("h1", "h2"), ("h2", "h1")] {
            let members = [
                Self.member("c", on: lone, loaded: true), Self.member("b", on: other), Self.member("a", on: other),
            ]
            let plan = ScaleInConsolidation.plan(members: members, count: 1, hosts: [Self.host("h1"), Self.host("h2")])
            #expect(plan.emptied == [lone] && plan.moves.map(\.member) == ["c"] && plan.remove == ["b"], "\(plan)")
        }
    }

    @Test func anIdleMemberAloneOnAHostIsRemovedWithoutMoves() {
        // The policy would take b (on h1); c, alone on h2, goes instead: h2 empties with no move.
        let members = [Self.member("b", on: "h1"), Self.member("c", on: "h2"), Self.member("a", on: "h1")]
        let plan = ScaleInConsolidation.plan(members: members, count: 1, hosts: [Self.host("h1"), Self.host("h2")])
        #expect(plan == ScaleInPlan(remove: ["c"], moves: [], emptied: ["h2"]))
    }

    /// No room on h1 for the loaded member: h1 is emptied the other way (its idle member moves to
    /// h2); with no room anywhere nothing moves and an idle member goes.
    @Test func withoutRoomTheLoadedMemberStaysAndAnIdleOneGoes() {
        let members = [
            Self.member("c", on: "h2", loaded: true), Self.member("b", on: "h1"), Self.member("a", on: "h1"),
        ]
        let noRoom = [Self.host("h1", room: 0), Self.host("h2")]
        #expect(
            ScaleInConsolidation.plan(members: members, count: 1, hosts: noRoom)
                == ScaleInPlan(remove: ["b"], moves: [.init(member: "a", from: "h1", to: "h2")], emptied: ["h1"]))
        let full = [Self.host("h1", room: 0), Self.host("h2", room: 0)]
        #expect(
            ScaleInConsolidation.plan(members: members, count: 1, hosts: full)
                == ScaleInPlan(remove: ["b"], moves: [], emptied: []))
    }

    @Test func aHostThatTakesNoGuestsOrIsPinnedIsNoDestinationOrSource() {
        let members = [
            Self.member("c", on: "h2", loaded: true), Self.member("b", on: "h1"), Self.member("a", on: "h1"),
        ]
        let refusing = ScaleInConsolidation.plan(
            members: members, count: 1, hosts: [Self.host("h1", accepts: false), Self.host("h2")])
        #expect(refusing.moves == [.init(member: "a", from: "h1", to: "h2")] && refusing.remove == ["b"])
        let neither = ScaleInConsolidation.plan(
            members: members, count: 1, hosts: [Self.host("h1", accepts: false), Self.host("h2", accepts: false)])
        #expect(neither.moves.isEmpty && neither.remove == ["b"])
        let pinned = ScaleInConsolidation.plan(
            members: members, count: 1, hosts: [Self.host("h1"), Self.host("h2", pinned: true)])
        #expect(pinned.moves == [.init(member: "a", from: "h1", to: "h2")] && pinned.emptied == ["h1"])
        let bothPinned = ScaleInConsolidation.plan(
            members: members, count: 1, hosts: [Self.host("h1", pinned: true), Self.host("h2", pinned: true)])
        #expect(bothPinned.moves.isEmpty && bothPinned.emptied.isEmpty && bothPinned.remove == ["b"])
    }

    @Test func onlyLoadedMembersLeftTheLoadedOnesGoInThePolicysOrder() {
        let members = [Self.member("c", on: "h1", loaded: true), Self.member("b", on: "h1", loaded: true)]
        let plan = ScaleInConsolidation.plan(members: members, count: 1, hosts: [Self.host("h1")])
        #expect(plan == ScaleInPlan(remove: ["c"], moves: [], emptied: []))
        #expect(ScaleInConsolidation.isLoaded(61, level: 60))
        #expect(!ScaleInConsolidation.isLoaded(60, level: 60))
        #expect(!ScaleInConsolidation.isLoaded(nil, level: 60))
    }

    /// Random small groups of one size: the plan keeps its promises, and no plan a brute force
    /// finds (every set of removals, every destination of every other member) removes fewer loaded
    /// members, empties more hosts, or as many with fewer moves.
    @Test(arguments: [1, 2, 3, 4])
    func randomGroupsMatchTheBruteForce(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        for _ in 0..<1_000 {
            let (members, hosts) = Self.randomGroup(&random, mixedSizes: false)
            let count = Int.random(in: 0...members.count, using: &random)
            let plan = ScaleInConsolidation.plan(members: members, count: count, hosts: hosts)
            Self.checkInvariants(plan, members: members, count: count, hosts: hosts)
            let best = Self.bruteForce(members: members, count: count, hosts: hosts)
            #expect(Self.score(plan, members) == best, "\(members) \(hosts) count \(count): \(plan)")
        }
    }

    /// Random groups of mixed sizes, and more hosts than the exhaustive search takes: the
    /// promises hold.
    @Test(arguments: [5, 6])
    func randomMixedAndLargeGroupsKeepThePromises(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        for round in 0..<1_000 {
            let large = round % 10 == 0
            let (members, hosts) = Self.randomGroup(&random, mixedSizes: true, large: large)
            let count = Int.random(in: 0...members.count, using: &random)
            let plan = ScaleInConsolidation.plan(members: members, count: count, hosts: hosts)
            Self.checkInvariants(plan, members: members, count: count, hosts: hosts)
        }
    }

    static func randomGroup(_ random: inout SplitMix64, mixedSizes: Bool, large: Bool = false)
        -> ([ConsolidationMember], [ConsolidationHost])
    {
        let hostCount = large ? Int.random(in: 13...16, using: &random) : Int.random(in: 1...3, using: &random)
        let hosts = (0..<hostCount).map { index in
            let room = Int.random(in: 0...3, using: &random)
            return ConsolidationHost(
                id: "h\(index)", free: Resources(vcpus: room, memoryBytes: 1024 * room, diskBytes: 10 * room),
                accepts: Int.random(in: 0..<5, using: &random) > 0, pinned: Int.random(in: 0..<8, using: &random) == 0)
        }
        let memberCount = large ? Int.random(in: 10...24, using: &random) : Int.random(in: 1...5, using: &random)
        let members = (0..<memberCount).map { index in
            let size = mixedSizes ? Int.random(in: 1...2, using: &random) : 1
            return ConsolidationMember(
                id: "m\(index)", host: "h\(Int.random(in: 0..<hostCount, using: &random))",
                resources: Resources(vcpus: size, memoryBytes: 1024 * size, diskBytes: 10 * size),
                loaded: Bool.random(using: &random))
        }
        return (members, hosts)
    }

    /// (loaded members removed, hosts emptied, moves): lower, higher, lower is better.
    struct Score: Equatable, CustomStringConvertible {
        var loadedRemoved: Int
        var emptied: Int
        var moves: Int

        func better(than other: Score) -> Bool {
            if loadedRemoved != other.loadedRemoved { return loadedRemoved < other.loadedRemoved }
            if emptied != other.emptied { return emptied > other.emptied }
            return moves < other.moves
        }

        var description: String { "loaded removed \(loadedRemoved), emptied \(emptied), moves \(moves)" }
    }

    static func score(_ plan: ScaleInPlan, _ members: [ConsolidationMember]) -> Score {
        let loaded = Set(members.filter(\.loaded).map(\.id))
        return Score(
            loadedRemoved: plan.remove.count { loaded.contains($0) }, emptied: plan.emptied.count,
            moves: plan.moves.count)
    }

    /// Every removal set of `count`, every place (stay, or any host that keeps members and has room)
    /// for each other member, under the plan's rules (a move only off an emptied host, no host both
    /// source and destination, room as it is now): the best score.
    static func bruteForce(members: [ConsolidationMember], count: Int, hosts: [ConsolidationHost]) -> Score {
        let byID = Dictionary(uniqueKeysWithValues: hosts.map { ($0.id, $0) })
        let held = Set(members.map(\.host))
        var best: Score?
        for mask in 0..<(1 << members.count) where mask.nonzeroBitCount == count {
            let kept = members.indices.filter { mask & (1 << $0) == 0 }.map { members[$0] }
            let loadedRemoved = members.indices.count { mask & (1 << $0) != 0 && members[$0].loaded }
            let places = [""] + held.sorted()  // "" stays
            var choice = [Int](repeating: 0, count: kept.count)
            while true {
                if let score = Self.scoreOf(kept, choice.map { places[$0] }, byID, held, loadedRemoved),
                    best.map({ score.better(than: $0) }) ?? true
                {
                    best = score
                }
                var digit = 0
                while digit < choice.count, choice[digit] == places.count - 1 {
                    choice[digit] = 0
                    digit += 1
                }
                if digit == choice.count { break }
                choice[digit] += 1
            }
        }
        return best!
    }

    static func scoreOf(
        _ kept: [ConsolidationMember], _ places: [String], _ hosts: [String: ConsolidationHost], _ held: Set<String>,
        _ loadedRemoved: Int
    ) -> Score? {
        var free = hosts.mapValues(\.free)
        var after = Set(hosts.values.filter { $0.pinned && held.contains($0.id) }.map(\.id))
        var (sources, destinations, moves) = (Set<String>(), Set<String>(), 0)
        for (member, place) in zip(kept, places) {
            if place.isEmpty || place == member.host {
                if !place.isEmpty { return nil }  // one way to stay
                after.insert(member.host)
                continue
            }
            guard let host = hosts[place], host.accepts, free[place]!.fits(member.resources) else { return nil }
            free[place] = free[place]! - member.resources
            sources.insert(member.host)
            destinations.insert(place)
            after.insert(place)
            moves += 1
        }
        guard sources.isDisjoint(with: destinations), sources.isDisjoint(with: after) else { return nil }
        // A destination keeps a member of its own (or holds none before): it must have held one.
        guard destinations.isSubset(of: held) else { return nil }
        return Score(loadedRemoved: loadedRemoved, emptied: held.subtracting(after).count, moves: moves)
    }

    /// What the plan promises, checked by replaying it.
    static func checkInvariants(
        _ plan: ScaleInPlan, members: [ConsolidationMember], count: Int, hosts: [ConsolidationHost],
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        let byID = Dictionary(uniqueKeysWithValues: members.map { ($0.id, $0) })
        let hostByID = Dictionary(uniqueKeysWithValues: hosts.map { ($0.id, $0) })
        let removed = Set(plan.remove)
        #expect(removed.count == plan.remove.count && plan.remove.count == count, sourceLocation: sourceLocation)
        // Never a loaded member removed while an idle one is kept.
        let idleKept = members.contains { !$0.loaded && !removed.contains($0.id) }
        let loadedRemoved = plan.remove.contains { byID[$0]!.loaded }
        #expect(!(idleKept && loadedRemoved), "\(plan)", sourceLocation: sourceLocation)
        var free = hostByID.mapValues(\.free)
        var place = byID.mapValues(\.host)
        for move in plan.moves {
            let member = byID[move.member]!
            #expect(!removed.contains(move.member) && member.host == move.from, sourceLocation: sourceLocation)
            let destination = hostByID[move.to]
            #expect(destination?.accepts == true, "\(move) onto a host that takes no guests")
            free[move.to] = (free[move.to] ?? .zero) - member.resources
            #expect(free[move.to]!.isNonNegative, "\(move) overfills \(move.to)", sourceLocation: sourceLocation)
            place[move.member] = move.to
        }
        #expect(Set(plan.moves.map(\.member)).count == plan.moves.count, sourceLocation: sourceLocation)
        #expect(Set(plan.moves.map(\.from)).isDisjoint(with: plan.moves.map(\.to)), sourceLocation: sourceLocation)
        // The hosts that hold members afterwards; each move's source is emptied, pinned hosts are not.
        var after = Set(members.filter { !removed.contains($0.id) }.map { place[$0.id]! })
        let held = Set(members.map(\.host))
        after.formUnion(hosts.filter { $0.pinned && held.contains($0.id) }.map(\.id))
        let emptied = Set(members.map(\.host)).subtracting(after)
        #expect(Set(plan.emptied) == emptied && plan.emptied == plan.emptied.sorted(), sourceLocation: sourceLocation)
        #expect(Set(plan.moves.map(\.from)).isSubset(of: emptied), "\(plan)", sourceLocation: sourceLocation)
    }
}
