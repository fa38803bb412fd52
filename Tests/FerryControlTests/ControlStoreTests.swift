import FerryHostModel
import FerryTestSupport
import Foundation
import Synchronization
import Testing

@testable import FerryControl

/// The ControlStore's contract, run on every backend this test run has: SQLite always,
/// PostgreSQL when FERRY_TEST_POSTGRES names a server (the README's test command starts one;
/// PostgresControlStoreTests says when it is missing).
@Suite struct ControlStoreTests {
    /// Samples are kept per guest in time order, a repeat in the same millisecond is dropped, a
    /// missing load stays missing, and pruning removes only what is older than the cut.
    @Test(arguments: StoreBackend.available)
    func telemetrySamplesAreKeptReadAndPruned(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let store = try await backend.store(scratch)
        defer { backend.close(store) }
        let a = try GuestID("000000000000000000000000000000aa")
        let b = try GuestID("000000000000000000000000000000bb")
        let first = [
            GuestSampleRow(guestID: a, sample: GuestSample(timeMilliseconds: 2000, cpuNanoseconds: 7, vcpus: 2)),
            GuestSampleRow(
                guestID: a, sample: GuestSample(timeMilliseconds: 1000, cpuNanoseconds: 5, vcpus: 2, loadPermille: 0)),
            GuestSampleRow(
                guestID: b,
                sample: GuestSample(
                    timeMilliseconds: 1500, cpuNanoseconds: UInt64(Int64.max), vcpus: 1, loadPermille: 1000)),
        ]
        try await store.recordSamples(first)
        try await store.recordSamples([
            GuestSampleRow(guestID: a, sample: GuestSample(timeMilliseconds: 2000, cpuNanoseconds: 99, vcpus: 2))
        ])
        try await store.recordSamples([])
        let read = try await store.samples(guests: [a, b], sinceMilliseconds: 0)
        #expect(read[a]?.map(\.timeMilliseconds) == [1000, 2000])
        #expect(read[a]?.map(\.cpuNanoseconds) == [5, 7], "the repeat at 2000 ms was dropped")
        #expect(read[a]?.map(\.loadPermille) == [0, nil])
        #expect(read[b] == [first[2].sample])
        #expect(try await store.samples(guests: [a], sinceMilliseconds: 1001)[a]?.count == 1)
        #expect(try await store.samples(guests: [], sinceMilliseconds: 0).isEmpty)
        #expect(try await store.pruneSamples(beforeMilliseconds: 1500) == 1)
        let left = try await store.samples(guests: [a, b], sinceMilliseconds: 0)
        #expect(left[a]?.map(\.timeMilliseconds) == [2000] && left[b]?.count == 1)
    }

    @Test(arguments: StoreBackend.available)
    func aCreatedGuestIsPendingOnAHostAndJournaled(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let store = try await backend.store(
            scratch)
        defer { backend.close(store) }
        _ = try await store.registerHost(host("h1", slots: 4))
        let creation = try await store.createGuest(request("web"), clientToken: nil, cause: "api: create")
        #expect(creation.created)
        let guest = creation.guest
        #expect(guest.state == .pending && guest.host == "h1" && guest.resources == small.resources)
        #expect(guest.pricePerSecondMicros == 12 && guest.imageKind == .builtin)
        #expect(try await store.guest(id: guest.id) == guest)
        let journal = try await store.journal(of: guest.id)
        #expect(journal.map(\.to) == [.pending] && journal[0].from == nil && journal[0].cause == "api: create")
        #expect(try await store.usage(project: "alpha") == ProjectUsage(guests: 1, resources: small.resources))
        #expect(try await store.hostUsage() == ["h1": small.resources])
    }

