import FerryControl
import FerryHostModel
import Foundation
import Logging
import PostgresNIO

/// Reading and writing the controller's rows on PostgreSQL (the columns of ControlRows).
enum PostgresRows {
    static let hostColumns =
        "id, address, vcpus, memory_bytes, disk_bytes, kvm, health, health_reason, evacuate_by_ms, quarantined_ms,"
        + " last_heartbeat_ms, registered_ms"
    /// What a host's row is read with (`hostColumns` are what a registration writes).
    static let hostReadColumns = hostColumns + ", mode, mode_since_ms, mode_cause, power, power_since_ms"
    static let guestColumns =
        "id, project, name, flavor, image, vcpus, memory_bytes, disk_bytes, price_per_second_micros, image_kind,"
        + " disk_template_path, host, state, error_reason, client_token, generation, created_ms, state_since_ms,"
        + " lease_id, moving_to, migration_policy"

    /// Every row of `query`, each read by `read` (by column name).
    static func all<T>(
        _ connection: PostgresConnection, _ query: PostgresQuery, logger: Logger,
        _ read: (PostgresRandomAccessRow) throws -> T
    ) async throws -> [T] {
        var result: [T] = []
        for try await row in try await connection.query(query, logger: logger) {
            result.append(try read(row.makeRandomAccess()))
        }
        return result
    }

    static func resources(_ row: PostgresRandomAccessRow) throws -> Resources {
        Resources(
            vcpus: try row["vcpus"].decode(Int.self), memoryBytes: try row["memory_bytes"].decode(Int.self),
            diskBytes: try row["disk_bytes"].decode(Int.self))
    }

    static func host(_ row: PostgresRandomAccessRow, url: PostgresURL) throws -> HostRecord {
        let id = try row["id"].decode(String.self)
        guard let health = HostHealth(rawValue: try row["health"].decode(String.self)),
            let mode = HostMode(rawValue: try row["mode"].decode(String.self)),
            let power = HostPower(rawValue: try row["power"].decode(String.self))
        else {
            throw unreadable(url, "host \(id)")
        }
        return HostRecord(
            id: id, address: try row["address"].decode(String.self), capacity: try resources(row),
            kvm: try row["kvm"].decode(Bool.self), health: health,
            healthReason: try row["health_reason"].decode(String.self),
            evacuateBy: try row["evacuate_by_ms"].decode(Int64?.self).map(date),
            quarantinedAt: try row["quarantined_ms"].decode(Int64?.self).map(date),
            lastHeartbeat: date(try row["last_heartbeat_ms"].decode(Int64.self)),
            registeredAt: date(try row["registered_ms"].decode(Int64.self)), mode: mode,
            modeSince: try row["mode_since_ms"].decode(Int64?.self).map(date),
            modeCause: try row["mode_cause"].decode(String.self), power: power,
            powerSince: try row["power_since_ms"].decode(Int64?.self).map(date))
    }

    static func flavor(_ row: PostgresRandomAccessRow) throws -> Flavor {
        Flavor(
            name: try row["name"].decode(String.self), resources: try resources(row),
            pricePerSecondMicros: try row["price_per_second_micros"].decode(Int64.self))
    }

    static func image(_ row: PostgresRandomAccessRow, url: PostgresURL) throws -> Image {
        let name = try row["name"].decode(String.self)
        guard let kind = GuestSpecification.Kind(rawValue: try row["kind"].decode(String.self)) else {
            throw unreadable(url, "image \(name)")
        }
        return Image(name: name, kind: kind, diskTemplatePath: try row["disk_template_path"].decode(String.self))
    }

    static func project(_ row: PostgresRandomAccessRow) throws -> Project {
        Project(
            name: try row["name"].decode(String.self),
            quota: Quota(
                guests: try row["quota_guests"].decode(Int.self),
                resources: Resources(
                    vcpus: try row["quota_vcpus"].decode(Int.self),
                    memoryBytes: try row["quota_memory_bytes"].decode(Int.self),
                    diskBytes: try row["quota_disk_bytes"].decode(Int.self))))
    }

