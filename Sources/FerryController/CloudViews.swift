import FerryControl
import FerryHostModel
import Foundation

/// A guest as the API shows it.
struct CloudGuestView: Codable, Sendable {
    var id: String
    var project: String
    var name: String
    var flavor: String
    var image: String
    var host: String
    /// The host the guest is being live-migrated to, while it is.
    var movingTo: String?
    var state: String
    var errorReason: String?
    var vcpus: Int
    var memoryBytes: Int
    var diskBytes: Int
    var pricePerSecondMicros: Int64
    var createdAt: String
    var stateSince: String
    /// The lease whose pool it is in.
    var lease: String?
    /// `live_only` or `live_then_cold` (`MigrationPolicy`).
    var migrationPolicy: String

    init(_ guest: CloudGuest) {
        migrationPolicy = guest.migrationPolicy.rawValue
        lease = guest.request.lease
        id = guest.id.hex
        project = guest.project
        name = guest.name.value
        flavor = guest.request.flavor
        image = guest.request.image
        host = guest.host
        movingTo = guest.movingTo
        state = guest.state.rawValue
        errorReason = guest.errorReason
        vcpus = guest.resources.vcpus
        memoryBytes = guest.resources.memoryBytes
        diskBytes = guest.resources.diskBytes
        pricePerSecondMicros = guest.pricePerSecondMicros
        createdAt = CloudViews.time(guest.createdAt)
        stateSince = CloudViews.time(guest.stateSince)
    }

    enum CodingKeys: String, CodingKey {
        case id, project, name, flavor, image, host, state, vcpus, lease
        case errorReason = "error_reason"
        case movingTo = "moving_to"
        case memoryBytes = "memory_bytes"
        case diskBytes = "disk_bytes"
        case pricePerSecondMicros = "price_per_second_micros"
        case createdAt = "created_at"
        case stateSince = "state_since"
        case migrationPolicy = "migration_policy"
    }
}

struct CloudGuestList: Codable, Sendable {
    var guests: [CloudGuestView]
}

/// What a create takes.
struct CreateGuestBody: Codable, Sendable {
    var name: String
    var flavor: String
    var image: String
    var clientToken: String?
    /// A delivered lease of the project: the guest goes into its private pool.
    var lease: String?
    /// `live_only` (nil: the default) or `live_then_cold`.
    var migrationPolicy: MigrationPolicy?

    enum CodingKeys: String, CodingKey {
        case name, flavor, image, lease
        case clientToken = "client_token"
        case migrationPolicy = "migration_policy"
    }
}

/// What `POST /v1/guests/{id}/policy` takes.
struct MigrationPolicyBody: Codable, Sendable {
    var migrationPolicy: MigrationPolicy

    enum CodingKeys: String, CodingKey {
        case migrationPolicy = "migration_policy"
    }
}

struct HostView: Codable, Sendable {
    var id: String
    var address: String
    var vcpus: Int
    var memoryBytes: Int
    var diskBytes: Int
    var usedVCPUs: Int
    var usedMemoryBytes: Int
    var usedDiskBytes: Int
    /// The agent reports a usable /dev/kvm: guests of `kvm` images are placed here.
    var kvm: Bool
    var health: String
    /// What the agent said is wrong (empty when healthy).
    var healthReason: String
    /// While the host is failing: when it was quarantined, and when its guests should be gone
    /// (RFC 3339); absent otherwise.
    var quarantinedAt: String?
    var evacuateBy: String?
    var takesGuests: Bool
    var lastHeartbeat: String
    /// `active`, `draining` or `drained` (`HostMode`), since when and why.
    var mode: String
    var modeSince: String?
    var modeCause: String?
    /// `on`, `standby` or `waking` (`HostPower`), and since when.
    var power: String
    var powerSince: String?

    init(_ host: HostRecord, used: Resources, now: Date, heartbeatTimeout: Duration) {
        id = host.id
        address = host.address
        vcpus = host.capacity.vcpus
        memoryBytes = host.capacity.memoryBytes
        diskBytes = host.capacity.diskBytes
        usedVCPUs = used.vcpus
        usedMemoryBytes = used.memoryBytes
        usedDiskBytes = used.diskBytes
        kvm = host.kvm
        health = host.health.rawValue
        healthReason = host.healthReason
        quarantinedAt = host.quarantinedAt.map(CloudViews.time)
        evacuateBy = host.evacuateBy.map(CloudViews.time)
        takesGuests = host.takesGuests(at: now, heartbeatTimeout: heartbeatTimeout)
        lastHeartbeat = CloudViews.time(host.lastHeartbeat)
        mode = host.mode.rawValue
        modeSince = host.modeSince.map(CloudViews.time)
        modeCause = host.modeCause.isEmpty ? nil : host.modeCause
        power = host.power.rawValue
        powerSince = host.powerSince.map(CloudViews.time)
    }

    enum CodingKeys: String, CodingKey {
        case id, address, vcpus, kvm, health, mode, power
        case powerSince = "power_since"
        case modeSince = "mode_since"
        case modeCause = "mode_cause"
        case healthReason = "health_reason"
        case quarantinedAt = "quarantined_at"
        case evacuateBy = "evacuate_by"
        case memoryBytes = "memory_bytes"
        case diskBytes = "disk_bytes"
        case usedVCPUs = "used_vcpus"
        case usedMemoryBytes = "used_memory_bytes"
        case usedDiskBytes = "used_disk_bytes"
        case takesGuests = "takes_guests"
        case lastHeartbeat = "last_heartbeat"
    }
}

struct HostList: Codable, Sendable {
    var hosts: [HostView]
}

struct JournalView: Codable, Sendable {
    struct Entry: Codable, Sendable {
        var sequence: Int64
        var time: String
        var from: String?
        var to: String
        var cause: String
    }
    var entries: [Entry]

    init(_ journal: [CloudJournalEntry]) {
        entries = journal.map {
            Entry(
                sequence: $0.sequence, time: CloudViews.time($0.time), from: $0.from?.rawValue, to: $0.to.rawValue,
                cause: $0.cause)
        }
    }
}

enum CloudViews {
    /// RFC 3339 with milliseconds, UTC, rounded to the nearest millisecond. (The format style
    /// truncates: a time the store read as 123 ms, a binary fraction just below .123, was shown
    /// as .122.)
    static func time(_ date: Date) -> String {
        let milliseconds = (date.timeIntervalSince1970 * 1000).rounded()
        return Date.ISO8601FormatStyle(includingFractionalSeconds: true).format(
            Date(timeIntervalSince1970: (milliseconds + 0.5) / 1000))
    }

    /// A time the API was given (a lease's `start` and `end`, an invoice's `from` and `to`):
    /// RFC 3339 (`2026-12-01T00:00:00Z`, `2026-12-01T00:00:00.250+02:00`: `RFC3339`) and, with
    /// `dates`, a date alone (`2026-12-01`, midnight UTC). Anything else is 422
    /// `invalid_field` naming `field`.
    static func parseTime(_ text: String, field: String, dates: Bool = false) throws(CloudAPIError) -> Date {
        if let date = RFC3339.parse(text, dates: dates) { return date }
        throw CloudAPIError(
            .unprocessableContent, "invalid_field",
            "\(field): \"\(text)\" is not an RFC 3339 time (2026-12-01T00:00:00Z)"
                + (dates ? " or a date (2026-12-01)" : ""), field: field)
    }

    /// `time` of Unix milliseconds.
    static func time(milliseconds: Int64) -> String { time(Date(timeIntervalSince1970: Double(milliseconds) / 1000)) }
}
