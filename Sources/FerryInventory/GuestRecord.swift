import FerryHostModel
import Foundation

/// What the agent knows about one guest's `ferry vmm` process: enough to find it again after an
/// agent restart and to tell it from an unrelated process that reuses its PID.
public struct ProcessFacts: Sendable, Equatable, Hashable, Codable {
    public var pid: Int32
    /// Field 22 of /proc/PID/stat: when the process started, in clock ticks after boot. A PID
    /// that is reused by another process after a reboot or a wrap-around has another start time.
    public var startTime: UInt64
    /// The process's control socket, where it answers with its guest's ID.
    public var controlSocket: String

    public init(pid: Int32, startTime: UInt64, controlSocket: String) {
        self.pid = pid
        self.startTime = startTime
        self.controlSocket = controlSocket
    }
}

/// One guest as the inventory holds it.
public struct GuestRecord: Sendable, Equatable {
    public var id: GuestID
    public var specification: GuestSpecification
    public var state: GuestState
    /// When the guest entered `state` (wall clock: shown to people, never compared to decide).
    public var stateSince: Date
    /// Starts at 1 and grows by one with every change of the row (state, process facts, disk
    /// marks): a caller that read generation G may make its change conditional on G.
    public var generation: Int64
    /// The guest's process as last recorded; nil in states without a process.
    public var process: ProcessFacts?
    /// Disks (by name) whose files reconciliation found missing; empty when all were present.
    public var missingDisks: [String]
    public var createdAt: Date
    public var updatedAt: Date

    public var name: GuestName { specification.name }

    public init(
        id: GuestID, specification: GuestSpecification, state: GuestState, stateSince: Date,
        generation: Int64, process: ProcessFacts? = nil, missingDisks: [String] = [],
        createdAt: Date, updatedAt: Date
    ) {
        self.id = id
        self.specification = specification
        self.state = state
        self.stateSince = stateSince
        self.generation = generation
        self.process = process
        self.missingDisks = missingDisks
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }
}

/// One row of the journal: a guest entering the inventory (`from` nil), changing state, or
/// leaving it (`to` nil: deleted, or handed off to another host by a migration).
public struct JournalEntry: Sendable, Equatable {
    /// Grows by one with every row, never reused (the order of events; times may jump).
    public var sequence: Int64
    public var guestID: GuestID
    public var guestName: GuestName
    public var time: Date
    public var from: GuestState?
    public var to: GuestState?
    public var cause: String

    public init(
        sequence: Int64, guestID: GuestID, guestName: GuestName, time: Date, from: GuestState?,
        to: GuestState?, cause: String
    ) {
        self.sequence = sequence
        self.guestID = guestID
        self.guestName = guestName
        self.time = time
        self.from = from
        self.to = to
        self.cause = cause
    }

    /// `to` as the journal table spells it: a state, or `removed`.
    public var toText: String { to?.rawValue ?? "removed" }
}
