import FerryHostModel

/// What a host's report (its agent's heartbeat) means for the guests the controller placed
/// there: pure, so that it is tested against every pair of states.
///
/// Only guests the controller holds as `unknown` (their host was silent) are settled here: the
/// agent's inventory is the truth about what runs on its host. A guest the agent runs, or is
/// pausing, is `running`; one that is suspended is `suspended` (it may be resumed); one that is
/// stopped or crashed is `stopped` (its disk is there; the user may start it); one the agent no longer has is `error`, with the reason. A
/// guest the agent is still starting, stopping or migrating stays unknown until a later report.
public enum HostReportDecision {
    public struct Change: Sendable, Equatable {
        public var id: GuestID
        public var from: CloudGuestState
        public var to: CloudGuestState
        public var errorReason: String?
        public var cause: String
    }

    public static func changes(
        host: String, controllerGuests: [CloudGuest], reported: [HostHeartbeat.Guest]
    ) -> [Change] {
        let onHost = Dictionary(reported.map { ($0.id, $0.state) }, uniquingKeysWith: { first, _ in first })
        var changes: [Change] = []
        for guest in controllerGuests where guest.state == .unknown {
            let cause = "host \(host) reported again"
            guard let state = onHost[guest.id] else {
                changes.append(
                    Change(
                        id: guest.id, from: .unknown, to: .error,
                        errorReason: "host \(host) came back without this guest (its agent's inventory has no"
                            + " guest \(guest.id)); delete it", cause: cause))
                continue
            }
            switch state {
            case .running, .paused:
                changes.append(Change(id: guest.id, from: .unknown, to: .running, cause: "\(cause): it runs"))
            case .suspended:
                changes.append(Change(id: guest.id, from: .unknown, to: .suspended, cause: "\(cause): it is suspended"))
            case .stopped, .crashed, .defined:
                changes.append(
                    Change(id: guest.id, from: .unknown, to: .stopped, cause: "\(cause): it is \(state.rawValue)"))
            case .starting, .stopping, .migratingIn, .migratingOut:
                continue
            }
        }
        return changes
    }
}
