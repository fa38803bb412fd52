import FerryHostModel

/// The agent's inventory: the guests a host holds, their states and the journal of every
/// change. Each operation is one transaction, and every state change is journaled (time, from,
/// to, cause) in the transaction that makes it. `SQLiteInventory` is the embedded
/// implementation; another backend implements the same protocol and passes the same tests.
public protocol InventoryStore: Sendable {
    /// Adds a guest in state `defined`, journaled with `from` nil. Refused when the name or the
    /// ID is taken or the specification is out of range.
    func create(_ specification: GuestSpecification, id: GuestID, cause: String) throws(InventoryError) -> GuestRecord

    func guest(named name: GuestName) throws(InventoryError) -> GuestRecord?
    func guest(id: GuestID) throws(InventoryError) -> GuestRecord?
    /// Every guest, by name.
    func guests() throws(InventoryError) -> [GuestRecord]

    /// Changes a guest's state from `expected` to `next`. Refused unless the guest is in
    /// `expected` (and at `generation`, if given) and `expected.allows(next)`. Entering a state
    /// without a process clears the recorded process facts.
    func transition(
        _ name: GuestName, from expected: GuestState, to next: GuestState, cause: String, generation: Int64?
    ) throws(InventoryError) -> GuestRecord

    /// Records (or with nil, clears) the guest's process facts; at `generation`, if given.
    func recordProcess(_ name: GuestName, _ facts: ProcessFacts?, generation: Int64?) throws(InventoryError)
        -> GuestRecord

    /// Removes a guest whose state is `removable` (no process may run it), journaling `to: removed`.
    func remove(_ name: GuestName, cause: String) throws(InventoryError) -> JournalEntry

    /// Removes a guest in `migrating-out` whose migration handed it off to its destination (the
    /// guest now runs there), journaling `to: removed`. The only way out of `migrating-out`
    /// other than back to `running`/`paused` or `crashed`.
    func removeAfterHandoff(_ name: GuestName, cause: String, generation: Int64?) throws(InventoryError) -> JournalEntry

    /// Inserts an arriving guest as `migrating-in`, in one transaction that checks what it
    /// consumes: no guest of that name or ID (`alreadyExists`), a guest's vCPUs at most the
    /// host's, the memory of every guest with a process plus this one at most `memoryBytes`
    /// (`insufficientCapacity`).
    func reserveIncoming(
        _ specification: GuestSpecification, id: GuestID, capacity: IncomingCapacity, cause: String
    ) throws(InventoryError) -> GuestRecord

    /// Removes a guest in `migrating-in` whose incoming migration ended without it (the vmm
    /// exited, or the reservation was abandoned), journaling `to: removed`.
    func removeFailedArrival(_ name: GuestName, cause: String) throws(InventoryError) -> JournalEntry

    /// The latest `limit` journal rows of the guest with this ID, oldest first.
    func journal(of id: GuestID, latest limit: Int) throws(InventoryError) -> [JournalEntry]
    /// The latest `limit` journal rows of every guest that had this name, oldest first.
    func journal(named name: GuestName, latest limit: Int) throws(InventoryError) -> [JournalEntry]
    /// The latest `limit` journal rows of the whole host, oldest first.
    func journal(latest limit: Int) throws(InventoryError) -> [JournalEntry]

    /// Applies a reconciliation plan: each guest's change in one transaction, only if the
    /// record still has the generation the plan saw; each registration in its own.
    func apply(_ plan: ReconciliationPlan) throws(InventoryError) -> ReconciliationOutcome
}

extension InventoryStore {
    public func transition(
        _ name: GuestName, from expected: GuestState, to next: GuestState, cause: String
    ) throws(InventoryError) -> GuestRecord {
        try transition(name, from: expected, to: next, cause: cause, generation: nil)
    }
}

/// What an arriving guest may use of the host (`reserveIncoming`).
public struct IncomingCapacity: Sendable, Equatable {
    public var vcpus: Int
    public var memoryBytes: Int

    public init(vcpus: Int, memoryBytes: Int) {
        self.vcpus = vcpus
        self.memoryBytes = memoryBytes
    }
}

/// What `apply(_:)` did: the guests changed or registered, and the changes refused (a record
/// that changed since the plan was made is refused as stale; plan again).
public struct ReconciliationOutcome: Sendable {
    public var applied: [GuestName] = []
    public var registered: [GuestName] = []
    public var refused: [InventoryError] = []

    public init() {}
}
