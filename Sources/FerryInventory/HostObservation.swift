import FerryHostModel

/// What the agent found on the host when it (re)started: the input of `Reconciliation.plan`.
/// The agent gathers it (connects to the control sockets in its state directory, reads
/// /proc/PID/stat of every recorded PID, stats every disk file); reconciliation itself does no I/O.
public struct HostObservation: Sendable, Equatable {
    /// Processes that answered on a control socket, with the guest ID they carry.
    public var answering: [AnsweringProcess]
    /// What /proc says about the PIDs the agent looked at (the recorded ones). A PID missing
    /// here was not looked at: reconciliation leaves its guest alone.
    public var pids: [Int32: PIDObservation]
    /// Disks (by name) of each guest whose files are missing. A guest missing here, or with an
    /// empty list, has all its disk files.
    public var missingDisks: [GuestID: [String]]

    public init(
        answering: [AnsweringProcess] = [], pids: [Int32: PIDObservation] = [:],
        missingDisks: [GuestID: [String]] = [:]
    ) {
        self.answering = answering
        self.pids = pids
        self.missingDisks = missingDisks
    }
}

/// A `ferry vmm` process that answered on its control socket.
public struct AnsweringProcess: Sendable, Equatable {
    /// The guest ID the process carries (given to it at start, carried by migrations).
    public var id: GuestID
    /// The specification the process runs (its name included); used to register a guest the
    /// inventory lacks.
    public var specification: GuestSpecification
    public var status: ProcessStatus
    public var facts: ProcessFacts

    public init(id: GuestID, specification: GuestSpecification, status: ProcessStatus, facts: ProcessFacts) {
        self.id = id
        self.specification = specification
        self.status = status
        self.facts = facts
    }

    public var name: GuestName { specification.name }
}

/// What a guest's process reports about itself on its control socket.
public enum ProcessStatus: String, Sendable, CaseIterable, Equatable {
    case starting
    case running
    case paused
    case stopping
    case migratingOut = "migrating-out"
    case migratingIn = "migrating-in"
    /// An outgoing migration completed: the destination confirmed it runs the guest, and this
    /// process only waits to be collected. The guest has left this host.
    case handedOff = "handed-off"

    /// The inventory state this status corresponds to; nil for `handedOff` (no state: the
    /// guest leaves the inventory).
    public var state: GuestState? {
        switch self {
        case .starting: .starting
        case .running: .running
        case .paused: .paused
        case .stopping: .stopping
        case .migratingOut: .migratingOut
        case .migratingIn: .migratingIn
        case .handedOff: nil
        }
    }
}

/// What /proc/PID/stat says about one PID (see `ProcessStartTime.read(pid:)`).
public enum PIDObservation: Sendable, Equatable, Hashable {
    /// No process has this PID.
    case absent
    /// A process with this PID started at this tick after boot (field 22).
    case started(at: UInt64)
}
