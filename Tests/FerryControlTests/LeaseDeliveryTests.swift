import FerryControl
import FerryTestSupport
import Testing

struct LeaseDeliveryTests {
    static let unit = Resources(vcpus: 2, memoryBytes: 2048, diskBytes: 10)

    static func host(
        _ id: String, vcpus: Int = 8, memory: Int = 8192, held: Resources = .zero, takes: Bool = true,
        kvm: Bool = true, guests: [MovableGuest] = []
    ) -> DeliveryHost {
        DeliveryHost(
            id: id, capacity: Resources(vcpus: vcpus, memoryBytes: memory, diskBytes: 1000), held: held,
            takesGuests: takes, runsKVM: kvm, movable: guests)
    }

    static func guest(_ id: String, vcpus: Int = 2, memory: Int = 2048) -> MovableGuest {
        MovableGuest(id: id, resources: Resources(vcpus: vcpus, memoryBytes: memory, diskBytes: 10), needsKVM: false)
    }

    @Test func freeRoomIsUsedFirstWithoutMoves() {
        let hosts = [Self.host("h1", held: Self.unit), Self.host("h2")]
        let plan = LeaseDelivery.plan(unit: Self.unit, count: 4, needsKVM: false, hosts: hosts)
        #expect(plan == DeliveryPlan(slots: ["h2": 4], moves: [], short: 0))
    }

    @Test func onDemandGuestsMoveAwayToMakeTheLastUnit() {
        // Units of 4 vCPUs on hosts of 8; h1 and h2 each hold a guest of 2: four units are free,
        // a fifth once h1's guest joins h2's (beside h2's slot).
        let unit = Resources(vcpus: 4, memoryBytes: 4096, diskBytes: 10)
        let hosts = [
            Self.host("h1", held: Resources(vcpus: 2, memoryBytes: 2048, diskBytes: 10), guests: [Self.guest("g1")]),
            Self.host("h2", held: Resources(vcpus: 2, memoryBytes: 2048, diskBytes: 10), guests: [Self.guest("g2")]),
            Self.host("h3"),
        ]
        let plan = LeaseDelivery.plan(unit: unit, count: 5, needsKVM: false, hosts: hosts)
        #expect(plan.short == 0)
        #expect(plan.slots == ["h1": 2, "h2": 1, "h3": 2])
        #expect(plan.moves == [DeliveryMove(guest: "g1", from: "h1", to: "h2")])
        Self.checkInvariants(plan, hosts: hosts, unit: unit, count: 5, needsKVM: false)
    }

    @Test func unitsNoHostCanGiveAreShort() {
        let hosts = [Self.host("h1", vcpus: 4), Self.host("h2", takes: false)]
        let plan = LeaseDelivery.plan(unit: Self.unit, count: 3, needsKVM: false, hosts: hosts)
        #expect(plan.slots == ["h1": 2])
        #expect(plan.short == 1)
    }

    @Test func kvmLeasesUseOnlyKVMHosts() {
        let hosts = [Self.host("h1", kvm: false), Self.host("h2", vcpus: 4)]
        let plan = LeaseDelivery.plan(unit: Self.unit, count: 3, needsKVM: true, hosts: hosts)
        #expect(plan.slots == ["h2": 2])
        #expect(plan.short == 1)
    }

    /// Random small clusters: the plan's invariants hold, and its shortcomings are real ones.
    @Test(arguments: [1, 2, 3, 4])
    func randomClustersKeepTheInvariants(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        for _ in 0..<2_000 {
            let unit = Resources(
                vcpus: Int.random(in: 1...3, using: &random), memoryBytes: 1024 * Int.random(in: 1...3, using: &random),
                diskBytes: 10)
            let hosts = Self.randomHosts(&random)
            let count = Int.random(in: 1...12, using: &random)
            let needsKVM = Bool.random(using: &random)
            let plan = LeaseDelivery.plan(unit: unit, count: count, needsKVM: needsKVM, hosts: hosts)
            Self.checkInvariants(plan, hosts: hosts, unit: unit, count: count, needsKVM: needsKVM)
        }
    }

