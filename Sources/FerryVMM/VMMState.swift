/// Where the guest of a `ferry vmm` process is, as `status` and `state` events report it. The
/// agent maps these onto its inventory's `GuestState` (`running`, `paused`, `migrating-out`,
/// `migrating-in`, `stopping`, `stopped`, `suspended` are the same names; `left` ends the row on
/// this host; `failed` and a vanished process are `crashed`).
public enum VMMState: String, Sendable, CaseIterable {
    /// Waiting for an incoming migration (`--incoming`), or receiving one.
    case migratingIn = "migrating-in"
    case running
    case paused
    /// An outgoing migration is under way; the guest runs until its blackout.
    case migratingOut = "migrating-out"
    /// A graceful shutdown is stopping the vCPUs and flushing.
    case stopping
    /// Stopped and flushed; the process exits 0.
    case stopped
    /// Saving the guest's state for `--restore`; the process exits 0 once it is written.
    case suspending
    case suspended
    /// The guest runs on the destination now (handoff done); the process exits 0.
    case left
    /// The handoff's outcome is unknown (the destination may run the guest): the guest stays
    /// paused here, nothing but `hello`, `status`, `watch`, `console` and `kill` is accepted.
    case unresolved
    /// The incoming migration or the guest failed; the process exits 1.
    case failed

    /// Whether the process ends in this state.
    public var isFinal: Bool { [.stopped, .suspended, .left, .failed].contains(self) }
}
