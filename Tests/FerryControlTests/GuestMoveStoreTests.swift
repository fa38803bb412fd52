import FerryHostModel
import FerryTestSupport
import Foundation
import Synchronization
import Testing

@testable import FerryControl

/// The ControlStore's moves (a guest live-migrated between hosts), on every backend this run has:
/// begun, finished and abandoned with their journal rows; the guest's resources held on both
/// hosts while it moves; the refusals.
@Suite struct GuestMoveStoreTests {
    /// A guest of flavor `small`, running on its host.
    static func runningGuest(_ store: any ControlStore, _ name: String) async throws -> CloudGuest {
        let id = try await store.createGuest(request(name), clientToken: nil, cause: "create").guest.id
        _ = try await store.transition(id, from: .pending, to: .building, cause: "build")
        return try await store.transition(id, from: .building, to: .running, cause: "runs")
    }

    @Test(arguments: StoreBackend.available)
    func aMoveBeginsFinishesAndIsAbandonedJournaled(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let store = try await backend.store(scratch)
        defer { backend.close(store) }
        _ = try await store.registerHost(host("h1", slots: 2))
        _ = try await store.registerHost(host("h2", slots: 2))
        let guest = try await Self.runningGuest(store, "web")
        #expect(guest.host == "h1" && guest.movingTo == nil)

        let moving = try await store.beginMove(guest.id, to: "h2", cause: "api: migrate", generation: guest.generation)
        #expect(moving.host == "h1" && moving.movingTo == "h2" && moving.state == .running)
        #expect(moving.generation == guest.generation + 1 && moving.stateSince == guest.stateSince)
        #expect(try await store.guest(id: guest.id) == moving)
        #expect(try await store.hostUsage() == ["h1": small.resources, "h2": small.resources])
        #expect(try await store.usage(project: "alpha") == ProjectUsage(guests: 1, resources: small.resources))
        let begun = try #require(try await store.journal(of: guest.id).last)
        #expect(begun.from == .running && begun.to == .running, "\(begun)")
        #expect(begun.cause == "moving to h2 from h1 (api: migrate)", "\(begun.cause)")

        let moved = try await store.finishMove(guest.id, cause: "migration m1 completed")
        #expect(moved.host == "h2" && moved.movingTo == nil && moved.generation == moving.generation + 1)
        #expect(try await store.guest(id: guest.id) == moved)
        #expect(try await store.hostUsage() == ["h2": small.resources])
        #expect(try await store.guests(host: "h2", states: [.running]).map(\.id) == [guest.id])
        #expect(try await store.guests(host: "h1", states: [.running]).isEmpty)

        let back = try await store.beginMove(guest.id, to: nil, cause: "balance", generation: nil)
        #expect(back.movingTo == "h1", "the scheduler picks the other host")
        let stays = try await store.abandonMove(guest.id, cause: "migration m2 failed")
        #expect(stays.host == "h2" && stays.movingTo == nil && stays.generation == back.generation + 1)
        #expect(try await store.hostUsage() == ["h2": small.resources])

        let journal = try await store.journal(of: guest.id)
        #expect(
            journal.suffix(3).map(\.cause) == [
                "moved from h1 to h2 (migration m1 completed)", "moving to h1 from h2 (balance)",
                "stays on h2; the move to h1 was abandoned (migration m2 failed)",
            ])
        #expect(journal.map(\.to) == [.pending, .building, .running, .running, .running, .running, .running])
        try await expectJournalAgreesWithGuests(store)
        // Billing sees one running interval, unbroken by the moves, and bills it once.
        let changes = journal.map {
            StateChange(sequence: $0.sequence, timeMilliseconds: Billing.milliseconds($0.time), to: $0.to)
        }
        #expect(Billing.runningIntervals(changes).count == 1)
        #expect(Billing.runningIntervals(changes).first?.endMilliseconds == nil)
    }

    /// While a guest moves it holds its resources on both hosts: a create that would fit only if
    /// it did not count on its destination is refused, and fits once the move has ended.
    @Test(arguments: StoreBackend.available)
    func aMovingGuestHoldsItsResourcesOnBothHosts(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let store = try await backend.store(scratch)
        defer { backend.close(store) }
        _ = try await store.registerHost(host("h1", slots: 1))
        _ = try await store.registerHost(host("h2", slots: 1))
        let guest = try await Self.runningGuest(store, "web")
        #expect(guest.host == "h1")
        _ = try await store.beginMove(guest.id, to: "h2", cause: "api: migrate", generation: nil)
        let refused = await controlError { () async throws(ControlError) in
            try await store.createGuest(request("other"), clientToken: nil, cause: "c")
        }
        #expect(refused?.code == .insufficientCapacity, "\(String(describing: refused))")
        let hosts = try await store.hosts().map(\.id)
        #expect(hosts == ["h1", "h2"])
        _ = try await store.finishMove(guest.id, cause: "done")
        #expect(try await store.createGuest(request("other"), clientToken: nil, cause: "c").guest.host == "h1")
    }

    @Test(arguments: StoreBackend.available)
    func movesAreRefusedNamingWhy(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let store = try await backend.store(scratch)
        defer { backend.close(store) }
        _ = try await store.registerHost(host("h1", slots: 2))
        _ = try await store.registerHost(host("h2", slots: 1))
        _ = try await store.registerHost(host("h3", slots: 0))
        let guest = try await Self.runningGuest(store, "web")
        let pending = try await store.createGuest(request("later"), clientToken: nil, cause: "c").guest
        func refusal(_ id: GuestID, to host: String?, generation: Int64? = nil) async -> ControlError? {
            await controlError { () async throws(ControlError) in
                try await store.beginMove(id, to: host, cause: "test", generation: generation)
            }
        }
        #expect(await refusal(pending.id, to: "h1")?.code == .transitionRefused, "only a running guest moves")
        #expect(await refusal(guest.id, to: guest.host)?.code == .invalidArgument)
        #expect(await refusal(guest.id, to: "h9")?.code == .notFound)
        let full = await refusal(guest.id, to: "h3")
        #expect(
            full?.code == .insufficientCapacity && full?.message.contains("host h3 has") == true,
            "\(String(describing: full))")
        #expect(await refusal(guest.id, to: "h2", generation: guest.generation + 5)?.code == .stale)
        let notMoving = await controlError { () async throws(ControlError) in
            try await store.finishMove(guest.id, cause: "x")
        }
        #expect(notMoving?.code == .stale)

        let before = try await store.journal(of: guest.id).count
        _ = try await store.beginMove(guest.id, to: "h2", cause: "first", generation: nil)
        let again = await refusal(guest.id, to: "h3")
        #expect(again?.code == .transitionRefused && again?.message.contains("already moving") == true)
        let stop = await controlError { () async throws(ControlError) in
            try await store.transition(guest.id, from: .running, to: .stopping, cause: "user: stop")
        }
        #expect(stop?.code == .transitionRefused && stop?.message.contains("is moving") == true)
        #expect(try await store.journal(of: guest.id).count == before + 1, "refusals leave the journal as it was")
        #expect(try await store.guest(id: guest.id)?.movingTo == "h2")
    }

    /// A KVM guest moves only to a host whose agent reports a usable /dev/kvm.
    @Test(arguments: StoreBackend.available)
    func aKVMGuestMovesOnlyToAHostWithKVM(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let store = try await backend.store(scratch)
        defer { backend.close(store) }
        try await store.addImage(Image(name: "vm", kind: .kvm, diskTemplatePath: "/var/lib/ferry/images/vm.raw"))
        for (id, kvm) in [("k1", true), ("n2", false), ("k3", true)] {
            var registration = host(id, slots: 2)
            registration.kvm = kvm
            _ = try await store.registerHost(registration)
        }
        let created = try await store.createGuest(
            GuestRequest(project: "alpha", name: try GuestName("vm"), flavor: "small", image: "vm"), clientToken: nil,
            cause: "c"
        ).guest
        _ = try await store.transition(created.id, from: .pending, to: .building, cause: "b")
        let guest = try await store.transition(created.id, from: .building, to: .running, cause: "r")
        let refused = await controlError { () async throws(ControlError) in
            try await store.beginMove(guest.id, to: "n2", cause: "test", generation: nil)
        }
        #expect(refused?.code == .insufficientCapacity && refused?.message.contains("/dev/kvm") == true)
        let other = guest.host == "k1" ? "k3" : "k1"
        #expect(try await store.beginMove(guest.id, to: nil, cause: "test", generation: nil).movingTo == other)
    }

    /// `--max-moves-per-host`: a host with that many moves in or out under way takes part in no
    /// other until one ends; the scheduler's pick leaves it out.
    @Test(arguments: StoreBackend.available)
    func aHostAtItsLimitOfMovesRefusesAnother(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let store = try await backend.store(scratch)
        defer { backend.close(store) }
        _ = try await store.registerHost(host("h1", slots: 3))
        var guests: [CloudGuest] = []
        for name in ["a", "b", "c"] { guests.append(try await Self.runningGuest(store, name)) }
        #expect(guests.allSatisfy { $0.host == "h1" })
        _ = try await store.registerHost(host("h2", slots: 3))
        _ = try await store.registerHost(host("h3", slots: 3))
        func begin(_ guest: CloudGuest, to host: String?, limit: Int?) async throws(ControlError) -> CloudGuest {
            try await store.beginMove(guest.id, to: host, cause: "test", generation: nil, maxMovesPerHost: limit)
        }
        _ = try await begin(guests[0], to: "h2", limit: 2)
        _ = try await begin(guests[1], to: "h3", limit: 2)
        let source = await controlError { () async throws(ControlError) in
            try await begin(guests[2], to: "h2", limit: 2)
        }
        #expect(source?.code == .moveLimit, "\(String(describing: source))")
        #expect(source?.message.contains("host h1 has 2 moves under way") == true)
        #expect(source?.message.contains("--max-moves-per-host 2") == true)
        #expect(try await store.guest(id: guests[2].id)?.movingTo == nil, "a refused move is not recorded")
        #expect(try await begin(guests[2], to: "h2", limit: nil).movingTo == "h2", "no limit, no refusal")
        _ = try await store.abandonMove(guests[2].id, cause: "test")

        _ = try await store.finishMove(guests[0].id, cause: "done")  // h1: 1 move (b to h3), h3: 1
        let destination = await controlError { () async throws(ControlError) in
            try await begin(guests[0], to: "h3", limit: 1)
        }
        #expect(destination?.code == .moveLimit && destination?.message.contains("host h3 has 1") == true)
        let anyHost = await controlError { () async throws(ControlError) in
            try await begin(guests[0], to: nil, limit: 1)
        }
        #expect(anyHost?.code == .moveLimit, "every other host is at the limit: \(String(describing: anyHost))")
        _ = try await store.finishMove(guests[1].id, cause: "done")
        #expect(try await begin(guests[0], to: nil, limit: 1).movingTo != nil, "the limit freed, the move begins")
    }

    /// The journal of begun moves (what balancing counts its hourly moves and cool-downs from):
    /// only the entries that begin a move, of every guest, at or after the time asked, oldest
    /// first; the finishes, abandons and state changes are not in it.
    @Test(arguments: StoreBackend.available)
    func theMoveJournalListsTheMovesBegunSinceATime(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let start = Date(timeIntervalSince1970: 1_700_000_000)
        let clock = Mutex<Date>(start)
        let store = try await backend.store(scratch, clock: { clock.withLock { $0 } })
        defer { backend.close(store) }
        _ = try await store.registerHost(host("h1", slots: 4))
        let web = try await Self.runningGuest(store, "web")
        let db = try await Self.runningGuest(store, "db")
        _ = try await store.registerHost(host("h2", slots: 4))
        _ = try await store.beginMove(web.id, to: "h2", cause: "api: migrate", generation: nil)
        _ = try await store.finishMove(web.id, cause: "done")
        clock.withLock { $0 = start + 600 }
        _ = try await store.beginMove(db.id, to: "h2", cause: "balance: host h1 at 0.93 > 0.80", generation: nil)
        _ = try await store.abandonMove(db.id, cause: "failed")
        clock.withLock { $0 = start + 1200 }
        _ = try await store.beginMove(web.id, to: "h1", cause: "drain of host h2", generation: nil)

        let all = try await store.moveJournal(since: start)
        #expect(all.map(\.guestID) == [web.id, db.id, web.id], "\(all)")
        #expect(all.allSatisfy { $0.cause.hasPrefix("moving to ") }, "\(all.map(\.cause))")
        #expect(all.map(\.time) == [start, start + 600, start + 1200])
        let later = try await store.moveJournal(since: start + 600)
        #expect(
            later.map(\.cause) == [
                "moving to h2 from h1 (balance: host h1 at 0.93 > 0.80)", "moving to h1 from h2 (drain of host h2)",
            ])
        #expect(try await store.moveJournal(since: start + 1201).isEmpty)
        let (count, last) = BalanceInputs.history(all, now: start + 1800)
        #expect(count == 1 && last == [web.id: start + 1200, db.id: start + 600])
        #expect(BalanceInputs.history(all, now: start + 600 + 3601).movesInLastHour == 0, "an hour later")
    }
}
