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
    /// What the agent reports of the host's health (a registration without a report: healthy).
    public var healthReport: HostHealthReport
    /// The power the agent reports (`on` or `standby`; nil, an agent older than the field: on).
    public var power: HostPower?

    public init(
        id: String, address: String, capacity: Resources, kvm: Bool = false,
        healthReport: HostHealthReport = HostHealthReport(.healthy), power: HostPower? = nil
    ) {
        self.power = power
        self.id = id
        self.address = address
        self.capacity = capacity
        self.kvm = kvm
        self.healthReport = healthReport
    }
}

/// A host's health as one heartbeat reports it: the agent's own checks and its hardware's
/// signals, combined (`HostTracking`).
public struct HostHealthReport: Sendable, Equatable {
    public var health: HostHealth
    /// What is wrong, naming the check or signal; empty when healthy.
    public var reason: String
    /// For `failing`: seconds from the report by which the host should be empty (nil: no deadline).
    public var evacuateWithinSeconds: Double?

    public init(_ health: HostHealth, reason: String = "", evacuateWithinSeconds: Double? = nil) {
        self.health = health
        self.reason = reason
        self.evacuateWithinSeconds = evacuateWithinSeconds
    }
}

/// What recording a host's report changed: the host as it is now, and its health before (nil:
/// the report registered it).
public struct HostHealthChange: Sendable, Equatable {
    public var host: HostRecord
    public var previous: HostHealth?

    public init(host: HostRecord, previous: HostHealth?) {
        self.host = host
        self.previous = previous
    }

    /// This report put the host in quarantine: it is failing and was not.
    public var quarantined: Bool { host.health == .failing && previous != .failing }
    /// This report took the host out of quarantine.
    public var released: Bool { previous == .failing && host.health != .failing }
}

/// What a host's agent last reported of its health, least to most severe.
public enum HostHealth: String, Sendable, Codable, CaseIterable {
    /// Takes new guests.
    case healthy
    /// Takes new guests; a hardware signal is worth a look (corrected errors rising, a
    /// reallocated sector: the reason says which).
    case warning
    /// Running, but takes no new guests: the agent's own checks failed (its state directory is
    /// not writable).
    case degraded
    /// Quarantined: the hardware's signals say it is going (an uncorrected memory error, a SMART
    /// attribute at its threshold, a critical IPMI event). Takes no new guests, no moves, no
    /// lease's capacity; its guests should be gone by the host's `evacuateBy`.
    case failing
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

/// A host's power as the controller holds it (consolidation, issue 18).
public enum HostPower: String, Sendable, Codable, CaseIterable {
    /// Running: takes guests (as its health and mode allow).
    case on
    /// Put in standby by a consolidation (or an operator) once empty: it stands for a host powered
    /// down, takes no guests and holds none; the scheduler wakes it when nothing else has room.
    case standby
    /// Asked to wake (by an operator, or by a create that found no room elsewhere): takes no
    /// guests until its agent reports it on; a create placed on it waits for that.
    case waking
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
    /// What the agent said is wrong, naming the check or signal; empty when healthy.
    public var healthReason: String
    /// While failing: when its guests should be gone (the earliest deadline its reports implied
    /// since it turned failing; nil if they implied none).
    public var evacuateBy: Date?
    /// While failing: when the report that turned it failing arrived.
    public var quarantinedAt: Date?
    /// When the controller last heard from the agent (registration or heartbeat).
    public var lastHeartbeat: Date
    public var registeredAt: Date
    /// On, in standby or waking: only a host that is on takes guests.
    public var power: HostPower = .on
    /// When the power last changed (nil: on since it registered).
    public var powerSince: Date?

