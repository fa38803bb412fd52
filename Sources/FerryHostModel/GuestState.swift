/// Where a guest is in its life on one host. The inventory stores it; every change goes through
/// `GuestState.allows(_:to:)` and is journaled (time, from, to, cause) in the same transaction.
///
/// ```
/// defined ──start──▶ starting ──▶ running ◀──▶ paused
///    │                  │          │  │  ╲        │
///    │ (incoming)       ▼          │  │   ╲       ▼
///    ▼               crashed       │  │    ▶ suspended ──resume──▶ starting
/// migrating-in ──▶ running         │  ▼
///                                  │ stopping ──▶ stopped ──start──▶ starting
///                                  ▼
///                             migrating-out ──(handoff)──▶ removed from this host
///                                  └──(failed or cancelled)──▶ running
/// ```
/// A cold migration (docs/cold-migration.md) takes a `stopped` or `suspended` guest to
/// `migrating-out` on its source and back when it fails; on the destination its row goes from
/// `migrating-in` to `stopped` or `suspended` at registration, the moment it becomes the owner.
/// A guest whose process vanished is `crashed` from any state that has a process.
public enum GuestState: String, Sendable, Codable, CaseIterable, Hashable {
    case defined
    case starting
    case running
    case paused
    case suspended
    case stopping
    case stopped
    case migratingOut = "migrating-out"
    case migratingIn = "migrating-in"
    case crashed

    /// Whether a `ferry vmm` process should exist for a guest in this state.
    public var hasProcess: Bool {
        switch self {
        case .starting, .running, .paused, .stopping, .migratingOut, .migratingIn: true
        case .defined, .suspended, .stopped, .crashed: false
        }
    }

    /// The states this one may change to. Leaving the host (deletion, or the end of an outgoing
    /// migration) is not a state: the inventory removes the row and journals `to: removed`.
    public var successors: Set<GuestState> {
        switch self {
        case .defined: [.starting, .migratingIn]
        case .starting: [.running, .stopped, .crashed]
        case .running: [.paused, .suspended, .stopping, .migratingOut, .crashed]
        case .paused: [.running, .suspended, .stopping, .migratingOut, .crashed]
        case .suspended: [.starting, .stopped, .migratingOut]
        // A graceful stop that timed out without --force leaves the guest running.
        case .stopping: [.stopped, .running, .crashed]
        case .stopped: [.starting, .migratingOut]
        // A failed or cancelled migration leaves the guest where it was: running or paused (live),
        // stopped or suspended (cold).
        case .migratingOut: [.running, .paused, .crashed, .stopped, .suspended]
        // A live arrival ends running, or paused when the guest was paused on its source; a cold
        // one is registered stopped or suspended.
        case .migratingIn: [.running, .paused, .crashed, .stopped, .suspended]
        case .crashed: [.starting, .stopped]
        }
    }

    public func allows(_ next: GuestState) -> Bool { successors.contains(next) }

    /// Whether the inventory may remove a guest in this state: never while a process may run it
    /// (`migrating-out` leaves only through a handoff, which the migration removes itself).
    public var removable: Bool { !hasProcess }
}
