/// What a host's agent tells its controller every second (`POST /v1/agents/heartbeat` on the
/// controller): who it is, where its API is, what the host has, whether it is healthy, and each
/// of its guests' state. The first heartbeat registers the host; a later one with other
/// capacity or address updates it (an agent restarted on a changed machine).
public struct HostHeartbeat: Codable, Sendable, Equatable {
    /// One guest as the agent's inventory has it, and, while it runs, what its vmm measured.
    public struct Guest: Codable, Sendable, Equatable {
        public var id: GuestID
        public var name: GuestName
        public var state: GuestState
        /// Absent when the guest does not run or its vmm did not answer in time (and from
        /// agents older than the field).
        public var telemetry: Telemetry?

        public init(id: GuestID, name: GuestName, state: GuestState, telemetry: Telemetry? = nil) {
            self.id = id
            self.name = name
            self.state = state
            self.telemetry = telemetry
        }
    }

    /// A running guest's counters as its vmm's `status` gives them when the heartbeat is made.
    public struct Telemetry: Codable, Sendable, Equatable {
        /// CPU time of the guest's vCPU threads in its current vmm (`cpu_ns`): a counter that
        /// starts again from 0 in a new vmm (after a migration or a restart).
        public var cpuNanoseconds: UInt64
        public var vcpus: Int
        /// The load the guest itself published (`load_permille`, 0…1000), if it does.
        public var loadPermille: Int?

        public init(cpuNanoseconds: UInt64, vcpus: Int, loadPermille: Int? = nil) {
            self.cpuNanoseconds = cpuNanoseconds
            self.vcpus = vcpus
            self.loadPermille = loadPermille
        }

        enum CodingKeys: String, CodingKey {
            case vcpus
            case cpuNanoseconds = "cpu_ns"
            case loadPermille = "load_permille"
        }
    }

    /// The host's name in the cluster (`ferry agent --host-id`, by default the machine's hostname).
    public var hostID: String
    /// The agent's API as the controller reaches it (`http://10.0.0.2:7460`).
    public var agentURL: String
    public var vcpus: Int
    public var memoryBytes: Int
    public var diskBytes: Int
    /// The host has a usable /dev/kvm (the probe behind `GET /v1/host`'s `health.kvm`), and the
    /// agent offers it (`ferry agent --no-kvm` does not): the controller places guests of `kvm`
    /// images only on such hosts. Absent (an agent older than the field): false.
    public var kvm: Bool
    /// The agent's own checks (state directory) passed.
    public var healthy: Bool
    /// What failed, when not healthy.
    public var healthDetail: String
    /// What the host's hardware signals say (`ferry agent --health-dir`). Absent (an agent
    /// without a health directory, or older than the field): healthy.
    public var signals: Signals?
    /// Whether the host is on or in standby (`POST /v1/host/standby` on the agent: it stands for
    /// a powered-down host and takes no guests). Absent (an agent older than the field): on.
    public var power: Power?
    public var guests: [Guest]

    /// The host's power as its agent reports it.
    public enum Power: String, Codable, Sendable, CaseIterable {
        case on, standby
    }

    /// The hardware's health as the agent judged it (`HealthAssessment`).
    public struct Signals: Codable, Sendable, Equatable {
        public enum State: String, Codable, Sendable, CaseIterable {
            case healthy, warning, failing
        }

        public var state: State
        /// The worst signal, named: `memory controller mc0: 1 uncorrected error`.
        public var reason: String
        /// For `failing`: seconds from this heartbeat by which the host should be empty.
        public var evacuateWithinSeconds: Double?

        public init(state: State, reason: String, evacuateWithinSeconds: Double? = nil) {
            self.state = state
            self.reason = reason
            self.evacuateWithinSeconds = evacuateWithinSeconds
        }

        /// A state this controller does not know (from a newer agent) reads as `warning`: the
        /// host keeps taking guests, and the reason says what was reported.
        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            let text = try container.decode(String.self, forKey: .state)
            let reason = try container.decodeIfPresent(String.self, forKey: .reason) ?? ""
            state = State(rawValue: text) ?? .warning
            self.reason = State(rawValue: text) == nil ? "\(text): \(reason)" : reason
            evacuateWithinSeconds = try container.decodeIfPresent(Double.self, forKey: .evacuateWithinSeconds)
        }

        enum CodingKeys: String, CodingKey {
            case state, reason
            case evacuateWithinSeconds = "evacuate_within_s"
        }
    }

    public init(
        hostID: String, agentURL: String, vcpus: Int, memoryBytes: Int, diskBytes: Int, kvm: Bool = false,
        healthy: Bool, healthDetail: String, signals: Signals? = nil, power: Power? = nil, guests: [Guest]
    ) {
        self.power = power
        self.signals = signals
        self.hostID = hostID
        self.agentURL = agentURL
        self.vcpus = vcpus
        self.memoryBytes = memoryBytes
        self.diskBytes = diskBytes
        self.kvm = kvm
        self.healthy = healthy
        self.healthDetail = healthDetail
        self.guests = guests
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        hostID = try container.decode(String.self, forKey: .hostID)
        agentURL = try container.decode(String.self, forKey: .agentURL)
        vcpus = try container.decode(Int.self, forKey: .vcpus)
        memoryBytes = try container.decode(Int.self, forKey: .memoryBytes)
        diskBytes = try container.decode(Int.self, forKey: .diskBytes)
        kvm = try container.decodeIfPresent(Bool.self, forKey: .kvm) ?? false
        healthy = try container.decode(Bool.self, forKey: .healthy)
        healthDetail = try container.decode(String.self, forKey: .healthDetail)
        signals = try container.decodeIfPresent(Signals.self, forKey: .signals)
        power = try container.decodeIfPresent(String.self, forKey: .power).flatMap(Power.init(rawValue:))
        guests = try container.decode([Guest].self, forKey: .guests)
    }

    enum CodingKeys: String, CodingKey {
        case vcpus, kvm, healthy, guests, signals, power
        case hostID = "host_id"
        case agentURL = "agent_url"
        case memoryBytes = "memory_bytes"
        case diskBytes = "disk_bytes"
        case healthDetail = "health_detail"
    }
}