    public init(
        id: String, address: String, capacity: Resources, kvm: Bool = false, health: HostHealth,
        healthReason: String = "", evacuateBy: Date? = nil, quarantinedAt: Date? = nil, lastHeartbeat: Date,
        registeredAt: Date, mode: HostMode = .active, modeSince: Date? = nil, modeCause: String = "",
        power: HostPower = .on, powerSince: Date? = nil
    ) {
        self.power = power
        self.powerSince = powerSince
        self.mode = mode
        self.modeSince = modeSince
        self.modeCause = modeCause
        self.id = id
        self.address = address
        self.capacity = capacity
        self.kvm = kvm
        self.health = health
        self.healthReason = healthReason
        self.evacuateBy = evacuateBy
        self.quarantinedAt = quarantinedAt
        self.lastHeartbeat = lastHeartbeat
        self.registeredAt = registeredAt
    }

    /// The host is failing: it takes no guests and is to be emptied.
    public var quarantined: Bool { health == .failing }

    /// Whether the scheduler may place a guest here at `now`: the agent says it is healthy (or
    /// merely warns), was heard from at most `heartbeatTimeout` ago, and nobody is draining it. A
    /// degraded or failing (quarantined) host takes none.
    public func takesGuests(at now: Date, heartbeatTimeout: Duration) -> Bool {
        power == .on && takesGuestsWhenOn(at: now, heartbeatTimeout: heartbeatTimeout)
    }

    /// `takesGuests` but for the power: a host in standby (or waking) that would take guests once
    /// on. The scheduler wakes such a host when no host that is on has room.
    public func takesGuestsWhenOn(at now: Date, heartbeatTimeout: Duration) -> Bool {
        let timeout =
            Double(heartbeatTimeout.components.seconds) + Double(heartbeatTimeout.components.attoseconds) / 1e18
        return (health == .healthy || health == .warning) && mode == .active
            && now.timeIntervalSince(lastHeartbeat) <= timeout
    }

    /// How long a `standby` the controller recorded outlasts its agent's reports of `on`: a
    /// heartbeat sent before the agent was told (it is told right after the store records it)
    /// must not put the host back on.
    public static let standbyGraceSeconds: Double = 5

    /// The power a report of `reported` (nil: an agent that does not say: on), arriving at `now`,
    /// leaves on the host `previous` (nil: a new one), with the time it changed. The agent is the
    /// truth, but for a `standby` recorded less than `standbyGraceSeconds` ago.
    public static func reportedPower(_ reported: HostPower?, previous: HostRecord?, now: Date) -> (
        power: HostPower, since: Date?
    ) {
        let reported = reported == .standby ? HostPower.standby : .on
        guard let previous else { return (reported, nil) }
        if reported == .on, previous.power == .standby,
            now.timeIntervalSince(previous.powerSince ?? .distantPast) < standbyGraceSeconds
        {
            return (.standby, previous.powerSince)
        }
        return previous.power == reported ? (reported, previous.powerSince) : (reported, now)
    }

    /// The longest health reason kept (characters); a longer one is cut.
    public static let reasonLimit = 1000

    /// The health columns `report`, arriving at `now`, leaves on the host `previous` (nil: a new
    /// one), the same on every backend: failing keeps the time it turned failing and the earlier
    /// of its deadlines (a deadline only comes closer while the host stays failing); anything
    /// else drops both. A deadline is at most 10⁹ s away, the reason at most `reasonLimit` long.
    public static func reported(_ report: HostHealthReport, previous: HostRecord?, now: Date) -> (
        health: HostHealth, reason: String, evacuateBy: Date?, quarantinedAt: Date?
    ) {
        let reason = String(report.reason.prefix(Self.reasonLimit))
        guard report.health == .failing else { return (report.health, reason, nil, nil) }
        let stillFailing = previous?.health == .failing ? previous : nil
        var evacuateBy = report.evacuateWithinSeconds.map { now.addingTimeInterval(min(max(0, $0), 1e9)) }
        if let earlier = stillFailing?.evacuateBy { evacuateBy = min(evacuateBy ?? earlier, earlier) }
        return (.failing, reason, evacuateBy, stillFailing?.quarantinedAt ?? now)
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
