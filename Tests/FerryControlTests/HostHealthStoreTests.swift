import FerryHostModel
import FerryTestSupport
import Foundation
import Logging
import Synchronization
import Testing

@testable import FerryControl
@testable import FerryController

/// A host's health as reports leave it, on every backend this run has: a failing report
/// quarantines the host (kept: when, and the earliest deadline), the scheduler, moves and
/// leases leave it out with refusals that name the quarantine, a warning still takes guests,
/// and a healthy report releases it. Then `HostTracking` over a real store: the heartbeat's
/// signals and checks combined, and `onQuarantine` called once per quarantine.
@Suite struct HostHealthStoreTests {
    static let start = Date(timeIntervalSince1970: 1_800_000_000)

    static func report(_ health: HostHealth, _ reason: String = "", within: Double? = nil) -> HostRegistration {
        var registration = host("h2", slots: 4)
        registration.healthReport = HostHealthReport(health, reason: reason, evacuateWithinSeconds: within)
        return registration
    }

    @Test(arguments: StoreBackend.available)
    func aFailingReportQuarantinesUntilAHealthyOne(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let clock = Mutex<Date>(Self.start)
        let store = try await backend.store(scratch, clock: { clock.withLock { $0 } })
        defer { backend.close(store) }
        let first = try await store.reportHost(host("h2", slots: 4))
        #expect(first.previous == nil && first.host.health == .healthy && !first.quarantined)

        let failing = try await store.reportHost(
            Self.report(.failing, "memory controller mc0: 1 uncorrected error", within: 900))
        #expect(failing.quarantined && failing.previous == .healthy)
        #expect(failing.host.quarantinedAt == Self.start && failing.host.evacuateBy == Self.start + 900)
        #expect(failing.host.healthReason == "memory controller mc0: 1 uncorrected error")
        #expect(!failing.host.takesGuests(at: Self.start, heartbeatTimeout: .seconds(5)))

        // A second later the agent reports what is left (899 s), or, rounding, a little more: the
        // deadline stays; the quarantine is not new.
        clock.withLock { $0 += 1 }
        let again = try await store.reportHost(
            Self.report(.failing, "memory controller mc0: 1 uncorrected error", within: 900))
        #expect(
            !again.quarantined && again.host.quarantinedAt == Self.start && again.host.evacuateBy == Self.start + 900)
        // A nearer deadline (a critical event) replaces it.
        let nearer = try await store.reportHost(Self.report(.failing, "IPMI event", within: 60))
        #expect(nearer.host.evacuateBy == Self.start + 61 && nearer.host.quarantinedAt == Self.start)
        #expect(try await store.hosts() == [nearer.host])

        clock.withLock { $0 += 1 }
        let released = try await store.reportHost(Self.report(.healthy))
        #expect(released.released && released.host.health == .healthy && released.host.healthReason == "")
        #expect(released.host.evacuateBy == nil && released.host.quarantinedAt == nil)
        let warning = try await store.reportHost(Self.report(.warning, "disk sda: SMART 5 counts 8"))
        #expect(warning.host.takesGuests(at: Self.start + 2, heartbeatTimeout: .seconds(5)))
        #expect(warning.host.healthReason == "disk sda: SMART 5 counts 8")

