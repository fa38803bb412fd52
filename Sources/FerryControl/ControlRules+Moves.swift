import FerryHostModel
import Foundation

/// How a guest moves between hosts: `live` (a live migration: a running guest, a downtime of
/// milliseconds) or `cold` (docs/cold-migration.md: a running guest is shut down, its
/// configuration and files move, it is started on the other host; a stopped one stays stopped).
public enum MoveKind: String, Sendable, Hashable {
    case live
    case cold
}

/// The decisions of a guest's move (a live migration between hosts) every backend makes the same
/// way: which host it may go to, and the rows a begin, a finish and an abandon leave. Pure.
extension ControlRules {
    /// The host `guest` (as read in the transaction) moves to: `destination`, checked, or with
    /// none the scheduler's choice among the other hosts. Only a `running` guest (at `generation`,
    /// if given) that is not moving already goes, to another host that takes guests, runs its
    /// kind (KVM for a `kvm` image) and has its resources free as `usage` counts them. With a
    /// `maxMovesPerHost`, neither the guest's host nor the destination may have that many `moves`
    /// under way already (in or out, `movesByHostSQL`): `moveLimit`; the scheduler's choice leaves
    /// such hosts out.
    public static func moveDestination(
        _ guest: CloudGuest, to destination: String?, generation: Int64?, hosts: [HostRecord],
        usage: [String: Resources], policy: PlacementPolicy, now: Date, heartbeatTimeout: Duration,
        moves: [String: Int] = [:], maxMovesPerHost: Int? = nil, kind: MoveKind = .live
    ) throws(ControlError) -> String {
        if let generation, generation != guest.generation {
            throw ControlError(
                .stale,
                "guest \(guest.id) is at generation \(guest.generation), not \(generation): read it again and decide"
                    + " again")
        }
        if let movingTo = guest.movingTo {
            throw ControlError(
                .transitionRefused,
                "guest \(guest.id) is already moving from host \(guest.host) to host \(movingTo): wait for that move"
                    + " to end")
        }
        guard guest.state == .running || (kind == .cold && guest.state == .stopped) else {
            throw ControlError(
                .transitionRefused,
                "guest \(guest.id) is \(guest.state.rawValue) on host \(guest.host); only a running guest moves live"
                    + " (and a running or stopped one cold)")
        }
        let limit = maxMovesPerHost ?? Int.max
        try checkMoveLimit(guest.host, moves, limit, guest.id)
        let request = PlacementRequest(guest.resources, needsKVM: guest.imageKind == .kvm)
        let candidates = hosts.filter { $0.id != guest.host }.map { host in
            PlacementCandidate(
                hostID: host.id, takesGuests: host.takesGuests(at: now, heartbeatTimeout: heartbeatTimeout),
                free: host.capacity - (usage[host.id] ?? .zero), runsKVM: host.kvm, quarantined: host.quarantined)
        }
        guard let destination else {
            let open = candidates.filter { (moves[$0.hostID] ?? 0) < limit }
            switch Placement.choose(request, among: open, policy: policy) {
            case .host(let id): return id
            case .none(let refusal):
                if case .host(let id) = Placement.choose(request, among: candidates, policy: policy) {
                    try checkMoveLimit(id, moves, limit, guest.id)
                }
                throw ControlError(
                    .insufficientCapacity, "no host but \(guest.host) can take guest \(guest.id): \(refusal)")
            }
        }
        if destination == guest.host {
            throw ControlError(
                .invalidArgument, "guest \(guest.id) is on host \(destination) already: name another host")
        }
        guard let candidate = candidates.first(where: { $0.hostID == destination }) else {
            throw ControlError(.notFound, "no host \(destination) is registered")
        }
        try checkTakes(candidate, request, guest.id)
        try checkMoveLimit(destination, moves, limit, guest.id)
        return destination
    }

    /// Refuses a move in or out of `host` when it has `limit` moves under way already.
    static func checkMoveLimit(_ host: String, _ moves: [String: Int], _ limit: Int, _ id: GuestID)
        throws(ControlError)
    {
        let count = moves[host] ?? 0
        guard count < limit else {
            throw ControlError(
                .moveLimit,
                "host \(host) has \(count) moves under way, the limit per host (--max-moves-per-host \(limit)):"
                    + " guest \(id) stays; move it once one of them has ended")
        }
    }