    static func guest(_ row: PostgresRandomAccessRow, url: PostgresURL) throws -> CloudGuest {
        let idText = try row["id"].decode(String.self)
        guard let id = try? GuestID(idText), let name = try? GuestName(try row["name"].decode(String.self)),
            let state = CloudGuestState(rawValue: try row["state"].decode(String.self)),
            let kind = GuestSpecification.Kind(rawValue: try row["image_kind"].decode(String.self)),
            let policy = MigrationPolicy(rawValue: try row["migration_policy"].decode(String.self))
        else { throw unreadable(url, "guest \(idText)") }
        let request = GuestRequest(
            project: try row["project"].decode(String.self), name: name, flavor: try row["flavor"].decode(String.self),
            image: try row["image"].decode(String.self), lease: try row["lease_id"].decode(String?.self),
            migrationPolicy: policy)
        return CloudGuest(
            id: id, request: request, resources: try resources(row),
            pricePerSecondMicros: try row["price_per_second_micros"].decode(Int64.self), imageKind: kind,
            diskTemplatePath: try row["disk_template_path"].decode(String.self),
            host: try row["host"].decode(String.self), state: state,
            errorReason: try row["error_reason"].decode(String?.self),
            clientToken: try row["client_token"].decode(String?.self),
            generation: try row["generation"].decode(Int64.self),
            createdAt: date(try row["created_ms"].decode(Int64.self)),
            stateSince: date(try row["state_since_ms"].decode(Int64.self)),
            movingTo: try row["moving_to"].decode(String?.self))
    }

    static func insert(_ guest: CloudGuest, _ connection: PostgresConnection, logger: Logger) async throws {
        let resources = guest.resources
        try await connection.query(
            """
            INSERT INTO guests (\(unescaped: guestColumns)) VALUES (\(guest.id.hex), \(guest.project),
            \(guest.name.value), \(guest.request.flavor), \(guest.request.image), \(resources.vcpus),
            \(resources.memoryBytes), \(resources.diskBytes), \(guest.pricePerSecondMicros),
            \(guest.imageKind.rawValue), \(guest.diskTemplatePath), \(guest.host), \(guest.state.rawValue),
            \(guest.errorReason), \(guest.clientToken), \(guest.generation), \(milliseconds(guest.createdAt)),
            \(milliseconds(guest.stateSince)), \(guest.request.lease), \(guest.movingTo),
            \(guest.migrationPolicy.rawValue))
            """, logger: logger)
    }

    static func journalEntry(_ row: PostgresRandomAccessRow, url: PostgresURL) throws -> CloudJournalEntry {
        let sequence = try row["sequence"].decode(Int64.self)
        let fromText = try row["from_state"].decode(String?.self)
        guard let id = try? GuestID(try row["guest_id"].decode(String.self)),
            let to = CloudGuestState(rawValue: try row["to_state"].decode(String.self)),
            fromText == nil || CloudGuestState(rawValue: fromText!) != nil
        else { throw unreadable(url, "journal row \(sequence)") }
        return CloudJournalEntry(
            sequence: sequence, guestID: id, time: date(try row["time_ms"].decode(Int64.self)),
            from: fromText.flatMap(CloudGuestState.init(rawValue:)), to: to, cause: try row["cause"].decode(String.self)
        )
    }

    static func appendJournal(
        _ connection: PostgresConnection, id: GuestID, from: CloudGuestState?, to: CloudGuestState, cause: String,
        at time: Date, logger: Logger
    ) async throws {
        try await connection.query(
            """
            INSERT INTO journal (guest_id, time_ms, from_state, to_state, cause)
            VALUES (\(id.hex), \(milliseconds(time)), \(from?.rawValue), \(to.rawValue), \(cause))
            """, logger: logger)
    }

    static func milliseconds(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1000).rounded()) }
    static func date(_ milliseconds: Int64) -> Date { Date(timeIntervalSince1970: Double(milliseconds) / 1000) }

    private static func unreadable(_ url: PostgresURL, _ what: String) -> ControlError {
        ControlError(
            .unusableDatabase,
            "control store \(url): the row of \(what) cannot be read; it was not written by this Ferry: restore the"
                + " database from a backup")
    }
}
