/// What `GET /v1/host` answers: the host's capacity, its use, the agent's health and identity.
/// JSON keys in snake_case (docs/agent-api.yaml, schema `Host`).
public struct HostReport: Codable, Sendable, Equatable {
    public struct Agent: Codable, Sendable, Equatable {
        /// Ferry's release, e.g. `0.13.0`.
        public var version: String
        /// The migration protocol this agent speaks (Protocol.md).
        public var migrationProtocol: Int
        public var pid: Int32
        public var hostname: String
        /// When the agent started, Unix seconds.
        public var startedAt: Int64
        public var stateDirectory: String
        /// The API's address as bound (the real port when the agent was started with port 0).
        public var listen: String
        /// Where migrations will arrive (`--migration-listen`); the agent does not listen there yet.
        public var migrationListen: String

        enum CodingKeys: String, CodingKey {
            case version, pid, hostname, listen
            case migrationProtocol = "migration_protocol"
            case startedAt = "started_at"
            case stateDirectory = "state_dir"
            case migrationListen = "migration_listen"
        }
    }

    /// What the host has for guests.
    public struct Capacity: Codable, Sendable, Equatable {
        /// CPUs this agent may run on (`sched_getaffinity`), which its guests inherit.
        public var vcpus: Int
        /// `MemTotal` of /proc/meminfo.
        public var memoryBytes: UInt64
        /// Size of the file system that holds the state directory (`statvfs`).
        public var diskBytes: UInt64

        enum CodingKeys: String, CodingKey {
            case vcpus
            case memoryBytes = "memory_bytes"
            case diskBytes = "disk_bytes"
        }
    }

    /// What is in use now, by anything on the host (guests' own reservations come with the
    /// inventory).
    public struct Usage: Codable, Sendable, Equatable {
        /// `MemAvailable` of /proc/meminfo.
        public var memoryAvailableBytes: UInt64
        /// What unprivileged users may still write on the state directory's file system.
        public var diskAvailableBytes: UInt64
        /// /proc/loadavg's first figure: runnable threads, averaged over a minute.
        public var loadAverage1m: Double

        enum CodingKeys: String, CodingKey {
            case memoryAvailableBytes = "memory_available_bytes"
            case diskAvailableBytes = "disk_available_bytes"
            case loadAverage1m = "load_average_1m"
        }
    }

    /// One check: whether it passed, and what was found.
    public struct Check: Codable, Sendable, Equatable {
        public var ok: Bool
        public var detail: String
    }

    public struct Health: Codable, Sendable, Equatable {
        /// The agent can keep guests: its state directory is writable. A host without KVM is
        /// healthy (it runs built-in guests); `kvm` says whether KVM guests can run.
        public var ok: Bool
        /// /dev/kvm opens and has what Ferry's KVM guest needs (without it only built-in guests run).
        public var kvm: Check
        /// A file can be created and written in the state directory.
        public var stateDirectoryWritable: Check
        /// What the hardware's signals say (`--health-dir`); absent without a health directory.
        public var signals: Signals? = nil

        enum CodingKeys: String, CodingKey {
            case ok, kvm, signals
            case stateDirectoryWritable = "state_dir_writable"
        }
    }

    /// The hardware's health as the agent judges it from its health directory (`HealthMonitor`).
    public struct Signals: Codable, Sendable, Equatable {
        /// The directory read (`--health-dir`).
        public var directory: String
        /// `healthy`, `warning` (still takes guests) or `failing` (the controller quarantines it).
        public var state: String
        /// The worst signal, named; empty when healthy.
        public var reason: String
        /// For `failing`: seconds from now by which the host should be empty.
        public var evacuateWithinSeconds: Double?
        /// Every signal that is not healthy, worst first, then the files that cannot be read.
        public var detail: [String]

        enum CodingKeys: String, CodingKey {
            case directory, state, reason, detail
            case evacuateWithinSeconds = "evacuate_within_s"
        }
    }

    public var agent: Agent
    public var capacity: Capacity
    public var usage: Usage
    public var health: Health
}