    /// The whole life, then a deletion that gives the capacity back; refused and stale changes
    /// leave the row and the journal as they were.
    @Test(arguments: StoreBackend.available)
    func transitionsAreCheckedAndDeletionFreesTheCapacity(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let store = try await backend.store(
            scratch)
        defer { backend.close(store) }
        _ = try await store.registerHost(host("h1", slots: 1))
        let id = try await store.createGuest(request("web"), clientToken: nil, cause: "create").guest.id
        #expect(
            await controlError { () async throws(ControlError) in
                try await store.createGuest(request("other"), clientToken: nil, cause: "c")
            }?.code == .insufficientCapacity)
        #expect(
            await controlError { () async throws(ControlError) in
                try await store.transition(id, from: .pending, to: .running, cause: "skip")
            }?.code == .transitionRefused)
        #expect(
            await controlError { () async throws(ControlError) in
                try await store.transition(id, from: .building, to: .running, cause: "stale")
            }?.code == .stale)
        #expect(
            await controlError { () async throws(ControlError) in
                try await store.transition(id, from: .pending, to: .error, cause: "no reason")
            }?.code == .invalidArgument)
        var guest = try await store.transition(id, from: .pending, to: .building, cause: "agent: creating disk")
        #expect(
            await controlError { () async throws(ControlError) in
                try await store.transition(
                    id, from: .building, to: .running, cause: "c", errorReason: nil, generation: 1)
            }?.code == .stale)
        guest = try await store.transition(
            id, from: .building, to: .running, cause: "agent: first console line", errorReason: nil,
            generation: guest.generation)
        for (from, to) in [(CloudGuestState.running, CloudGuestState.stopping), (.stopping, .stopped)] {
            guest = try await store.transition(id, from: from, to: to, cause: "user: stop")
        }
        // Stopped keeps its place: the host is still full.
        #expect(
            await controlError { () async throws(ControlError) in
                try await store.createGuest(request("other"), clientToken: nil, cause: "c")
            }?.code == .insufficientCapacity)
        guest = try await store.transition(id, from: .stopped, to: .deleted, cause: "user: delete")
        #expect(guest.state == .deleted && guest.generation == 6)
        #expect(
            try await store.journal(of: id).map(\.to) == [.pending, .building, .running, .stopping, .stopped, .deleted])
        let other = try await store.createGuest(request("other"), clientToken: nil, cause: "c").guest
        #expect(other.host == "h1")
        try await expectJournalAgreesWithGuests(store)
    }

    @Test(arguments: StoreBackend.available)
    func anErrorKeepsItsReasonAndReleasesTheCapacity(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let store = try await backend.store(
            scratch)
        defer { backend.close(store) }
        _ = try await store.registerHost(host("h1", slots: 1))
        let id = try await store.createGuest(request("web"), clientToken: nil, cause: "create").guest.id
        _ = try await store.transition(id, from: .pending, to: .building, cause: "agent")
        let failed = try await store.transition(
            id, from: .building, to: .error, cause: "agent", errorReason: "disk template missing")
        #expect(failed.errorReason == "disk template missing")
        #expect(try await store.usage(project: "alpha").guests == 0)
        let deleted = try await store.transition(id, from: .error, to: .deleted, cause: "user: delete")
        #expect(deleted.errorReason == "disk template missing")
        #expect(try await store.createGuest(request("next"), clientToken: nil, cause: "c").guest.host == "h1")
    }

    /// EC2's ClientToken: the same token and request give the same guest, however often; another
    /// request with that token is refused and changes nothing; the token is per project.
    @Test(arguments: StoreBackend.available)
    func aClientTokenMakesTheCreateIdempotent(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let store = try await backend.store(
            scratch)
        defer { backend.close(store) }
        try await store.addProject(
            Project(
                name: "beta",
                quota: Quota(guests: 5, resources: Resources(vcpus: 5, memoryBytes: 5 * gib, diskBytes: 50 * gib))))
        _ = try await store.registerHost(host("h1", slots: 8))
        let first = try await store.createGuest(request("web"), clientToken: "t-1", cause: "create")
        let again = try await store.createGuest(request("web"), clientToken: "t-1", cause: "retry")
        #expect(first.created && !again.created && again.guest == first.guest)
        let mismatch = await controlError { () async throws(ControlError) in
            try await store.createGuest(request("web", flavor: "large"), clientToken: "t-1", cause: "changed")
        }
        #expect(mismatch?.code == .clientTokenMismatch && mismatch!.message.contains(first.guest.id.hex))
        let otherProject = try await store.createGuest(
            request("web", project: "beta"), clientToken: "t-1", cause: "create")
        #expect(otherProject.created && otherProject.guest.id != first.guest.id)
        #expect(try await store.guests(project: "alpha").count == 1)
        #expect(try await store.journal(latest: 100).count == 2)
        // A deleted guest still holds its token: the same request does not make a second one.
        _ = try await store.transition(first.guest.id, from: .pending, to: .deleted, cause: "delete")
        #expect(
            try await store.createGuest(request("web"), clientToken: "t-1", cause: "late retry").guest.state == .deleted
        )
    }

    @Test(arguments: StoreBackend.available)
    func theQuotaRefusesNamingWhatIsOver(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let store = try await backend.store(
            scratch,
            quota: Quota(guests: 3, resources: Resources(vcpus: 6, memoryBytes: 100 * gib, diskBytes: 1000 * gib)))
        defer { backend.close(store) }
        _ = try await store.registerHost(host("h1", slots: 64))
        _ = try await store.createGuest(request("a", flavor: "large"), clientToken: nil, cause: "c")
        let vcpus = await controlError { () async throws(ControlError) in
            try await store.createGuest(request("b", flavor: "large"), clientToken: nil, cause: "c")
        }
        #expect(vcpus?.code == .quotaExceeded && vcpus!.message.contains("vCPUs 8 > 6"))
        _ = try await store.createGuest(request("b"), clientToken: nil, cause: "c")
        _ = try await store.createGuest(request("c", flavor: "small"), clientToken: nil, cause: "c")
        let guests = await controlError { () async throws(ControlError) in
            try await store.createGuest(request("d"), clientToken: nil, cause: "c")
        }
        #expect(guests?.code == .quotaExceeded && guests!.message.contains("(guests 4 > 3, vCPUs 7 > 6)"))
        try await store.setQuota(
            Quota(guests: 4, resources: Resources(vcpus: 8, memoryBytes: 100 * gib, diskBytes: 1000 * gib)),
            project: "alpha")
        _ = try await store.createGuest(request("d"), clientToken: nil, cause: "c")
        #expect(try await store.usage(project: "alpha").resources.vcpus == 7)
    }

    /// Only hosts that are healthy and heard from within the heartbeat timeout take guests.
    @Test(arguments: StoreBackend.available)
    func silentOrDegradedHostsTakeNoGuests(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let clock = Mutex<Date>(Date(timeIntervalSince1970: 1_800_000_000))
        let store = try await backend.store(
            scratch, heartbeatTimeout: .seconds(5), clock: { clock.withLock { $0 } })
        defer { backend.close(store) }
        _ = try await store.registerHost(host("h1", slots: 8))
        _ = try await store.registerHost(host("h2", slots: 2))
        #expect(try await store.createGuest(request("a"), clientToken: nil, cause: "c").guest.host == "h1")
        clock.withLock { $0 += 6 }
        _ = try await store.heartbeat(host: "h2", health: .healthy)
        #expect(try await store.createGuest(request("b"), clientToken: nil, cause: "c").guest.host == "h2")
        _ = try await store.heartbeat(host: "h2", health: .degraded)
        let refused = await controlError { () async throws(ControlError) in
            try await store.createGuest(request("c"), clientToken: nil, cause: "c")
        }
        #expect(refused?.code == .insufficientCapacity && refused!.message.contains("none of the 2 hosts takes guests"))
        _ = try await store.heartbeat(host: "h1", health: .healthy)
        #expect(try await store.createGuest(request("c"), clientToken: nil, cause: "c").guest.host == "h1")
        #expect(
            await controlError { () async throws(ControlError) in
                try await store.heartbeat(host: "h9", health: .healthy)
            }?.code
                == .notFound)
    }

    @Test(arguments: StoreBackend.available, PlacementPolicy.allCases)
    func thePolicyDecidesWhereGuestsGo(backend: StoreBackend, policy: PlacementPolicy) async throws {
        let scratch = Scratch()
        let store = try await backend.store(
            scratch, policy: policy)
        defer { backend.close(store) }
        for id in ["h1", "h2", "h3"] { _ = try await store.registerHost(host(id, slots: 2)) }
        var hosts: [String] = []
        for index in 0..<4 {
            hosts.append(try await store.createGuest(request("g\(index)"), clientToken: nil, cause: "c").guest.host)
        }
        #expect(hosts == (policy == .spread ? ["h1", "h2", "h3", "h1"] : ["h1", "h1", "h2", "h2"]))
    }

    @Test(arguments: StoreBackend.available)
    func badInputIsRefusedNamingIt(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let store = try await backend.store(
            scratch)
        defer { backend.close(store) }
        _ = try await store.registerHost(host("h1", slots: 2))
        #expect(
            await controlError { () async throws(ControlError) in try await store.addFlavor(small) }?.code
                == .alreadyExists)
        #expect(
            await controlError { () async throws(ControlError) in
                try await store.addFlavor(Flavor(name: "Bad Name", resources: small.resources, pricePerSecondMicros: 1))
            }?.code == .invalidArgument)
        #expect(
            await controlError { () async throws(ControlError) in
                try await store.addImage(Image(name: "rel", kind: .kvm, diskTemplatePath: "tiny.img"))
            }?.code == .invalidArgument)
        #expect(
            await controlError { () async throws(ControlError) in
                try await store.registerHost(
                    HostRegistration(
                        id: "h2", address: "a:1", capacity: Resources(vcpus: -1, memoryBytes: 0, diskBytes: 0)))
            }?.code == .invalidArgument)
        for (bad, what) in [
            (request("x", flavor: "huge"), "no flavor huge"), (request("x", project: "nobody"), "no project nobody"),
        ] {
            let error = await controlError { () async throws(ControlError) in
                try await store.createGuest(bad, clientToken: nil, cause: "c")
            }
            #expect(error?.code == .notFound && error!.message.contains(what))
        }
        #expect(
            await controlError { () async throws(ControlError) in
                try await store.createGuest(request("x"), clientToken: "", cause: "c")
            }?.code == .invalidArgument)
        #expect(try await store.journal(latest: 10).isEmpty)
    }

    /// A re-registration (an agent restarting) updates the host and keeps its guests there.
    @Test(arguments: StoreBackend.available)
    func reRegistrationKeepsTheGuests(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let store = try await backend.store(
            scratch)
        defer { backend.close(store) }
        _ = try await store.registerHost(host("h1", slots: 2))
        let guest = try await store.createGuest(request("a"), clientToken: nil, cause: "c").guest
        let again = try await store.registerHost(
            HostRegistration(id: "h1", address: "10.0.0.9:7070", capacity: host("h1", slots: 3).capacity))
        #expect(again.address == "10.0.0.9:7070" && again.capacity.vcpus == 3)
        #expect(try await store.hosts().count == 1)
        #expect(try await store.guest(id: guest.id)?.host == "h1")
    }

    /// A host's KVM flag round-trips (registered, changed by a re-registration), and a guest of a
    /// `kvm` image goes only to a host with it: refused at once while no host has KVM, placed on
    /// the KVM host though another has more room, refused for room once that host is full.
    @Test(arguments: StoreBackend.available)
    func theKVMFlagRoundTripsAndPlacesKVMGuests(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let store = try await backend.store(scratch)
        defer { backend.close(store) }
        try await store.addImage(Image(name: "vm", kind: .kvm, diskTemplatePath: "/var/lib/ferry/images/vm.raw"))
        let kvmGuest = { @Sendable (name: String) async throws(ControlError) -> CloudGuest in
            let guest = GuestRequest(project: "alpha", name: try! GuestName(name), flavor: "small", image: "vm")
            return try await store.createGuest(guest, clientToken: nil, cause: "c").guest
        }
        let big = try await store.registerHost(host("big", slots: 8))
        #expect(!big.kvm)
        let early = await controlError { () async throws(ControlError) in try await kvmGuest("v0") }
        #expect(early?.code == .invalidArgument, "\(String(describing: early))")
        #expect(early?.message.contains("reports a usable /dev/kvm") == true, "\(String(describing: early))")
        var small = host("small", slots: 2)
        small.kvm = true
        let registered = try await store.registerHost(small)
        #expect(registered.kvm)
        #expect(try await store.hosts().map(\.kvm) == [false, true])
        for name in ["v1", "v2"] { #expect(try await kvmGuest(name).host == "small") }
        let full = await controlError { () async throws(ControlError) in try await kvmGuest("v3") }
        #expect(full?.code == .insufficientCapacity, "\(String(describing: full))")
        #expect(full?.message.contains("no host with KVM has room") == true, "\(String(describing: full))")
        #expect(try await store.createGuest(request("b1"), clientToken: nil, cause: "c").guest.host == "big")
        small.kvm = false
        let reRegistered = try await store.registerHost(small)
        #expect(!reRegistered.kvm)
        #expect(try await store.hosts().map(\.kvm) == [false, false])
    }

}
