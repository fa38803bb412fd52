import FerryHostModel
import FerryInventory
import Foundation

/// A guest as the API shows it (docs/agent-api.yaml, `Guest`); the CLI decodes the same type.
public struct GuestView: Codable, Sendable, Equatable {
    public struct Transition: Codable, Sendable, Equatable {
        public var time: String
        public var from: String?
        public var to: String
        public var cause: String
    }

    public var id: String
    public var specification: GuestSpecification
    public var state: String
    /// ISO 8601: when the guest entered `state`.
    public var stateSince: String
    /// The guest's `ferry vmm` process while it has one.
    public var pid: Int32?
    public var controlSocket: String?
    /// Disks whose files reconciliation found missing.
    public var missingDisks: [String]
    /// The latest journal rows, oldest first (`GET /v1/guests/{name}` only).
    public var transitions: [Transition]?
    /// What the guest's vmm measures and the guest reports (`GET /v1/guests/{name}` only, while
    /// the guest has a process that answers).
    public var usage: GuestUsage?

    enum CodingKeys: String, CodingKey {
        case id, specification, state, pid, transitions, usage
        case stateSince = "state_since"
        case controlSocket = "control_socket"
        case missingDisks = "missing_disks"
    }

    /// A value type: no formatter object made per guest (that cost a list of 100 about 10 ms).
    static let timeFormat = Date.ISO8601FormatStyle()

    public init(_ record: GuestRecord, journal: [JournalEntry]? = nil) {
        let format = Self.timeFormat
        id = record.id.hex
        specification = record.specification
        state = record.state.rawValue
        stateSince = record.stateSince.formatted(format)
        pid = record.process?.pid
        controlSocket = record.process?.controlSocket
        missingDisks = record.missingDisks
        transitions = journal?.map {
            Transition(time: $0.time.formatted(format), from: $0.from?.rawValue, to: $0.toText, cause: $0.cause)
        }
    }
}

/// `GET /v1/guests`.
public struct GuestList: Codable, Sendable {
    public var guests: [GuestView]

    public init(guests: [GuestView]) { self.guests = guests }
}

/// The body of `POST /v1/guests/{name}/stop` (all optional).
public struct StopRequest: Codable, Sendable {
    public var timeoutSeconds: Int?
    public var force: Bool?

    public init(timeoutSeconds: Int? = nil, force: Bool? = nil) {
        self.timeoutSeconds = timeoutSeconds
        self.force = force
    }

    enum CodingKeys: String, CodingKey {
        case force
        case timeoutSeconds = "timeout_seconds"
    }
}

/// `GET /v1/guests/{name}/console`: the vmm's console lines after a cursor.
public struct ConsolePage: Codable, Sendable {
    public struct Line: Codable, Sendable {
        public var seq: Int
        public var vcpu: Int?
        public var text: String
    }

    public var lines: [Line]
    /// The cursor to ask with next (`since`).
    public var next: Int
    /// Lines after `since` no longer kept.
    public var dropped: Int
}

/// A running guest's CPU use and reported load, from its vmm's `status` (docs/vmm-control.md).
public struct GuestUsage: Codable, Sendable, Equatable {
    /// Each vCPU thread's CPU time in the vmm process, ns (from 0 again after a migration).
    public var vcpuCPUNanoseconds: [UInt64]
    /// Their sum.
    public var cpuNanoseconds: UInt64
    /// Each vCPU's load over its last interval as the guest measured it, per mille (null before
    /// its first report).
    public var guestLoadPermille: [Int?]
    /// The mean of the reported loads, per mille.
    public var loadPermille: Int?
    /// Steps (page writes) all vCPUs made so far.
    public var totalSteps: UInt64

    public init(
        vcpuCPUNanoseconds: [UInt64], cpuNanoseconds: UInt64, guestLoadPermille: [Int?], loadPermille: Int?,
        totalSteps: UInt64
    ) {
        self.vcpuCPUNanoseconds = vcpuCPUNanoseconds
        self.cpuNanoseconds = cpuNanoseconds
        self.guestLoadPermille = guestLoadPermille
        self.loadPermille = loadPermille
        self.totalSteps = totalSteps
    }

    enum CodingKeys: String, CodingKey {
        case vcpuCPUNanoseconds = "vcpu_cpu_ns"
        case cpuNanoseconds = "cpu_ns"
        case guestLoadPermille = "guest_load_permille"
        case loadPermille = "load_permille"
        case totalSteps = "total_steps"
    }
}

/// The body of `POST /v1/guests/{name}/pace`.
public struct PaceRequest: Codable, Sendable {
    /// Bytes of page writes per second (`8MB/s`, as in a workload), or `unpaced`.
    public var rate: String

    public init(rate: String) { self.rate = rate }
}
