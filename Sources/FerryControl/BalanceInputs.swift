import FerryHostModel
import Foundation

/// What a balancing pass (`BalancePass.plan`) sees, made from the store's rows; pure (the
/// controller's `ClusterBalancer` reads the rows and the clock).
///
/// - **Hosts**: those that take guests now (`HostRecord.takesGuests`: healthy or warning, heard
///   from within the heartbeat timeout, `active`: not draining, drained or quarantined). The
///   others are left out with their guests: a drain or an evacuation empties them, and a silent
///   host's guests cannot move live.
/// - **Guests**: every guest that holds capacity on those hosts, so that room is counted. A
///   guest may move when it runs, is not moving, is in no lease's pool (its lease keeps it on its
///   slot's host) and is not `busy` (a group's stop or delete in flight). A moving guest weighs on
///   its source and holds room on its destination (listed there, weightless, as `moving:ID`).
/// - **Load**: `Telemetry.vcpuLoad` over the window (vCPU-units); a guest without samples in the
///   window weighs nothing.
/// - **History**: from the journal of begun moves (`ControlStore.moveJournal`): the balancing moves
///   begun in the last hour (cause `balance: …`; a move that then failed counts: it was tried),
///   and when each guest's last move of any cause began (the cool-down counts from it, so a move
///   that failed is not tried again within the cool-down either).
public struct BalanceInputs: Sendable, Equatable {
    public var hosts: [ClusterHost]
    public var guests: [BalanceGuest]
    /// Balancing moves begun within the hour before `now`.
    public var movesInLastHour: Int

    public init(hosts: [ClusterHost], guests: [BalanceGuest], movesInLastHour: Int) {
        self.hosts = hosts
        self.guests = guests
        self.movesInLastHour = movesInLastHour
    }

    /// What the journal's cause of a balancing move names after `moving to D from S (`.
    public static let causePrefix = "balance: "

    /// The cause a balancing move of a guest off `host`, at `load` over `threshold`, is begun with:
    /// "balance: host h1 at 0.93 > 0.80".
    public static func cause(host: String, load: Double, threshold: Double) -> String {
        causePrefix + "host \(host) at \(BalancePass.format(load)) > \(BalancePass.format(threshold))"
    }

    /// Whether the journal entry begins a balancing move.
    public static func isBalanceMove(_ entry: CloudJournalEntry) -> Bool {
        entry.cause.hasPrefix("moving to ") && entry.cause.contains(" (" + causePrefix)
    }

    /// The balancing moves begun in the hour before `now`, and when each guest's last move began.
    public static func history(_ entries: [CloudJournalEntry], now: Date) -> (
        movesInLastHour: Int, lastMove: [GuestID: Date]
    ) {
        var count = 0
        var last: [GuestID: Date] = [:]
        for entry in entries where entry.cause.hasPrefix("moving to ") {
            if isBalanceMove(entry), entry.time > now.addingTimeInterval(-3600), entry.time <= now { count += 1 }
            if entry.time > last[entry.guestID] ?? .distantPast { last[entry.guestID] = entry.time }
        }
        return (count, last)
    }

    /// The pass's picture of the cluster at `now`. `dirtyRates`: what each guest's last migration
    /// measured; a guest never measured counts at `fallbackDirtyRate` (or 0).
    public static func make(
        hosts: [HostRecord], guests: [CloudGuest], samples: [GuestID: [GuestSample]], moveJournal: [CloudJournalEntry],
        busy: Set<GuestID>, dirtyRates: [GuestID: Double], fallbackDirtyRate: Double?, now: Date, window: Duration,
        heartbeatTimeout: Duration
    ) -> BalanceInputs {
        let taking = hosts.filter { $0.takesGuests(at: now, heartbeatTimeout: heartbeatTimeout) }
        let ids = Set(taking.map(\.id))
        let (count, lastMove) = history(moveJournal, now: now)
        let since = Int64((now.timeIntervalSince1970 - seconds(window)) * 1000)
        var pictured: [BalanceGuest] = []
        for guest in guests where guest.state.holdsCapacity {
            let profile = MigrationProfile(
                memoryBytes: Int64(guest.resources.memoryBytes),
                dirtyBytesPerSecond: dirtyRates[guest.id] ?? fallbackDirtyRate ?? 0)
            if ids.contains(guest.host) {
                let load =
                    guest.state == .running
                    ? Telemetry.vcpuLoad(
                        samples[guest.id] ?? [], vcpus: guest.resources.vcpus, sinceMilliseconds: since) ?? 0 : 0
                let movable =
                    guest.state == .running && guest.movingTo == nil && guest.request.lease == nil
                    && !busy.contains(guest.id)
                pictured.append(
                    BalanceGuest(
                        id: guest.id.description, host: guest.host, resources: guest.resources, load: load,
                        needsKVM: guest.imageKind == .kvm, profile: profile, movable: movable,
                        secondsSinceLastMove: lastMove[guest.id].map { max(0, now.timeIntervalSince($0)) }))
            }
            if let destination = guest.movingTo, ids.contains(destination) {
                pictured.append(
                    BalanceGuest(
                        id: "moving:\(guest.id)", host: destination, resources: guest.resources, load: 0,
                        needsKVM: guest.imageKind == .kvm, profile: profile, movable: false))
            }
        }
        let pictureHosts = taking.map { ClusterHost(id: $0.id, capacity: $0.capacity, runsKVM: $0.kvm) }
        return BalanceInputs(hosts: pictureHosts, guests: pictured, movesInLastHour: count)
    }

    /// The pass's parameters: the settings, with the moves the hourly cap still allows.
    public static func parameters(
        threshold: Double, target: Double, margin: Double, maxMovesPerHour: Int, movesInLastHour: Int,
        coolDown: Duration, costModel: MigrationCostModel
    ) -> BalanceParameters {
        BalanceParameters(
            highThreshold: threshold, target: target, margin: margin,
            movesAllowed: max(0, maxMovesPerHour - movesInLastHour), coolDownSeconds: seconds(coolDown),
            costModel: costModel)
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}
