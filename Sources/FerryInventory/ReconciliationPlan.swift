import FerryHostModel

/// What reconciliation decided: changes to records, guests to register, and what it saw but
/// left alone. It has no way to say "delete a guest" or "kill a process": the only removal is
/// a guest whose own process reports that a migration handed it off.
public struct ReconciliationPlan: Sendable, Equatable {
    public var changes: [GuestChange]
    public var registrations: [Registration]
    public var leftAlone: [LeftAlone]

    public init(changes: [GuestChange] = [], registrations: [Registration] = [], leftAlone: [LeftAlone] = []) {
        self.changes = changes
        self.registrations = registrations
        self.leftAlone = leftAlone
    }

    public var isEmpty: Bool { changes.isEmpty && registrations.isEmpty }
}

/// The steps for one record, applied in one transaction, only if the record still has the
/// generation it had when the plan was made.
public struct GuestChange: Sendable, Equatable {
    public var id: GuestID
    public var name: GuestName
    public var generation: Int64
    public var steps: [ReconciliationStep]

    public init(id: GuestID, name: GuestName, generation: Int64, steps: [ReconciliationStep]) {
        self.id = id
        self.name = name
        self.generation = generation
        self.steps = steps
    }
}

public enum ReconciliationStep: Sendable, Equatable {
    /// One state change, allowed by `GuestState.allows(_:)`, journaled with `cause`.
    case transition(from: GuestState, to: GuestState, cause: String)
    /// The process answered with the guest's ID: record where it is (adoption).
    case recordProcess(ProcessFacts)
    /// The guest's own process reports the outgoing migration handed it off: the guest has
    /// left this host (journaled `to: removed`). Only from `migrating-out`.
    case removeAfterHandoff(cause: String)
    /// The disks (by name) whose files are missing now; empty clears an earlier mark. Nothing
    /// is deleted or created: the mark is for people and the API to see.
    case markMissingDisks([String])
}

/// A process that answered with a guest ID the inventory does not hold: it runs a guest, so
/// the inventory takes it in (in the state it reports, journaled from nil), and never kills it.
public struct Registration: Sendable, Equatable {
    public var process: AnsweringProcess
    public var state: GuestState
    public var cause: String

    public init(process: AnsweringProcess, state: GuestState, cause: String) {
        self.process = process
        self.state = state
        self.cause = cause
    }
}

/// Something reconciliation saw and deliberately did not change, with why: for the agent's log
/// and for people.
public struct LeftAlone: Sendable, Equatable, CustomStringConvertible {
    public var id: GuestID?
    public var name: GuestName?
    public var reason: String

    public init(id: GuestID?, name: GuestName?, reason: String) {
        self.id = id
        self.name = name
        self.reason = reason
    }

    public var description: String {
        let who = [name.map { "guest \($0)" }, id.map { "ID \($0)" }].compactMap { $0 }.joined(separator: ", ")
        return who.isEmpty ? reason : "\(who): \(reason)"
    }
}
