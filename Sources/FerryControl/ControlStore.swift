import FerryHostModel
import Foundation
import Logging

/// The controller's state: hosts, catalogue, projects and guests, and the journal of every
/// guest's states. Each operation is one transaction; every state change is journaled (time,
/// from, to, cause) in the transaction that makes it; a create checks the quota and the hosts'
/// capacity in the transaction that consumes them. `SQLiteControlStore` is the embedded
/// implementation; another backend implements the same protocol and passes the same tests.
public protocol ControlStore: Sendable {
    /// Adds a host, or updates the address and capacity of a known one (an agent restarting),
    /// with the health its report gives (`HostRecord.reported`: the time it turned failing and
    /// its deadline kept while it stays failing), heard from now, in one transaction: the host as
    /// it is now and its health before.
    func reportHost(_ registration: HostRegistration) async throws(ControlError) -> HostHealthChange
    /// Records that the host's agent was heard from now, and its health (as `reportHost` does).
    func heartbeat(host: String, health: HostHealthReport) async throws(ControlError) -> HostRecord
    func hosts() async throws(ControlError) -> [HostRecord]
    /// Puts the host in `mode` if it is in one of `from` (nil: whatever it is), and records when
    /// and why (`ControlRules.hostModeChange`); the mode it has already is no change.
    func setHostMode(_ host: String, to mode: HostMode, from: Set<HostMode>?, cause: String)
        async throws(ControlError) -> HostRecord
    /// Puts the host's power to `power` if it is in one of `from` (nil: whatever it is), and records
    /// when (`ControlRules.hostPowerChange`): to `standby` only when no guest holds capacity on it
    /// or moves to it, checked in the same transaction (a create placed there first keeps it on).
    func setHostPower(_ host: String, to power: HostPower, from: Set<HostPower>?, cause: String)
        async throws(ControlError) -> HostRecord
    /// What each host's guests hold (guests in states that hold capacity), by host ID.
    func hostUsage() async throws(ControlError) -> [String: Resources]

    func addFlavor(_ flavor: Flavor) async throws(ControlError)
    func flavors() async throws(ControlError) -> [Flavor]
    func addImage(_ image: Image) async throws(ControlError)
    func images() async throws(ControlError) -> [Image]
    func addProject(_ project: Project) async throws(ControlError)
    func setQuota(_ quota: Quota, project: String) async throws(ControlError)
    func projects() async throws(ControlError) -> [Project]
    func usage(project: String) async throws(ControlError) -> ProjectUsage

    /// Records a guest `pending` on a host the scheduler chose, in one transaction that checks
    /// the project's quota and the hosts' free capacity as recorded. With a client token, at most
    /// one guest per token and project: the same request again returns that guest (`created`
    /// false); another request with the same token is refused (`clientTokenMismatch`).
    /// With `scalingGroup`, the guest is a member of that group (see `// MARK: scaling groups`).
    func createGuest(_ request: GuestRequest, clientToken: String?, cause: String, scalingGroup: String?)
        async throws(ControlError) -> GuestCreation

    func guest(id: GuestID) async throws(ControlError) -> CloudGuest?
    /// A project's guests (deleted ones too), oldest first.
    func guests(project: String) async throws(ControlError) -> [CloudGuest]
    /// The guests placed on a host in any of `states`, oldest first.
    func guests(host: String, states: Set<CloudGuestState>) async throws(ControlError) -> [CloudGuest]
    /// Every guest in any of `states`, oldest first (a controller starting again finds the
    /// creates it had not finished).
    func guests(states: Set<CloudGuestState>) async throws(ControlError) -> [CloudGuest]

    /// Changes a guest's state from `expected` to `next`. Refused unless the guest is in
    /// `expected` (and at `generation`, if given) and `expected.allows(next)`. `error` needs a
    /// reason.
    func transition(
        _ id: GuestID, from expected: CloudGuestState, to next: CloudGuestState, cause: String, errorReason: String?,
        generation: Int64?
    ) async throws(ControlError) -> CloudGuest

    // MARK: moves