        // `heartbeat` records the same way.
        let viaHeartbeat = try await store.heartbeat(
            host: "h2", health: HostHealthReport(.failing, reason: "r", evacuateWithinSeconds: 30))
        #expect(viaHeartbeat.quarantined && viaHeartbeat.quarantinedAt == Self.start + 2)
        #expect(viaHeartbeat.evacuateBy == Self.start + 32)
    }

    /// The scheduler leaves a quarantined host out and says so when nothing else fits; a move
    /// to it is refused naming the quarantine; a warning host takes guests.
    @Test(arguments: StoreBackend.available)
    func aQuarantinedHostTakesNoGuestsAndRefusalsSaySo(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let store = try await backend.store(scratch)
        defer { backend.close(store) }
        _ = try await store.registerHost(host("h1", slots: 1))
        _ = try await store.registerHost(host("h2", slots: 4))
        let guest = try await LeasePoolStoreTests.run(
            store, try await store.createGuest(request("a"), clientToken: nil, cause: "c").guest)
        #expect(guest.host == "h2")
        _ = try await store.reportHost(Self.report(.failing, "disk sda: SMART 5 at 10", within: 900))
        #expect(try await store.createGuest(request("b"), clientToken: nil, cause: "c").guest.host == "h1")
        let refused = await controlError { () async throws(ControlError) in
            try await store.createGuest(request("c"), clientToken: nil, cause: "c")
        }
        #expect(refused?.code == .insufficientCapacity)
        #expect(
            refused?.message.contains("1 of 2 hosts take guests; 1 is quarantined (failing hardware)") == true,
            "\(refused?.message ?? "")")

        let b = try #require(try await store.guests(host: "h1", states: [.pending]).first)
        _ = try await LeasePoolStoreTests.run(store, b)
        let move = await controlError { () async throws(ControlError) in
            try await store.beginMove(b.id, to: "h2", cause: "api", generation: nil)
        }
        #expect(
            move?.message.contains("host h2 is quarantined (its hardware is failing)") == true, "\(move?.message ?? "")"
        )
        _ = try await store.reportHost(Self.report(.warning, "disk sda: SMART 5 counts 8"))
        #expect(try await store.createGuest(request("d"), clientToken: nil, cause: "c").guest.host == "h2")
    }

    /// The heartbeat's signals and the agent's checks combined: failing hardware first, then a
    /// failed check (degraded), then a warning.
    @Test func aHeartbeatsHealthIsTheWorstOfItsParts() {
        func beat(_ healthy: Bool, _ signals: HostHeartbeat.Signals?) -> HostHeartbeat {
            HostHeartbeat(
                hostID: "h1", agentURL: "http://a", vcpus: 1, memoryBytes: 1, diskBytes: 1, healthy: healthy,
                healthDetail: healthy ? "ok" : "read-only file system", signals: signals, guests: [])
        }
        let failing = HostHeartbeat.Signals(state: .failing, reason: "mc0", evacuateWithinSeconds: 900)
        let warning = HostHeartbeat.Signals(state: .warning, reason: "sda")
        #expect(HostTracking.healthReport(beat(true, nil)) == HostHealthReport(.healthy))
        #expect(HostTracking.healthReport(beat(true, .init(state: .healthy, reason: ""))) == HostHealthReport(.healthy))
        #expect(
            HostTracking.healthReport(beat(false, failing))
                == HostHealthReport(
                    .failing, reason: "mc0; the agent's checks failed: read-only file system",
                    evacuateWithinSeconds: 900))
        #expect(
            HostTracking.healthReport(beat(false, warning))
                == HostHealthReport(.degraded, reason: "the agent's checks failed: read-only file system; sda"))
        #expect(HostTracking.healthReport(beat(true, warning)) == HostHealthReport(.warning, reason: "sda"))
        #expect(
            HostTracking.healthReport(beat(false, nil))
                == HostHealthReport(.degraded, reason: "the agent's checks failed: read-only file system"))
    }

    /// Heartbeats through `HostTracking`: the quarantine hook is called once however many failing
    /// heartbeats follow, and once more after a release and a new failure.
    @Test(arguments: StoreBackend.available)
    func theQuarantineHookIsCalledOncePerQuarantine(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let store = try await backend.store(scratch)
        defer { backend.close(store) }
        let calls = Mutex<[HostRecord]>([])
        let tracking = HostTracking(
            store: store, heartbeatTimeout: .seconds(5), logger: quietLogger,
            onQuarantine: { host in calls.withLock { $0.append(host) } })
        func beat(_ signals: HostHeartbeat.Signals?) async throws {
            try await tracking.receive(
                HostHeartbeat(
                    hostID: "h1", agentURL: "http://127.0.0.1:1", vcpus: 4, memoryBytes: 4 * gib,
                    diskBytes: 40 * gib, healthy: true, healthDetail: "ok", signals: signals, guests: []))
        }
        let failing = HostHeartbeat.Signals(
            state: .failing, reason: "memory controller mc0: 1 uncorrected error", evacuateWithinSeconds: 900)
        try await beat(nil)
        try await beat(failing)
        for _ in 0..<5 { try await beat(failing) }
        let once = calls.withLock { $0 }
        #expect(once.count == 1 && once.first?.id == "h1" && once.first?.health == .failing)
        #expect(
            once.first?.healthReason == "memory controller mc0: 1 uncorrected error" && once.first?.evacuateBy != nil)
        try await beat(.init(state: .healthy, reason: ""))
        try await beat(failing)
        try await beat(failing)
        #expect(calls.withLock { $0.count } == 2)
    }

    /// The console's site page: a quarantined host's time and deadline; nothing for others.
    @Test func theConsoleShowsTheQuarantine() {
        var record = HostRecord(
            id: "h1", address: "http://a", capacity: Resources(vcpus: 1, memoryBytes: gib, diskBytes: gib),
            health: .failing, healthReason: "mc0", evacuateBy: Self.start + 900, quarantinedAt: Self.start,
            lastHeartbeat: Self.start, registeredAt: Self.start)
        #expect(AdminView.quarantine(record) == "since 2027-01-15T08:00:00.000Z; empty by 2027-01-15T08:15:00.000Z")
        record.health = .warning
        #expect(AdminView.quarantine(record) == "")
    }
}
