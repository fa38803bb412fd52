import FerryHostModel
import FerryTestSupport
import Foundation
import Synchronization
import Testing

@testable import FerryControl

/// A host's power (consolidation's standby, the scheduler's wake) on every backend this run has:
/// standby only empty (checked in the transaction), the agents' reports followed but for a fresh
/// standby, and a create that finds no room on hosts that are on placed on one in standby, which
/// the same transaction records waking.
@Suite struct HostPowerStoreTests {
    static func reporting(_ id: String, slots: Int, _ power: HostPower?) -> HostRegistration {
        var registration = host(id, slots: slots)
        registration.power = power
        return registration
    }

    @Test(arguments: StoreBackend.available)
    func standbyOnlyEmptyAndReportsFollowedButForAFreshStandby(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let clock = Mutex(Date())
        let store = try await backend.store(scratch, clock: { clock.withLock { $0 } })
        defer { backend.close(store) }
        _ = try await store.registerHost(host("h1", slots: 2))
        _ = try await store.registerHost(host("h2", slots: 2))
        let guest = try await GuestMoveStoreTests.runningGuest(store, "web")
        let busy = guest.host
        let idle = busy == "h1" ? "h2" : "h1"
        #expect(try await store.hosts().allSatisfy { $0.power == .on && $0.powerSince == nil })

        let refused = await controlError { () async throws(ControlError) in
            try await store.setHostPower(busy, to: .standby, from: [.on], cause: "consolidation")
        }
        #expect(refused?.code == .transitionRefused)
        #expect(refused?.message.contains(guest.id.description) == true, "\(String(describing: refused))")
        #expect(try await store.hosts().first { $0.id == busy }?.power == .on)

        let standby = try await store.setHostPower(idle, to: .standby, from: [.on], cause: "consolidation")
        #expect(standby.power == .standby && standby.powerSince != nil)
        #expect(!standby.takesGuests(at: clock.withLock { $0 }, heartbeatTimeout: .seconds(60)))
        #expect(standby.takesGuestsWhenOn(at: clock.withLock { $0 }, heartbeatTimeout: .seconds(60)))
        // A heartbeat the agent sent before it was told says on: the fresh standby stands.
        let stale = try await store.reportHost(Self.reporting(idle, slots: 2, .on)).host
        #expect(stale.power == .standby)
        // The agent says standby: as recorded.
        #expect(try await store.reportHost(Self.reporting(idle, slots: 2, .standby)).host.power == .standby)
        // Past the grace, an agent that says on (woken at its own API) is on.
        clock.withLock { $0 = $0.addingTimeInterval(HostRecord.standbyGraceSeconds + 1) }
        let woken = try await store.reportHost(Self.reporting(idle, slots: 2, .on)).host
        let since = try #require(woken.powerSince)
        #expect(woken.power == .on && abs(since.timeIntervalSince(clock.withLock { $0 })) < 0.002)
        // An agent in standby reports so (an agent restarted in standby).
        #expect(try await store.reportHost(Self.reporting(idle, slots: 2, .standby)).host.power == .standby)
        await #expect(throws: ControlError.self) {
            _ = try await store.setHostPower(idle, to: .waking, from: [.on], cause: "expects on")
        }
        await #expect(throws: ControlError.self) {
            _ = try await store.setHostPower("nowhere", to: .standby, from: nil, cause: "typo")
        }
    }

    @Test(arguments: StoreBackend.available)
    func aCreateWithNoRoomOnHostsThatAreOnWakesAHostInStandby(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let clock = Mutex(Date())
        let store = try await backend.store(scratch, clock: { clock.withLock { $0 } })
        defer { backend.close(store) }
        _ = try await store.registerHost(host("h1", slots: 1))
        _ = try await store.registerHost(host("h2", slots: 1))
        _ = try await store.registerHost(host("h3", slots: 1))
        _ = try await store.setHostPower("h2", to: .standby, from: [.on], cause: "consolidation")
        _ = try await store.setHostPower("h3", to: .standby, from: [.on], cause: "consolidation")
        let first = try await store.createGuest(request("a"), clientToken: nil, cause: "create").guest
        #expect(first.host == "h1")
        #expect(try await store.hosts().filter { $0.power == .waking }.isEmpty, "h1 had room: nothing woke")

        let second = try await store.createGuest(request("b"), clientToken: nil, cause: "create").guest
        #expect(second.host == "h2" && second.state == .pending)
        let hosts = try await store.hosts()
        #expect(hosts.first { $0.id == "h2" }?.power == .waking)
        #expect(hosts.first { $0.id == "h3" }?.power == .standby, "one host woke, not every one")
        // The waking host has no room left: the next create wakes the other.
        let third = try await store.createGuest(request("c"), clientToken: nil, cause: "create").guest
        #expect(third.host == "h3")
        let none = await controlError { () async throws(ControlError) in
            try await store.createGuest(request("d"), clientToken: nil, cause: "create")
        }
        #expect(none?.code == .insufficientCapacity)
        // The woken agent reports on.
        #expect(try await store.reportHost(Self.reporting("h2", slots: 1, .on)).host.power == .on)
        // A host holding a guest (the one placed while it woke) is not put in standby.
        await #expect(throws: ControlError.self) {
            _ = try await store.setHostPower("h2", to: .standby, from: nil, cause: "consolidation")
        }
    }
}