    /// The moves under way per host, in or out (columns host, moves; the same SQL on SQLite and
    /// PostgreSQL).
    public static let movesByHostSQL = """
        SELECT host, COUNT(*) AS moves FROM (SELECT host FROM guests WHERE moving_to IS NOT NULL
        UNION ALL SELECT moving_to AS host FROM guests WHERE moving_to IS NOT NULL) AS moving GROUP BY host
        """

    /// Refuses `candidate` unless it takes guests, runs the guest's kind and has room.
    static func checkTakes(_ candidate: PlacementCandidate, _ request: PlacementRequest, _ id: GuestID)
        throws(ControlError)
    {
        let host = candidate.hostID
        if candidate.quarantined {
            throw ControlError(
                .insufficientCapacity,
                "host \(host) is quarantined (its hardware is failing) and takes no guests: guest \(id) stays;"
                    + " pick another host")
        }
        guard candidate.takesGuests else {
            throw ControlError(
                .insufficientCapacity,
                "host \(host) takes no guests (degraded, or silent past the heartbeat timeout): guest \(id) stays;"
                    + " check its agent or pick another host")
        }
        guard candidate.accepts(request) else {
            throw ControlError(
                .insufficientCapacity,
                "host \(host) reports no usable /dev/kvm and guest \(id) is a kvm guest: pick a host with KVM")
        }
        guard candidate.free.fits(request.resources) else {
            throw ControlError(
                .insufficientCapacity,
                "host \(host) has \(candidate.free) free; guest \(id) needs \(request.resources): pick another host or"
                    + " free room there")
        }
    }

    /// Refuses to finish or abandon the move of `guest` unless it is moving (to `expected`, if
    /// given).
    public static func checkMoving(_ guest: CloudGuest, to expected: String? = nil) throws(ControlError) {
        guard let movingTo = guest.movingTo, expected.map({ $0 == movingTo }) ?? true else {
            throw ControlError(
                .stale,
                "guest \(guest.id) is not moving\(expected.map { " to host \($0)" } ?? "") (it is on host \(guest.host)"
                    + "\(guest.movingTo.map { ", moving to \($0)" } ?? "")): read it again")
        }
    }

    /// The journal's cause of a change of migration policy.
    public static func policyCause(_ guest: CloudGuest, to policy: MigrationPolicy, _ cause: String) -> String {
        "migration policy \(guest.migrationPolicy.rawValue) → \(policy.rawValue) (\(cause))"
    }

    /// Refuses a change of policy of a deleted guest.
    public static func checkPolicyChange(_ guest: CloudGuest) throws(ControlError) {
        guard guest.state != .deleted else {
            throw ControlError(.transitionRefused, "guest \(guest.id) is deleted: its migration policy stays as it was")
        }
    }

    /// The journal's cause of a begun move.
    public static func beginMoveCause(_ guest: CloudGuest, to destination: String, _ cause: String) -> String {
        "moving to \(destination) from \(guest.host) (\(cause))"
    }

    /// The journal's cause of a finished move (`guest` as read before it).
    public static func finishMoveCause(_ guest: CloudGuest, _ cause: String) -> String {
        "moved from \(guest.host) to \(guest.movingTo ?? "?") (\(cause))"
    }

    /// The journal's cause of an abandoned move (`guest` as read before it).
    public static func abandonMoveCause(_ guest: CloudGuest, _ cause: String) -> String {
        "stays on \(guest.host); the move to \(guest.movingTo ?? "?") was abandoned (\(cause))"
    }

    /// The guest as a move's step leaves it: on `host`, moving to `movingTo`, a generation on (its
    /// state and the time of its state unchanged).
    public static func moved(_ guest: CloudGuest, host: String, movingTo: String?) -> CloudGuest {
        var changed = guest
        changed.host = host
        changed.movingTo = movingTo
        changed.generation += 1
        return changed
    }
}
