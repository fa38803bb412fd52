import FerryHostModel
import Foundation

/// A group's scale-in with consolidation (pure; `GroupScaler` carries it out): the members and
/// hosts as `ScaleInConsolidation` sees them, from what the store holds.
extension GroupPlan {
    /// The level above which a member's metric makes it *loaded*: target tracking's target, a
    /// threshold policy's threshold (whichever way it compares), in percent.
    public static func loadedLevel(_ policy: ScalingPolicy) -> Double {
        switch policy {
        case .targetTracking(let parameters): parameters.target
        case .threshold(let parameters): parameters.threshold
        }
    }

    /// What the plan's scale-in does with consolidation, or nil when it takes a member not running
    /// (a pending one goes first, as the plan says) or none. The candidates are the running members
    /// that are neither `busy` nor moving, in the group's `scaleIn` order; a host holding another
    /// of the group's members (building, busy, moving, warm) is pinned. A host accepts the members
    /// when it takes guests at `now` and runs their kind; its free room is its capacity less
    /// `usage` (the store's `hostUsage`: a moving guest counted on both hosts).
    public static func consolidation(
        _ plan: GroupPlan, group: ScalingGroup, members: [CloudGuest], load: [GuestID: Double], busy: Set<GuestID>,
        hosts: [HostRecord], usage: [String: Resources], now: Date, heartbeatTimeout: Duration
    ) -> ScaleInPlan? {
        guard !plan.scaleIn.isEmpty, plan.scaleIn.allSatisfy({ $0.state == .running }) else { return nil }
        let free = members.filter { $0.state == .running && $0.movingTo == nil && !busy.contains($0.id) }
        let candidates = order(free, group.scaleIn, load: load)
        let ids = Set(candidates.map(\.id))
        let pinned = Set(
            members.filter { memberStates.contains($0.state) && !ids.contains($0.id) }.flatMap {
                [$0.host] + ($0.movingTo.map { [$0] } ?? [])
            })
        let level = loadedLevel(group.policy)
        let needsKVM = candidates.contains { $0.imageKind == .kvm }
        let view = hosts.map { host in
            ConsolidationHost(
                id: host.id, free: host.capacity - (usage[host.id] ?? .zero),
                accepts: host.takesGuests(at: now, heartbeatTimeout: heartbeatTimeout) && (host.kvm || !needsKVM),
                pinned: pinned.contains(host.id))
        }
        return ScaleInConsolidation.plan(
            members: candidates.map { member in
                ConsolidationMember(
                    id: member.id.hex, host: member.host, resources: member.resources,
                    loaded: ScaleInConsolidation.isLoaded(load[member.id], level: level))
            }, count: plan.scaleIn.count, hosts: view)
    }
}
