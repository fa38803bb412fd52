import FerryControl
import FerryTestSupport
import Testing

/// The scheduler against a brute-force oracle written apart from it: every host that takes
/// guests, has KVM if the request needs it, and fits, sorted by the policy's order in full, the
/// first one.
@Suite struct PlacementTests {
    static func oracle(_ request: PlacementRequest, _ hosts: [PlacementCandidate], _ policy: PlacementPolicy)
        -> String?
    {
        let wanted = request.resources
        let fitting = hosts.filter { host in
            host.takesGuests && (host.runsKVM || !request.needsKVM) && host.free.vcpus >= wanted.vcpus
                && host.free.memoryBytes >= wanted.memoryBytes && host.free.diskBytes >= wanted.diskBytes
        }
        let sorted = fitting.sorted { a, b in
            let keyA = (a.free.memoryBytes, a.free.vcpus, a.free.diskBytes)
            let keyB = (b.free.memoryBytes, b.free.vcpus, b.free.diskBytes)
            if keyA != keyB { return policy == .spread ? keyA > keyB : keyA < keyB }
            return a.hostID < b.hostID
        }
        return sorted.first?.hostID
    }

    /// A random cluster: small ranges, so that ties and exact fits happen often.
    static func cluster(_ random: inout SplitMix64, hosts: Int) -> [PlacementCandidate] {
        (0..<hosts).map { index in
            PlacementCandidate(
                hostID: "host-\(Int.random(in: 0..<1000, using: &random))-\(index)",
                takesGuests: Int.random(in: 0..<8, using: &random) != 0,
                free: Resources(
                    vcpus: Int.random(in: 0...8, using: &random),
                    memoryBytes: Int.random(in: 0...4, using: &random) << 30,
                    diskBytes: Int.random(in: 0...3, using: &random) << 30),
                runsKVM: Bool.random(using: &random))
        }
    }

    /// A random request, needing KVM one time in three.
    static func request(_ random: inout SplitMix64) -> PlacementRequest {
        PlacementRequest(
            Resources(
                vcpus: Int.random(in: 0...4, using: &random), memoryBytes: Int.random(in: 0...3, using: &random) << 30,
                diskBytes: Int.random(in: 0...2, using: &random) << 30),
            needsKVM: Int.random(in: 0..<3, using: &random) == 0)
    }

    @Test(arguments: PlacementPolicy.allCases)
    func agreesWithTheOracleOnRandomClusters(policy: PlacementPolicy) {
        let seed: UInt64 = 0x5EED_0016
        var random = SplitMix64(seed: seed)
        var placed = 0
        var placedWithKVM = 0
        for round in 0..<3000 {
            let hosts = Self.cluster(&random, hosts: Int.random(in: 0...12, using: &random))
            let request = Self.request(&random)
            let expected = Self.oracle(request, hosts, policy)
            let decision = Placement.choose(request, among: hosts, policy: policy)
            switch decision {
            case .host(let id):
                #expect(id == expected, "seed \(seed) round \(round): \(hosts) \(request)")
                #expect(!request.needsKVM || hosts.first { $0.hostID == id }?.runsKVM == true)
                placed += 1
                if request.needsKVM { placedWithKVM += 1 }
            case .none:
                #expect(expected == nil, "seed \(seed) round \(round): refused, oracle chose \(expected ?? "")")
            }
        }
        // Both outcomes were exercised, KVM requests placed among them.
        #expect(placed > 300 && placed < 2700, "placed \(placed) of 3000")
        #expect(placedWithKVM > 100, "placed \(placedWithKVM) requests needing KVM")
    }

    /// Placing one request after another on a cluster whose free capacity shrinks with each, as
    /// the store does: every step agrees with the oracle, and nothing is ever overcommitted.
    @Test(arguments: PlacementPolicy.allCases)
    func sequentialPlacementsAgreeAndNeverOvercommit(policy: PlacementPolicy) {
        var random = SplitMix64(seed: 0xC0FFEE)
        var hosts = Self.cluster(&random, hosts: 40)
        for _ in 0..<400 {
            let request = Self.request(&random)
            let expected = Self.oracle(request, hosts, policy)
            guard case .host(let id) = Placement.choose(request, among: hosts, policy: policy) else {
                #expect(expected == nil)
                continue
            }
            #expect(id == expected)
            let index = hosts.firstIndex { $0.hostID == id }!
            hosts[index].free = hosts[index].free - request.resources
            #expect(hosts[index].free.isNonNegative)
        }
    }

    @Test func spreadTakesTheEmptiestAndPackTheFullestThatFits() {
        let hosts = [
            PlacementCandidate(
                hostID: "a", takesGuests: true, free: Resources(vcpus: 8, memoryBytes: 16, diskBytes: 9)),
            PlacementCandidate(hostID: "b", takesGuests: true, free: Resources(vcpus: 2, memoryBytes: 4, diskBytes: 9)),
            PlacementCandidate(hostID: "c", takesGuests: true, free: Resources(vcpus: 1, memoryBytes: 2, diskBytes: 9)),
            PlacementCandidate(
                hostID: "d", takesGuests: false, free: Resources(vcpus: 64, memoryBytes: 64, diskBytes: 9)),
        ]
        let request = PlacementRequest(Resources(vcpus: 2, memoryBytes: 3, diskBytes: 1))
        #expect(Placement.choose(request, among: hosts, policy: .spread) == .host("a"))
        #expect(Placement.choose(request, among: hosts, policy: .pack) == .host("b"))
        // Equal free resources: the smallest host ID, whatever the order they come in.
        let twins = [
            PlacementCandidate(hostID: "z", takesGuests: true, free: Resources(vcpus: 4, memoryBytes: 4, diskBytes: 4)),
            PlacementCandidate(hostID: "m", takesGuests: true, free: Resources(vcpus: 4, memoryBytes: 4, diskBytes: 4)),
        ]
        for policy in PlacementPolicy.allCases {
            #expect(Placement.choose(request, among: twins, policy: policy) == .host("m"))
            #expect(Placement.choose(request, among: twins.reversed(), policy: policy) == .host("m"))
        }
    }