    /// Records that the `running` guest (at `generation`, if given) is being live-migrated to
    /// `host`, or with nil to the host the scheduler picks among the others
    /// (`ControlRules.moveDestination`), checked in the transaction that reads the hosts and what
    /// their guests hold: from now until the move ends the guest holds its resources on both
    /// hosts. Journaled running → running ("moving to HOST"); a generation on. Refused for a guest
    /// already moving, not running, or a host that does not take it; with `maxMovesPerHost`, for a
    /// guest whose host or destination has that many moves under way (`moveLimit`; the scheduler
    /// then picks among the others).
    ///
    /// A `cold` move (the guest shut down, its files moved, started again on the other host)
    /// takes a `running` or a `stopped` guest, which keeps its state while it moves.
    func beginMove(
        _ id: GuestID, to host: String?, cause: String, generation: Int64?, maxMovesPerHost: Int?, kind: MoveKind
    ) async throws(ControlError) -> CloudGuest
    /// The move ended with the guest on the host it moved to: `host` becomes that host, the
    /// source's share is released; journaled (the state unchanged), a generation on.
    func finishMove(_ id: GuestID, cause: String) async throws(ControlError) -> CloudGuest
    /// The move ended with the guest where it was: the destination's share is released;
    /// journaled (the state unchanged), a generation on.
    func abandonMove(_ id: GuestID, cause: String) async throws(ControlError) -> CloudGuest

    /// Sets how the guest may be moved off a host that is emptied; journaled (its state to the
    /// same state, `ControlRules.policyCause`), a generation on. The policy it has already
    /// changes nothing; a deleted guest is refused.
    func setMigrationPolicy(_ id: GuestID, to policy: MigrationPolicy, cause: String) async throws(ControlError)
        -> CloudGuest

    /// The guest's journal, oldest first.
    func journal(of id: GuestID) async throws(ControlError) -> [CloudJournalEntry]
    /// The latest `limit` rows of the whole journal, oldest first.
    func journal(latest limit: Int) async throws(ControlError) -> [CloudJournalEntry]
    /// The journal's entries that begin a move (cause `moving to …`, `ControlRules.beginMoveCause`)
    /// at or after `since`, of every guest, oldest first: what the balancing pass counts its
    /// hourly moves and the guests' cool-downs from.
    func moveJournal(since: Date) async throws(ControlError) -> [CloudJournalEntry]
    /// What billing needs for the project's `period`, read in one statement (one snapshot): each
    /// guest of the project that may have run in it (`GuestJournal.periodCondition`) with all its
    /// journal rows, guests oldest first. An unknown project is `notFound`.
    func billingJournals(project: String, period: BillingPeriod) async throws(ControlError) -> [GuestJournal]

    /// Keeps telemetry samples; a second sample of a guest in the same millisecond is dropped.
    /// Not journaled, and outside the write lock that creates take: telemetry never delays them.
    func recordSamples(_ samples: [GuestSampleRow]) async throws(ControlError)
    /// The samples of `guests` at or after `sinceMilliseconds`, oldest first, by guest.
    func samples(guests: [GuestID], sinceMilliseconds: Int64) async throws(ControlError) -> [GuestID: [GuestSample]]
    /// Removes the samples older than `beforeMilliseconds`; how many.
    func pruneSamples(beforeMilliseconds: Int64) async throws(ControlError) -> Int

    /// Records the lease if `ControlRules.admitLease` admits it against what the same
    /// transaction reads (hosts, the guests' resources, the admitted leases that end after it
    /// starts); otherwise throws its refusal. An unknown project or flavor is `notFound`.
    func admitLease(_ submission: LeaseSubmission) async throws(ControlError) -> LeaseRecord
    /// The project's leases, by start.
    func leases(project: String) async throws(ControlError) -> [LeaseRecord]
    func lease(id: String) async throws(ControlError) -> LeaseRecord?
    /// admitted → cancelled (again: the same answer); its capacity is free for others (a
    /// delivered lease's slots too: it ends).
    func cancelLease(id: String) async throws(ControlError) -> LeaseRecord

    // MARK: lease delivery

    /// The admitted leases not ended whose window began by `now`, with their slots: the
    /// controller's lease keeper delivers, watches and ends them.
    func leasesInWindow(at now: Date) async throws(ControlError) -> [LeaseRecord]
    /// In one write transaction: plans where the lease's units go (`ControlRules.planDelivery`
    /// over the rows as they are), records its slots (from then on on-demand placement leaves
    /// them alone) and makes a waiting lease `delivering`. The plan's moves are the caller's.
    func planLeaseDelivery(id: String) async throws(ControlError) -> (LeaseRecord, DeliveryPlan)
    /// Records a change of phase (`ControlRules.leaseChanged`: the SLA record's bookkeeping; an
    /// ended lease's slots are freed).
    func changeLease(id: String, to phase: LeasePhase, shortUnits: Int, note: String) async throws(ControlError)
        -> LeaseRecord
    /// Extends the lease by its length if admission admits the next window beside everything
    /// else; otherwise throws the refusal.
    func extendLease(id: String) async throws(ControlError) -> LeaseRecord
    // MARK: scaling groups