    static func randomHosts(_ random: inout SplitMix64) -> [DeliveryHost] {
        (0..<Int.random(in: 1...5, using: &random)).map { index in
            let capacity = Resources(
                vcpus: Int.random(in: 2...12, using: &random),
                memoryBytes: 1024 * Int.random(in: 2...12, using: &random), diskBytes: 1000)
            var held = Resources.zero
            var guests: [MovableGuest] = []
            for number in 0..<Int.random(in: 0...4, using: &random) {
                let size = Resources(
                    vcpus: Int.random(in: 1...3, using: &random),
                    memoryBytes: 1024 * Int.random(in: 1...3, using: &random), diskBytes: 10)
                guard (capacity - held).fits(size) else { break }
                held = held + size
                guests.append(
                    MovableGuest(id: "g\(index).\(number)", resources: size, needsKVM: Bool.random(using: &random)))
            }
            return DeliveryHost(
                id: "h\(index)", capacity: capacity, held: held, takesGuests: Int.random(in: 0..<5, using: &random) > 0,
                runsKVM: Bool.random(using: &random), movable: guests)
        }
    }

    static func freeUnits(_ room: Resources, _ unit: Resources) -> Int {
        guard room.isNonNegative else { return 0 }
        return min(room.vcpus / unit.vcpus, room.memoryBytes / unit.memoryBytes, room.diskBytes / unit.diskBytes)
    }

    /// What the plan promises, checked by replaying it on the hosts.
    static func checkInvariants(
        _ plan: DeliveryPlan, hosts: [DeliveryHost], unit: Resources, count: Int, needsKVM: Bool,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        #expect(plan.slots.values.reduce(0, +) + plan.short == count, sourceLocation: sourceLocation)
        var held = Dictionary(uniqueKeysWithValues: hosts.map { ($0.id, $0.held) })
        let byID = Dictionary(uniqueKeysWithValues: hosts.map { ($0.id, $0) })
        var moved: Set<String> = []
        for move in plan.moves {
            let from = byID[move.from]!
            let to = byID[move.to]!
            let guest = from.movable.first { $0.id == move.guest }
            #expect(guest != nil, "\(move) moves a guest its source does not hold", sourceLocation: sourceLocation)
            guard let guest else { return }
            #expect(moved.insert(guest.id).inserted, sourceLocation: sourceLocation)
            #expect(to.takesGuests && (to.runsKVM || !guest.needsKVM), sourceLocation: sourceLocation)
            held[from.id] = held[from.id]! - guest.resources
            held[to.id] = held[to.id]! + guest.resources
            #expect((to.capacity - held[to.id]!).isNonNegative, "\(move) overfills", sourceLocation: sourceLocation)
        }
        let sources = Set(plan.moves.map(\.from))
        #expect(sources.isDisjoint(with: plan.moves.map(\.to)), sourceLocation: sourceLocation)
        for (id, slots) in plan.slots {
            let host = byID[id]!
            #expect(host.takesGuests && (host.runsKVM || !needsKVM), sourceLocation: sourceLocation)
            var after = held[id]!
            for _ in 0..<slots { after = after + unit }
            #expect((host.capacity - after).isNonNegative, "\(id) overbooked: \(plan)", sourceLocation: sourceLocation)
        }
        // Free room alone was enough: no guest moves.
        let eligible = hosts.filter { $0.takesGuests && ($0.runsKVM || !needsKVM) }
        let free = eligible.map { Self.freeUnits($0.capacity - $0.held, unit) }.reduce(0, +)
        if free >= count { #expect(plan.moves.isEmpty && plan.short == 0, sourceLocation: sourceLocation) }
        // Short only after every free unit was used.
        if plan.short > 0 {
            #expect(plan.slots.values.reduce(0, +) >= min(count, free), sourceLocation: sourceLocation)
        }
    }
}
