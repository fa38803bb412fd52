import Foundation

/// What an agent says of its host when it registers: where to reach it and what it has.
public struct HostRegistration: Sendable, Equatable {
    /// The host's name in the cluster (stable across agent restarts).
    public var id: String
    /// The agent's API address, `host:port`.
    public var address: String
    public var capacity: Resources
    /// The host has a usable /dev/kvm (the agent's probe, `HostHeartbeat.kvm`): it runs guests
    /// of `kvm` images.
    public var kvm: Bool

    public init(id: String, address: String, capacity: Resources, kvm: Bool = false) {
        self.id = id
        self.address = address
        self.capacity = capacity
        self.kvm = kvm
    }
}

/// What a host's agent last reported of its health.
public enum HostHealth: String, Sendable, Codable, CaseIterable {
    /// Takes new guests.
    case healthy
    /// Running, but takes no new guests (maintenance, drain, a failing disk).
    case degraded
}

/// What the operators (or the controller's own passes) made of a host, apart from its health.
public enum HostMode: String, Sendable, Codable, CaseIterable {
    /// Takes guests.
    case active
    /// Being emptied for maintenance (`drain`): takes no guests, its guests leave by live migration.
    case draining
    /// Emptied (its running guests left) and kept empty until `undrain`.
    case drained
}

/// One host as the controller holds it.
public struct HostRecord: Sendable, Equatable {
    public var id: String
    public var address: String
    public var capacity: Resources
    /// The agent last reported a usable /dev/kvm: the scheduler places guests of `kvm` images here.
    public var kvm: Bool
    public var health: HostHealth
    /// Drained or being drained: it takes no guests whatever its health.
    public var mode: HostMode
    /// When the mode last changed (nil: active since it registered).
    public var modeSince: Date?
    /// Who changed the mode and why, as they said.
    public var modeCause: String
    /// When the controller last heard from the agent (registration or heartbeat).
    public var lastHeartbeat: Date
    public var registeredAt: Date

    public init(
        id: String, address: String, capacity: Resources, kvm: Bool = false, health: HostHealth, lastHeartbeat: Date,
        registeredAt: Date, mode: HostMode = .active, modeSince: Date? = nil, modeCause: String = ""
    ) {
        self.mode = mode
        self.modeSince = modeSince
        self.modeCause = modeCause
        self.id = id
        self.address = address
        self.capacity = capacity
        self.kvm = kvm
        self.health = health
        self.lastHeartbeat = lastHeartbeat
        self.registeredAt = registeredAt
    }

    /// Whether the scheduler may place a guest here at `now`: the agent says it is healthy, was
    /// heard from at most `heartbeatTimeout` ago, and nobody is draining it.
    public func takesGuests(at now: Date, heartbeatTimeout: Duration) -> Bool {
        let timeout =
            Double(heartbeatTimeout.components.seconds) + Double(heartbeatTimeout.components.attoseconds) / 1e18
        return health == .healthy && mode == .active && now.timeIntervalSince(lastHeartbeat) <= timeout
    }

    /// How long the host has been silent at `now` as a controller that has been watching since
    /// `watchingSince` (its start) can tell, or nil while that is not longer than `timeout`. A
    /// controller that was down itself heard nothing, which says nothing about the host: its
    /// silence counts from the later of the last heartbeat and the controller's start, so a
    /// restarted controller gives every host a full timeout to report before its guests become
    /// `unknown` (and stop being billed).
    public func silence(at now: Date, watchingSince: Date, timeout: Duration) -> TimeInterval? {
        let limit = Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18
        let silent = now.timeIntervalSince(max(lastHeartbeat, watchingSince))
        return silent > limit ? now.timeIntervalSince(lastHeartbeat) : nil
    }
}
