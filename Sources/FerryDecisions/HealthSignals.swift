/// What a host's hardware says of its health at one look, as the agent read it from its health
/// directory (`ferry agent --health-dir`, docs/agent.md): memory controllers' error counters,
/// disks' SMART attributes, the BMC's event log. Pure values; `HealthAssessment` judges them.
public struct HealthReading: Sendable, Equatable {
    public var memoryControllers: [MemoryControllerCounts]
    public var disks: [SMARTDisk]
    public var events: [SELEntry]
    /// Files (or lines) that could not be read, each with what was wrong: they are reported in
    /// the health detail and decide nothing.
    public var unreadable: [String]

    public init(
        memoryControllers: [MemoryControllerCounts] = [], disks: [SMARTDisk] = [], events: [SELEntry] = [],
        unreadable: [String] = []
    ) {
        self.memoryControllers = memoryControllers
        self.disks = disks
        self.events = events
        self.unreadable = unreadable
    }
}

/// One EDAC memory controller's counters (Linux's `/sys/devices/system/edac/mc/mcN/`): errors
/// since boot or since its counters were reset (a DIMM swapped, `reset_counters` written).
public struct MemoryControllerCounts: Sendable, Equatable {
    /// `mc0`.
    public var name: String
    /// `ce_count`: errors the ECC corrected.
    public var corrected: Int64
    /// `ue_count`: errors it could not correct.
    public var uncorrected: Int64

    public init(name: String, corrected: Int64, uncorrected: Int64) {
        self.name = name
        self.corrected = corrected
        self.uncorrected = uncorrected
    }
}

/// One disk's SMART attributes (`smartctl --json -A`'s `ata_smart_attributes.table`).
public struct SMARTDisk: Sendable, Equatable {
    /// The file's name without `.json` (`sda`).
    public var name: String
    public var attributes: [SMARTAttribute]

    public init(name: String, attributes: [SMARTAttribute]) {
        self.name = name
        self.attributes = attributes
    }
}

/// One SMART attribute: the normalised value (vendor's scale, lower is worse), the worst it has
/// been, the threshold at or below which the drive's maker says it fails, and the raw counter.
public struct SMARTAttribute: Sendable, Equatable {
    public var id: Int
    public var name: String
    public var value: Int
    public var worst: Int
    public var threshold: Int
    public var raw: Int64

    public init(id: Int, name: String, value: Int, worst: Int, threshold: Int, raw: Int64) {
        self.id = id
        self.name = name
        self.value = value
        self.worst = worst
        self.threshold = threshold
        self.raw = raw
    }

    /// The pre-failure attributes whose raw count above zero is a warning: 5
    /// Reallocated_Sector_Ct, 187 Reported_Uncorrect, 197 Current_Pending_Sector, 198
    /// Offline_Uncorrectable.
    public static let watched: Set<Int> = [5, 187, 197, 198]
}

/// One entry of the BMC's system event log as `ipmitool sel elist` prints it.
public struct SELEntry: Sendable, Equatable {
    /// When it was logged, Unix seconds (the log's clock, read as UTC); nil when the BMC had no
    /// time yet (`Pre-Init`).
    public var timeSeconds: Int64?
    /// `Memory #0x01`.
    public var sensor: String
    /// `Uncorrectable ECC`.
    public var event: String
    /// Asserted (the condition began) or deasserted (it ended).
    public var asserted: Bool

    public init(timeSeconds: Int64?, sensor: String, event: String, asserted: Bool) {
        self.timeSeconds = timeSeconds
        self.sensor = sensor
        self.event = event
        self.asserted = asserted
    }

    /// How bad the event is, from its words (case aside): `critical` for "Non-recoverable",
    /// "Uncorrectable", "Critical" (not "Non-critical") and "Fatal"; `warning` for
    /// "Non-critical", "Correctable", "Predictive Failure" and "Degraded"; otherwise `info`.
    public var severity: SELSeverity {
        let text = event.lowercased()
        if text.contains("non-recoverable") || text.contains("uncorrectable") || text.contains("fatal") {
            return .critical
        }
        if text.contains("non-critical") { return .warning }
        if text.contains("critical") { return .critical }
        if text.contains("correctable") || text.contains("predictive failure") || text.contains("degraded") {
            return .warning
        }
        return .info
    }
}

public enum SELSeverity: Int, Sendable, Comparable {
    case info, warning, critical

    public static func < (a: SELSeverity, b: SELSeverity) -> Bool { a.rawValue < b.rawValue }
}

/// A host's health as its hardware signals it.
public enum HealthState: String, Sendable, Codable, CaseIterable, Comparable {
    /// Nothing to say.
    case healthy
    /// A signal worth a look (corrected errors rising, a reallocated sector, a non-critical
    /// event): the host still takes guests.
    case warning
    /// The hardware is going: the host takes no guests and should be empty by a deadline.
    case failing

    public static func < (a: HealthState, b: HealthState) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}

/// What one signal says (`HealthAssessment.findings`).
public struct HealthFinding: Sendable, Equatable {
    public var state: HealthState
    /// Names the signal: `memory controller mc0: 1 uncorrected error`.
    public var reason: String
    /// For `failing`: seconds from now by which the host should be empty.
    public var deadlineSeconds: Double?

    public init(state: HealthState, reason: String, deadlineSeconds: Double? = nil) {
        self.state = state
        self.reason = reason
        self.deadlineSeconds = deadlineSeconds
    }

    /// Whether `self` is worse than `other`: a worse state, or failing by an earlier deadline.
    func isWorse(than other: HealthFinding) -> Bool {
        if state != other.state { return state > other.state }
        guard state == .failing else { return false }
        return (deadlineSeconds ?? .infinity) < (other.deadlineSeconds ?? .infinity)
    }
}

/// The host's health from all its signals: the worst finding decides, with its reason.
public struct HealthVerdict: Sendable, Equatable {
    public var state: HealthState
    /// The worst finding's reason, with how many others are not healthy; empty when healthy.
    public var reason: String
    /// For `failing`: seconds from now by which the host should be empty.
    public var deadlineSeconds: Double?
    /// Every finding that is not healthy, worst first, then the files that could not be read.
    public var detail: [String]

    public init(state: HealthState, reason: String, deadlineSeconds: Double? = nil, detail: [String] = []) {
        self.state = state
        self.reason = reason
        self.deadlineSeconds = deadlineSeconds
        self.detail = detail
    }

    public static let healthy = HealthVerdict(state: .healthy, reason: "")
}