    /// Records an active group at its desired count (`min` unless given) and journals that first
    /// action (0 → desired); its members are made by the controller (`GroupScaler`). Refused if
    /// the project, flavor or image is unknown (`notFound`), the name is taken by an active group
    /// of the project (`alreadyExists`) or the numbers do not make a policy (`invalidArgument`).
    func createScalingGroup(_ submission: ScalingGroupSubmission) async throws(ControlError) -> ScalingGroup
    /// The project's groups (deleted ones too), oldest first.
    func scalingGroups(project: String) async throws(ControlError) -> [ScalingGroup]
    func scalingGroup(id: String) async throws(ControlError) -> ScalingGroup?
    /// The active groups, and the deleted ones that still have members holding capacity: what the
    /// controller's scaler reconciles, oldest first.
    func scalingGroupsToReconcile() async throws(ControlError) -> [ScalingGroup]
    /// Changes an active group's desired count (within its bounds) and journals it with `reason`
    /// in the same transaction; the same count again changes and journals nothing.
    func setDesired(group id: String, to desired: Int, reason: String) async throws(ControlError) -> ScalingGroup
    /// Journals an action that leaves the desired count as it is (a scale-in's consolidation:
    /// "moved to consolidate"), and not the time of the group's last action (its cooldown).
    func noteScalingAction(group id: String, reason: String) async throws(ControlError)
    /// active → deleted, desired 0 (journaled with `reason`); again: the same answer.
    func deleteScalingGroup(id: String, reason: String) async throws(ControlError) -> ScalingGroup
    /// The group's actions, oldest first.
    func scalingActions(group id: String) async throws(ControlError) -> [ScalingAction]
    /// The guests made for the group (deleted ones too), oldest first.
    func groupMembers(group id: String) async throws(ControlError) -> [CloudGuest]
}

extension ControlStore {
    /// A guest of no group.
    public func createGuest(_ request: GuestRequest, clientToken: String?, cause: String) async throws(ControlError)
        -> GuestCreation
    {
        try await createGuest(request, clientToken: clientToken, cause: cause, scalingGroup: nil)
    }
}

/// One telemetry sample of one guest, as a store keeps it.
public struct GuestSampleRow: Sendable, Equatable {
    public var guestID: GuestID
    public var sample: GuestSample

    public init(guestID: GuestID, sample: GuestSample) {
        self.guestID = guestID
        self.sample = sample
    }
}

extension ControlStore {
    public func transition(
        _ id: GuestID, from expected: CloudGuestState, to next: CloudGuestState, cause: String,
        errorReason: String? = nil
    ) async throws(ControlError) -> CloudGuest {
        try await transition(id, from: expected, to: next, cause: cause, errorReason: errorReason, generation: nil)
    }
}

extension Logger {
    /// The line every store logs for a committed transition.
    public func guestStateChanged(
        _ id: GuestID, from expected: CloudGuestState, to next: CloudGuestState, cause: String
    ) {
        info(
            "guest state changed",
            metadata: [
                "guest.id": "\(id)", "guest.from": "\(expected.rawValue)", "guest.to": "\(next.rawValue)",
                "guest.cause": "\(cause)",
            ])
    }
}

extension ControlStore {
    /// `beginMove` without a limit on the moves per host.
    public func beginMove(_ id: GuestID, to host: String?, cause: String, generation: Int64?)
        async throws(ControlError) -> CloudGuest
    {
        try await beginMove(id, to: host, cause: cause, generation: generation, maxMovesPerHost: nil, kind: .live)
    }

    /// A live move (`beginMove` of kind `live`).
    public func beginMove(_ id: GuestID, to host: String?, cause: String, generation: Int64?, maxMovesPerHost: Int?)
        async throws(ControlError) -> CloudGuest
    {
        try await beginMove(
            id, to: host, cause: cause, generation: generation, maxMovesPerHost: maxMovesPerHost, kind: .live)
    }
}

extension ControlStore {
    /// `reportHost`, the host as it is now.
    public func registerHost(_ registration: HostRegistration) async throws(ControlError) -> HostRecord {
        try await reportHost(registration).host
    }

    /// `heartbeat` with `health` and no reason.
    public func heartbeat(host: String, health: HostHealth) async throws(ControlError) -> HostRecord {
        try await heartbeat(host: host, health: HostHealthReport(health))
    }
}
