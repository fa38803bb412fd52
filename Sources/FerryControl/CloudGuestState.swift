/// Where a guest is in its life as the control plane sees it (not one host's view: that is
/// FerryHostModel's `GuestState`). Every change goes through `allows(_:)` and is journaled (time,
/// from, to, cause) in the transaction that makes it.
///
/// ```
/// pending ──▶ building ──▶ running ──▶ stopping ──▶ stopped ──▶ deleted
///    │            │  ▲ ▲        │ │         │          │  ▲ ▲
///    │            │  │ └────────┼─┼─────────┼── start ─┘  │ │
///    │            │  │          │ └─▶ suspended ──────────┼─┘ delete
///    │            │  └──────────┼────── resume ─┘         │
///    ▼            ▼             ▼           ▼             │
///  error ◀────────┴─────────────┴───────────┘             │
///    └──────────────────────────────────── delete ────────┘
/// ```
/// `pending`: recorded and placed on a host, nothing asked of the host yet. `building`: the host
/// is creating its disk and booting it. `error` carries a reason; a guest in `error` can only be
/// deleted. `deleted` is final: the row stays, for the journal and the bill.
///
/// `suspended`: its host saved its memory and devices to a file and its VMM exited (a group's
/// warm capacity). It keeps its place on the host (a resume must not find the host full) and is
/// not billed; a resume (`building`, the host restores it, then `running`) or a delete ends it.
///
/// `unknown`: the guest's host fell silent (no heartbeat within the timeout) while the guest was
/// building, running or stopping. Nothing is deleted or restarted elsewhere (the guest may well
/// still run: no split brain); when the host's agent is heard again its report decides: running
/// or stopped (or error, if the agent no longer has it). An unknown guest keeps its place and is
/// not billed (no one can say it ran).
public enum CloudGuestState: String, Sendable, Codable, CaseIterable, Hashable {
    case pending
    case building
    case running
    case stopping
    case stopped
    case suspended
    case deleted
    case error
    case unknown

    public var successors: Set<CloudGuestState> {
        switch self {
        // A pending guest deleted before its host was asked releases its place at once.
        case .pending: [.building, .error, .deleted]
        case .building: [.running, .error, .unknown]
        case .running: [.stopping, .suspended, .error, .unknown]
        case .stopping: [.stopped, .error, .unknown]
        // Started again: its host boots it from its disk, which stayed there.
        case .stopped: [.building, .deleted]
        // Resumed: its host restores it from its suspend file.
        case .suspended: [.building, .deleted]
        case .error: [.deleted]
        case .deleted: []
        // Decided by the host's report when its agent is heard again.
        case .unknown: [.running, .stopped, .suspended, .error]
        }
    }

    public func allows(_ next: CloudGuestState) -> Bool { successors.contains(next) }

    /// Whether a guest in this state holds its flavor's resources on its host and counts against
    /// its project's quota. A stopped or suspended guest keeps its place (its disk is there, and a
    /// start or resume must not find the host full); a guest in `error` or `deleted` holds nothing.
    public var holdsCapacity: Bool {
        switch self {
        case .pending, .building, .running, .stopping, .stopped, .suspended, .unknown: true
        case .deleted, .error: false
        }
    }
}
