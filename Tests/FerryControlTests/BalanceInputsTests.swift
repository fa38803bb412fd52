import FerryHostModel
import FerryTestSupport
import Foundation
import Testing

@testable import FerryControl

/// What a balancing pass sees, made from the store's rows: a guest's load from its telemetry, the
/// hosts and guests that take part, the hourly count and cool-downs from the journal, and why a
/// pass chose nothing.
@Suite struct BalanceInputsTests {
    static let now = Date(timeIntervalSince1970: 1_700_000_000)
    static var nowMs: Int64 { Int64(now.timeIntervalSince1970 * 1000) }

    /// Samples a second apart over the last `seconds`, the vCPUs `busy` (fraction) of the time,
    /// publishing `permille` if given.
    static func samples(busy: Double, vcpus: Int = 1, permille: Int? = nil, seconds: Int = 10) -> [GuestSample] {
        (0...seconds).map { second in
            GuestSample(
                timeMilliseconds: nowMs - Int64(seconds - second) * 1000,
                cpuNanoseconds: UInt64(Double(second) * busy * 1e9 * Double(vcpus)), vcpus: vcpus,
                loadPermille: permille)
        }
    }

    @Test func aGuestsLoadIsTheLargerOfItsCPUUseAndItsPublishedDemandInVCPUUnits() {
        let since = Self.nowMs - 5000
        // Half of two vCPUs used: one vCPU-unit.
        #expect(Telemetry.vcpuLoad(Self.samples(busy: 0.5, vcpus: 2), vcpus: 2, sinceMilliseconds: since) == 1)
        // It wants 90% but gets 40% (a crowded host): its demand counts.
        let crowded = Telemetry.vcpuLoad(Self.samples(busy: 0.4, permille: 900), vcpus: 1, sinceMilliseconds: since)
        #expect(abs((crowded ?? 0) - 0.9) < 1e-9)
        // It says 10% but uses 70%: its use counts.
        let liar = Telemetry.vcpuLoad(Self.samples(busy: 0.7, permille: 100), vcpus: 1, sinceMilliseconds: since)
        #expect(abs((liar ?? 0) - 0.7) < 1e-9)
        // Nothing in the window: nil; a counter that went down (a move) gives nothing for its interval.
        #expect(
            Telemetry.vcpuLoad(Self.samples(busy: 1, seconds: 3), vcpus: 1, sinceMilliseconds: Self.nowMs + 1) == nil)
        let moved = [
            GuestSample(timeMilliseconds: Self.nowMs - 3000, cpuNanoseconds: 9_000_000_000, vcpus: 1),
            GuestSample(timeMilliseconds: Self.nowMs - 2000, cpuNanoseconds: 100_000_000, vcpus: 1),
            GuestSample(timeMilliseconds: Self.nowMs - 1000, cpuNanoseconds: 400_000_000, vcpus: 1),
        ]
        #expect(abs((Telemetry.vcpuLoad(moved, vcpus: 1, sinceMilliseconds: since) ?? 0) - 0.3) < 1e-9)
    }

    static func hostRecord(
        _ id: String, vcpus: Int = 4, mode: HostMode = .active, health: HostHealth = .healthy,
        heardSecondsAgo: Double = 0
    ) -> HostRecord {
        HostRecord(
            id: id, address: "10.0.0.1:7070",
            capacity: Resources(vcpus: vcpus, memoryBytes: 4 << 30, diskBytes: 1 << 40),
            health: health, lastHeartbeat: now.addingTimeInterval(-heardSecondsAgo), registeredAt: now, mode: mode)
    }

    static func guest(
        _ host: String, state: CloudGuestState = .running, movingTo: String? = nil, lease: String? = nil
    ) -> CloudGuest {
        var request = GuestRequest(project: "alpha", name: try! GuestName("g"), flavor: "small", image: "tiny")
        request.lease = lease
        return CloudGuest(
            id: GuestID.random(), request: request, resources: Resources(vcpus: 1, memoryBytes: 1 << 30, diskBytes: 0),
            pricePerSecondMicros: 1, imageKind: .builtin, diskTemplatePath: "/t", host: host, state: state,
            errorReason: nil, clientToken: nil, generation: 1, createdAt: now, stateSince: now, movingTo: movingTo)
    }

    static func journal(_ guest: GuestID, secondsAgo: Double, cause: String) -> CloudJournalEntry {
        CloudJournalEntry(
            sequence: 1, guestID: guest, time: now.addingTimeInterval(-secondsAgo), from: .running, to: .running,
            cause: cause)
    }

    /// Hosts that do not take guests (draining, drained, failing, degraded, silent) are left out with
    /// their guests; a running guest may move unless it is moving, leased or busy; a moving guest
    /// weighs on its source and holds room on its destination; stopped guests hold room and weigh
    /// nothing; the journal gives the hourly count (balancing moves only) and each guest's last move.
    @Test func thePassSeesTheHostsThatTakeGuestsAndTheirGuests() {
        let hosts = [
            Self.hostRecord("h1"), Self.hostRecord("h2"), Self.hostRecord("h3", mode: .draining),
            Self.hostRecord("h4", health: .failing), Self.hostRecord("h5", heardSecondsAgo: 60),
            Self.hostRecord("h6", health: .warning),
        ]
        let busy = Self.guest("h1")
        let leased = Self.guest("h1", lease: "l-1")
        let moving = Self.guest("h1", movingTo: "h2")
        let stopped = Self.guest("h2", state: .stopped)
        let idle = Self.guest("h2")
        let scaled = Self.guest("h2")
        let elsewhere = Self.guest("h3")
        let silent = Self.guest("h5")
        let samples = [busy.id: Self.samples(busy: 0.9), moving.id: Self.samples(busy: 0.5), idle.id: []]
        let journal = [
            Self.journal(busy.id, secondsAgo: 120, cause: "moving to h1 from h2 (balance: host h2 at 0.91 > 0.80)"),
            Self.journal(idle.id, secondsAgo: 300, cause: "moving to h2 from h1 (drain of host h1)"),
            Self.journal(idle.id, secondsAgo: 4000, cause: "moving to h1 from h2 (balance: host h2 at 0.95 > 0.80)"),
        ]
        let inputs = BalanceInputs.make(
            hosts: hosts, guests: [busy, leased, moving, stopped, idle, scaled, elsewhere, silent], samples: samples,
            moveJournal: journal, busy: [scaled.id], dirtyRates: [busy.id: 5e6], fallbackDirtyRate: 1e6,
            now: Self.now, window: .seconds(5), heartbeatTimeout: .seconds(5))
        #expect(inputs.hosts.map(\.id) == ["h1", "h2", "h6"])
        #expect(inputs.movesInLastHour == 1, "the drain's move and the one over an hour ago do not count")
        let byID = Dictionary(uniqueKeysWithValues: inputs.guests.map { ($0.id, $0) })
        #expect(inputs.guests.count == 7, "\(inputs.guests.map(\.id))")
        #expect(byID[elsewhere.id.description] == nil && byID[silent.id.description] == nil)
        let seen = byID[busy.id.description]
        #expect(seen?.movable == true && abs((seen?.load ?? 0) - 0.9) < 1e-9 && seen?.secondsSinceLastMove == 120)
        #expect(seen?.profile == MigrationProfile(memoryBytes: 1 << 30, dirtyBytesPerSecond: 5e6))
        #expect(byID[leased.id.description]?.movable == false, "a lease's guest stays on its slot")
        #expect(byID[scaled.id.description]?.movable == false, "a group's busy member stays")
        #expect(byID[moving.id.description]?.movable == false && byID[moving.id.description]?.host == "h1")
        #expect(abs((byID[moving.id.description]?.load ?? 0) - 0.5) < 1e-9)
        let room = byID["moving:\(moving.id)"]
        #expect(room?.host == "h2" && room?.load == 0 && room?.movable == false)
        #expect(byID[stopped.id.description]?.movable == false && byID[stopped.id.description]?.load == 0)
        let quiet = byID[idle.id.description]
        #expect(quiet?.movable == true && quiet?.load == 0 && quiet?.secondsSinceLastMove == 300)
        #expect(quiet?.profile.dirtyBytesPerSecond == 1e6, "never measured: the median")

        let parameters = BalanceInputs.parameters(
            threshold: 0.8, target: 0.6, margin: 0.05, maxMovesPerHour: 12, movesInLastHour: inputs.movesInLastHour,
            coolDown: .seconds(600), costModel: MigrationCostModel(linkBytesPerSecond: 1e9))
        #expect(parameters.movesAllowed == 11 && parameters.coolDownSeconds == 600)
        #expect(
            BalanceInputs.parameters(
                threshold: 0.8, target: 0.6, margin: 0.05, maxMovesPerHour: 1, movesInLastHour: 3, coolDown: .zero,
                costModel: parameters.costModel
            ).movesAllowed == 0)
        #expect(BalanceInputs.cause(host: "h1", load: 0.925, threshold: 0.8) == "balance: host h1 at 0.93 > 0.80")
    }

    static func clusterGuest(_ id: String, _ host: String, load: Double, movable: Bool = true, moved: Double? = nil)
        -> BalanceGuest
    {
        BalanceGuest(
            id: id, host: host, resources: Resources(vcpus: 1, memoryBytes: 1 << 30, diskBytes: 0), load: load,
            profile: MigrationProfile(memoryBytes: 1 << 30, dirtyBytesPerSecond: 0), movable: movable,
            secondsSinceLastMove: moved)
    }

    /// Each reason a pass chooses nothing, in the order they are told: below threshold, cap
    /// reached, nothing movable, cool-down, no legal move.
    @Test func whyAPassChoseNothing() {
        let hosts = ["a", "b"].map {
            ClusterHost(id: $0, capacity: Resources(vcpus: 4, memoryBytes: 64 << 30, diskBytes: 0))
        }
        func idle(_ guests: [BalanceGuest], allowed: Int = 5, cool: Double = 600) -> BalanceIdle {
            let parameters = BalanceParameters(
                highThreshold: 0.8, target: 0.6, margin: 0.05, movesAllowed: allowed, coolDownSeconds: cool)
            #expect(BalancePass.plan(hosts: hosts, guests: guests, parameters: parameters).moves.isEmpty)
            return BalancePass.idle(hosts: hosts, guests: guests, parameters: parameters)
        }
        let cool = idle([Self.clusterGuest("g1", "a", load: 3), Self.clusterGuest("g2", "b", load: 1)])
        #expect(
            cool.kind == .belowThreshold
                && cool.text == "no host is above the threshold 0.80 (the most loaded, a, at 0.75)")
        let hot = (1...4).map { Self.clusterGuest("g\($0)", "a", load: 0.95) }
        let capped = idle(hot, allowed: 0)
        #expect(capped.kind == .capReached && capped.text.hasPrefix("host a at 0.95 > 0.80, but the hourly cap"))
        #expect(
            idle(
                hot.map {
                    var g = $0
                    g.movable = false
                    return g
                }
            ).kind == .nothingMovable)
        let recent = idle(
            hot.map {
                var g = $0
                g.secondsSinceLastMove = 30
                return g
            })
        #expect(recent.kind == .coolDown && recent.text.contains("cool-down of 600 s"), "\(recent.text)")
        // b is at 0.6 already: no destination stays below 0.55.
        let full = idle(hot + (1...3).map { Self.clusterGuest("b\($0)", "b", load: 0.8) })
        #expect(full.kind == .noLegalMove, "\(full.text)")
    }
}
