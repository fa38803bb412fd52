import FerryHostModel
import FerryTestSupport
import Foundation
import Testing

@testable import FerryControl

/// Delivered leases in the store, on every backend this run has: their units set aside on
/// hosts, the on-demand guests in the way named for migration, the pool the lessee's alone.
@Suite struct LeasePoolStoreTests {
    static let everything = Quota(
        guests: 1000, resources: Resources(vcpus: 1 << 20, memoryBytes: 1 << 50, diskBytes: 1 << 50))

    /// Two hosts with room for 8 small guests each, a small guest on each: a lease of one large
    /// unit (half a host) fits the cluster but no host, so the plan sets the unit aside on h1 and
    /// moves h1's guest to h2. From then on on-demand guests go elsewhere; the pool opens only
    /// once delivered, takes only the lessee's guests of its flavor, and no more than its units.
    @Test(arguments: StoreBackend.available)
    func aDeliveredLeaseIsTheLesseesPoolAlone(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let store = try await backend.store(scratch)
        defer { backend.close(store) }
        try await store.addProject(Project(name: "beta", quota: Self.everything))
        _ = try await store.registerHost(host("h1", slots: 8))
        _ = try await store.registerHost(host("h2", slots: 8))
        var onDemand: [CloudGuest] = []
        for index in 0..<2 {
            let guest = try await store.createGuest(request("g\(index)"), clientToken: nil, cause: "api").guest
            onDemand.append(try await Self.run(store, guest))
        }
        #expect(Set(onDemand.map(\.host)) == ["h1", "h2"])
        let lease = try await store.admitLease(
            LeaseSubmission(project: "alpha", flavor: "large", count: 1, start: Date(), end: Date() + 3600))
        #expect(try await store.leasesInWindow(at: Date() + 1).map(\.id) == [lease.id])

        let (planned, plan) = try await store.planLeaseDelivery(id: lease.id)
        let inTheWay = try #require(onDemand.first { $0.host == "h1" })
        #expect(
            plan
                == DeliveryPlan(
                    slots: ["h1": 1], moves: [DeliveryMove(guest: inTheWay.id.hex, from: "h1", to: "h2")], short: 0))
        #expect(planned.phase == .delivering && planned.slots == ["h1": 1])
        #expect(try await store.lease(id: lease.id)?.slots == ["h1": 1])