    @Test func aRefusalSaysWhy() {
        let resources = Resources(vcpus: 2, memoryBytes: 3, diskBytes: 1)
        let request = PlacementRequest(resources)
        guard case .none(let nothing) = Placement.choose(request, among: [], policy: .spread) else {
            Issue.record("placed on no host")
            return
        }
        #expect(nothing.description.contains("no host is registered"))
        let silent = [PlacementCandidate(hostID: "a", takesGuests: false, free: resources)]
        guard case .none(let down) = Placement.choose(request, among: silent, policy: .pack) else {
            Issue.record("placed on a host that takes no guests")
            return
        }
        #expect(down.hostsTakingGuests == 0 && down.description.contains("none of the 1 hosts takes guests"))
        let full = [
            PlacementCandidate(hostID: "a", takesGuests: true, free: Resources(vcpus: 8, memoryBytes: 2, diskBytes: 8))
        ]
        guard case .none(let small) = Placement.choose(request, among: full, policy: .spread) else {
            Issue.record("placed on a host too small")
            return
        }
        #expect(small.largestFree == full[0].free && small.description.contains("no host has"))
    }

    /// A cluster of hosts with and without KVM: a KVM guest goes only to a KVM host (the
    /// emptiest or fullest of those, by the policy, even when a host without KVM has more room),
    /// a built-in guest to any; the refusals say whether KVM or room is missing.
    @Test func aKVMGuestGoesOnlyToAHostWithKVM() {
        let hosts = [
            PlacementCandidate(
                hostID: "big", takesGuests: true, free: Resources(vcpus: 64, memoryBytes: 64, diskBytes: 64)),
            PlacementCandidate(
                hostID: "kvm-a", takesGuests: true, free: Resources(vcpus: 4, memoryBytes: 8, diskBytes: 8),
                runsKVM: true),
            PlacementCandidate(
                hostID: "kvm-b", takesGuests: true, free: Resources(vcpus: 4, memoryBytes: 4, diskBytes: 8),
                runsKVM: true),
            PlacementCandidate(
                hostID: "kvm-down", takesGuests: false, free: Resources(vcpus: 64, memoryBytes: 64, diskBytes: 64),
                runsKVM: true),
        ]
        let resources = Resources(vcpus: 2, memoryBytes: 4, diskBytes: 1)
        let kvm = PlacementRequest(resources, needsKVM: true)
        #expect(Placement.choose(kvm, among: hosts, policy: .spread) == .host("kvm-a"))
        #expect(Placement.choose(kvm, among: hosts, policy: .pack) == .host("kvm-b"))
        #expect(Placement.choose(PlacementRequest(resources), among: hosts, policy: .spread) == .host("big"))
        #expect(Placement.choose(PlacementRequest(resources), among: hosts, policy: .pack) == .host("kvm-b"))

        let tooLarge = PlacementRequest(Resources(vcpus: 2, memoryBytes: 16, diskBytes: 1), needsKVM: true)
        guard case .none(let full) = Placement.choose(tooLarge, among: hosts, policy: .spread) else {
            Issue.record("a KVM guest placed on a host without KVM or without room")
            return
        }
        #expect(full.hostsEligible == 2 && full.hostsWithKVM == 3 && full.largestFree == hosts[1].free)
        #expect(full.description.contains("no host with KVM has room"), "\(full)")
        guard case .none(let none) = Placement.choose(kvm, among: [hosts[0], hosts[3]], policy: .pack) else {
            Issue.record("a KVM guest placed on a host without KVM or one taking no guests")
            return
        }
        #expect(none.hostsEligible == 0 && none.description.contains("no host with KVM takes guests"), "\(none)")
        #expect(!none.description.contains("no host has"))
    }

    /// Issue 16's measurement: 1,000 requests placed one after another on a simulated
    /// 1,000-host cluster (target ≤ 1 s in total). Printed, not asserted on time; the placements
    /// are checked (none overcommits a host).
    @Test(arguments: PlacementPolicy.allCases)
    func thousandRequestsOnAThousandHosts(policy: PlacementPolicy) {
        var random = SplitMix64(seed: 16)
        var hosts = (0..<1000).map { index in
            PlacementCandidate(
                hostID: "host-\(100_000 + index)", takesGuests: Int.random(in: 0..<10, using: &random) != 0,
                free: Resources(vcpus: 64, memoryBytes: 256 << 30, diskBytes: 4 << 40))
        }
        let clock = ContinuousClock()
        var placed = 0
        let elapsed = clock.measure {
            for step in 0..<1000 {
                let vcpus = 1 << (step % 5)
                let request = PlacementRequest(
                    Resources(vcpus: vcpus, memoryBytes: vcpus << 32, diskBytes: vcpus * (40 << 30)))
                guard case .host(let id) = Placement.choose(request, among: hosts, policy: policy) else { continue }
                let index = Int(id.dropFirst(5))! - 100_000
                hosts[index].free = hosts[index].free - request.resources
                placed += 1
            }
        }
        print("scheduler \(policy.rawValue): \(placed) of 1000 requests placed on 1000 hosts in \(elapsed)")
        #expect(placed == 1000 && hosts.allSatisfy { $0.free.isNonNegative })
    }
}
