import FerryHostModel
import Foundation
import GRDB

/// Reading and writing the controller's rows.
enum ControlRows {
    static let hostColumns =
        "id, address, vcpus, memory_bytes, disk_bytes, kvm, health, health_reason, evacuate_by_ms, quarantined_ms,"
        + " last_heartbeat_ms, registered_ms"
    /// What a host's row is read with (`hostColumns` are what a registration writes).
    static let hostReadColumns = hostColumns + ", mode, mode_since_ms, mode_cause, power, power_since_ms"
    static let guestColumns =
        "id, project, name, flavor, image, vcpus, memory_bytes, disk_bytes, price_per_second_micros, image_kind,"
        + " disk_template_path, host, state, error_reason, client_token, generation, created_ms, state_since_ms,"
        + " lease_id, moving_to, migration_policy"

    static func resources(_ row: Row) -> Resources {
        Resources(vcpus: row["vcpus"], memoryBytes: row["memory_bytes"], diskBytes: row["disk_bytes"])
    }

    static func host(_ row: Row, file: String) throws -> HostRecord {
        guard let health = HostHealth(rawValue: row["health"]), let mode = HostMode(rawValue: row["mode"]),
            let power = HostPower(rawValue: row["power"])
        else {
            throw unreadable(file, "host \(row["id"] as String)")
        }
        let modeSince: Int64? = row["mode_since_ms"]
        return HostRecord(
            id: row["id"], address: row["address"], capacity: resources(row), kvm: row["kvm"],
            health: health, healthReason: row["health_reason"],
            evacuateBy: (row["evacuate_by_ms"] as Int64?).map(date),
            quarantinedAt: (row["quarantined_ms"] as Int64?).map(date),
            lastHeartbeat: date(row["last_heartbeat_ms"]), registeredAt: date(row["registered_ms"]), mode: mode,
            modeSince: modeSince.map(date), modeCause: row["mode_cause"], power: power,
            powerSince: (row["power_since_ms"] as Int64?).map(date))
    }

    static func flavor(_ row: Row) -> Flavor {
        Flavor(name: row["name"], resources: resources(row), pricePerSecondMicros: row["price_per_second_micros"])
    }

    static func image(_ row: Row, file: String) throws -> Image {
        guard let kind = GuestSpecification.Kind(rawValue: row["kind"]) else {
            throw unreadable(file, "image \(row["name"] as String)")
        }
        return Image(name: row["name"], kind: kind, diskTemplatePath: row["disk_template_path"])
    }

    static func project(_ row: Row) -> Project {
        Project(
            name: row["name"],
            quota: Quota(
                guests: row["quota_guests"],
                resources: Resources(
                    vcpus: row["quota_vcpus"], memoryBytes: row["quota_memory_bytes"],
                    diskBytes: row["quota_disk_bytes"])))
    }

    static func guest(_ row: Row, file: String) throws -> CloudGuest {
        let idText: String = row["id"]
        guard let id = try? GuestID(idText), let name = try? GuestName(row["name"] as String),
            let state = CloudGuestState(rawValue: row["state"]),
            let kind = GuestSpecification.Kind(rawValue: row["image_kind"]),
            let policy = MigrationPolicy(rawValue: row["migration_policy"])
        else { throw unreadable(file, "guest \(idText)") }
        return CloudGuest(
            id: id,
            request: GuestRequest(
                project: row["project"], name: name, flavor: row["flavor"], image: row["image"], lease: row["lease_id"],
                migrationPolicy: policy),
            resources: resources(row), pricePerSecondMicros: row["price_per_second_micros"], imageKind: kind,
            diskTemplatePath: row["disk_template_path"], host: row["host"], state: state,
            errorReason: row["error_reason"], clientToken: row["client_token"], generation: row["generation"],
            createdAt: date(row["created_ms"]), stateSince: date(row["state_since_ms"]), movingTo: row["moving_to"])
    }

    static func insert(_ guest: CloudGuest, _ db: Database) throws {
        try db.execute(
            sql:
                "INSERT INTO guests (\(guestColumns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            arguments: [
                guest.id.hex, guest.project, guest.name.value, guest.request.flavor, guest.request.image,
                guest.resources.vcpus, guest.resources.memoryBytes, guest.resources.diskBytes,
                guest.pricePerSecondMicros, guest.imageKind.rawValue, guest.diskTemplatePath, guest.host,
                guest.state.rawValue, guest.errorReason, guest.clientToken, guest.generation,
                milliseconds(guest.createdAt), milliseconds(guest.stateSince), guest.request.lease, guest.movingTo,
                guest.migrationPolicy.rawValue,
            ])
    }

    static func journalEntry(_ row: Row, file: String) throws -> CloudJournalEntry {
        let fromText: String? = row["from_state"]
        guard let id = try? GuestID(row["guest_id"] as String), let to = CloudGuestState(rawValue: row["to_state"]),
            fromText == nil || CloudGuestState(rawValue: fromText!) != nil
        else { throw unreadable(file, "journal row \(row["sequence"] as Int64)") }
        return CloudJournalEntry(
            sequence: row["sequence"], guestID: id, time: date(row["time_ms"]),
            from: fromText.flatMap(CloudGuestState.init(rawValue:)), to: to, cause: row["cause"])
    }

    static func appendJournal(
        _ db: Database, id: GuestID, from: CloudGuestState?, to: CloudGuestState, cause: String, at time: Date
    ) throws {
        try db.execute(
            sql: "INSERT INTO journal (guest_id, time_ms, from_state, to_state, cause) VALUES (?, ?, ?, ?, ?)",
            arguments: [id.hex, milliseconds(time), from?.rawValue, to.rawValue, cause])
    }

    /// States as an SQL list of literals, `('building', 'running')` (their raw values hold only
    /// letters, so nothing needs quoting); `('')` for none, which matches no row.
    static func sqlList(_ states: Set<CloudGuestState>) -> String {
        let names = states.map(\.rawValue).sorted()
        return "(" + (names.isEmpty ? "''" : names.map { "'\($0)'" }.joined(separator: ", ")) + ")"
    }

    /// The states that hold capacity, as an SQL list: `('pending', 'building', …)`.
    static let holdingStates =
        "(" + CloudGuestState.allCases.filter(\.holdsCapacity).map { "'\($0.rawValue)'" }.joined(separator: ", ") + ")"

    static func milliseconds(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1000).rounded()) }
    static func date(_ milliseconds: Int64) -> Date { Date(timeIntervalSince1970: Double(milliseconds) / 1000) }

    private static func unreadable(_ file: String, _ what: String) -> ControlError {
        ControlError(
            .unusableDatabase,
            "control store \(file): the row of \(what) cannot be read; it was not written by this Ferry: restore the"
                + " file from a backup")
    }
}