        // On-demand placement leaves the unit alone; the pool is not open yet.
        #expect(
            try await store.createGuest(request("b1", project: "beta"), clientToken: nil, cause: "api").guest.host
                == "h2")
        let early = GuestRequest(
            project: "alpha", name: try GuestName("p0"), flavor: "large", image: "tiny", lease: lease.id)
        #expect(await Self.refusal(store, early) == .invalidArgument)

        // The guest in the way leaves (the controller migrates it); the pool opens.
        _ = try await store.transition(inTheWay.id, from: .running, to: .error, cause: "test", errorReason: "gone")
        let opened = try await store.changeLease(id: lease.id, to: .active, shortUnits: 0, note: "delivered")
        #expect(opened.deliveredAt != nil && opened.phase == .active)
        let member = try await store.createGuest(early, clientToken: nil, cause: "api").guest
        #expect(member.host == "h1" && member.request.lease == lease.id)
        #expect(try await store.guest(id: member.id)?.request.lease == lease.id)

        var another = early
        another.name = try GuestName("p1")
        #expect(await Self.refusal(store, another) == .insufficientCapacity, "one unit, one guest")
        var stranger = another
        stranger.project = "beta"
        #expect(await Self.refusal(store, stranger) == .notFound, "only the lessee uses the pool")
        var wrongFlavor = another
        wrongFlavor.flavor = "small"
        #expect(await Self.refusal(store, wrongFlavor) == .invalidArgument)
        // h2 has 6 of 8 GiB free and h1 is the pool: no large on-demand guest fits.
        #expect(await Self.refusal(store, request("b2", flavor: "large", project: "beta")) == .insufficientCapacity)

        let cancelled = try await store.cancelLease(id: lease.id)
        #expect(cancelled.phase == .ended && cancelled.slots.isEmpty && cancelled.endedAt != nil)
        #expect(try await store.leasesInWindow(at: Date() + 1).isEmpty)
    }

    /// One host of 4: a lease of 3 in an hour leaves room for one on-demand guest, not two
    /// (the second would leave the lease short when its window starts).
    @Test(arguments: StoreBackend.available)
    func onDemandGuestsLeaveRoomForAdmittedLeases(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let store = try await backend.store(scratch)
        defer { backend.close(store) }
        _ = try await store.registerHost(host("h1", slots: 4))
        let start = Date() + 3600
        _ = try await store.admitLease(
            LeaseSubmission(project: "alpha", flavor: "small", count: 3, start: start, end: start + 3600))
        _ = try await store.createGuest(request("g0"), clientToken: nil, cause: "api")
        let refused = await controlError { () async throws(ControlError) in
            try await store.createGuest(request("g1"), clientToken: nil, cause: "api")
        }
        #expect(refused?.code == .insufficientCapacity)
        #expect(refused?.message.contains("reserved by leases") == true, "\(refused?.message ?? "")")
    }

    /// `extend` extends by the lease's length while admission admits it, and not past another
    /// lease that takes the capacity.
    @Test(arguments: StoreBackend.available)
    func aLeaseExtendsOnlyIntoCapacityThatIsFree(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let store = try await backend.store(scratch)
        defer { backend.close(store) }
        _ = try await store.registerHost(host("h1", slots: 4))
        let start = Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.up) + 60)
        let lease = try await store.admitLease(
            LeaseSubmission(
                project: "alpha", flavor: "small", count: 2, start: start, end: start + 3600, atEnd: .extend))
        let extended = try await store.extendLease(id: lease.id)
        #expect(extended.end == start + 7200)
        _ = try await store.admitLease(
            LeaseSubmission(project: "alpha", flavor: "small", count: 3, start: start + 7200, end: start + 10_800))
        let refused = await controlError { () async throws(ControlError) in try await store.extendLease(id: lease.id) }
        #expect(refused?.code == .insufficientCapacity)
        #expect(try await store.lease(id: lease.id)?.end == start + 7200)
    }

    /// Consolidation put h2 in standby; h1 has room for 4 small guests and holds 2. A lease of 4
    /// is admitted on h2's capacity (standby is capacity the cloud has), on-demand guests still
    /// fit beside it the same way, and its delivery sets its units aside on h2 rather than coming
    /// up short on h1 alone. A member placed there wakes it; nothing migrates onto a host in
    /// standby.
    @Test(arguments: StoreBackend.available)
    func aLeaseCountsAndIsDeliveredOnHostsInStandby(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let store = try await backend.store(scratch)
        defer { backend.close(store) }
        _ = try await store.registerHost(host("h1", slots: 4))
        _ = try await store.registerHost(host("h2", slots: 4))
        _ = try await store.setHostPower("h2", to: .standby, from: [.on], cause: "consolidation")
        for index in 0..<2 {
            let guest = try await store.createGuest(request("g\(index)"), clientToken: nil, cause: "api").guest
            #expect(try await Self.run(store, guest).host == "h1")
        }
        let lease = try await store.admitLease(
            LeaseSubmission(project: "alpha", flavor: "small", count: 4, start: Date(), end: Date() + 3600))
        // h1's 2 free slots and h2's 4 hold the lease's 4 and 2 on-demand guests more, not 3.
        _ = try await store.createGuest(request("g2"), clientToken: nil, cause: "api")
        _ = try await store.createGuest(request("g3"), clientToken: nil, cause: "api")
        #expect(await Self.refusal(store, request("g4")) == .insufficientCapacity)

        let (planned, plan) = try await store.planLeaseDelivery(id: lease.id)
        #expect(plan.short == 0 && plan.moves.isEmpty, "\(plan)")
        #expect(planned.slots == ["h2": 4], "\(planned.slots)")
        _ = try await store.changeLease(id: lease.id, to: .active, shortUnits: 0, note: "delivered")
        let member = try await store.createGuest(
            GuestRequest(project: "alpha", name: try GuestName("p0"), flavor: "small", image: "tiny", lease: lease.id),
            clientToken: nil, cause: "api"
        ).guest
        #expect(member.host == "h2")
        #expect(try await store.hosts().first { $0.id == "h2" }?.power == .waking, "a member placed there wakes it")
    }

    /// The SLA record's bookkeeping: delivered once, time short summed, the available share.
    @Test func theSLARecordCountsDeliveryAndShortTime() {
        let start = Date(timeIntervalSince1970: 1_000_000)
        var lease = LeaseRecord(
            id: "l", project: "alpha", flavor: "small", count: 2, unit: small.resources, start: start,
            end: start + 100, atEnd: .stop, state: .admitted, createdAt: start - 10)
        lease.phase = .delivering
        lease = ControlRules.leaseChanged(lease, to: .active, shortUnits: 0, note: "", now: start + 10)
        #expect(lease.deliveryMilliseconds == 10_000)
        lease = ControlRules.leaseChanged(lease, to: .short, shortUnits: 1, note: "", now: start + 40)
        #expect(lease.shortUnits == 1 && lease.shortSince == start + 40)
        #expect(abs(lease.availableFraction(at: start + 50) - 0.6) < 1e-9, "10 s before delivery, 10 s short of 50")
        lease = ControlRules.leaseChanged(lease, to: .active, shortUnits: 0, note: "", now: start + 60)
        #expect(lease.deliveredAt == start + 10 && lease.shortMilliseconds == 20_000 && lease.shortSince == nil)
        lease = ControlRules.leaseChanged(lease, to: .ended, shortUnits: 0, note: "", now: start + 100)
        #expect(abs(lease.availableFraction(at: start + 500) - 0.7) < 1e-9)
    }

    static func run(_ store: any ControlStore, _ guest: CloudGuest) async throws -> CloudGuest {
        let building = try await store.transition(guest.id, from: .pending, to: .building, cause: "test")
        return try await store.transition(building.id, from: .building, to: .running, cause: "test")
    }

    static func refusal(_ store: any ControlStore, _ request: GuestRequest) async -> ControlError.Code? {
        await controlError { () async throws(ControlError) in
            try await store.createGuest(request, clientToken: nil, cause: "api")
        }?.code
    }
}
