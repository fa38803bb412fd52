import Foundation
import GRDB

extension SQLiteControlStore {
    public func reportHost(_ registration: HostRegistration) async throws(ControlError) -> HostHealthChange {
        try ControlRules.validate(registration)
        let now = now()
        let change = try await writing("register host \(registration.id) in") { db in
            let previous = try self.fetchHostIfAny(db, registration.id)
            let health = HostRecord.reported(registration.healthReport, previous: previous, now: now)
            let capacity = registration.capacity
            try db.execute(
                sql: """
                    INSERT INTO hosts (\(ControlRows.hostColumns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT (id) DO UPDATE SET address = excluded.address, vcpus = excluded.vcpus,
                    memory_bytes = excluded.memory_bytes, disk_bytes = excluded.disk_bytes, kvm = excluded.kvm,
                    health = excluded.health, health_reason = excluded.health_reason,
                    evacuate_by_ms = excluded.evacuate_by_ms, quarantined_ms = excluded.quarantined_ms,
                    last_heartbeat_ms = excluded.last_heartbeat_ms
                    """,
                arguments: [
                    registration.id, registration.address, capacity.vcpus, capacity.memoryBytes, capacity.diskBytes,
                    registration.kvm ? 1 : 0, health.health.rawValue, health.reason,
                    health.evacuateBy.map(ControlRows.milliseconds), health.quarantinedAt.map(ControlRows.milliseconds),
                    ControlRows.milliseconds(now), ControlRows.milliseconds(now),
                ])
            let power = HostRecord.reportedPower(registration.power, previous: previous, now: now)
            try db.execute(
                sql: "UPDATE hosts SET power = ?, power_since_ms = ? WHERE id = ?",
                arguments: [power.power.rawValue, power.since.map(ControlRows.milliseconds), registration.id])
            return HostHealthChange(host: try self.fetchHost(db, registration.id), previous: previous?.health)
        }
        if change.previous == nil {
            logger.info(
                "host registered", metadata: ["host.id": "\(change.host.id)", "host.address": "\(change.host.address)"])
        }
        return change
    }

    public func heartbeat(host: String, health report: HostHealthReport) async throws(ControlError) -> HostRecord {
        let now = now()
        return try await writing("record a heartbeat of host \(host) in") { db in
            guard let previous = try self.fetchHostIfAny(db, host) else {
                throw ControlError(.notFound, "no host \(host) is registered: its agent must register first")
            }
            let health = HostRecord.reported(report, previous: previous, now: now)
            try db.execute(
                sql: """
                    UPDATE hosts SET health = ?, health_reason = ?, evacuate_by_ms = ?, quarantined_ms = ?,
                    last_heartbeat_ms = ? WHERE id = ?
                    """,
                arguments: [
                    health.health.rawValue, health.reason, health.evacuateBy.map(ControlRows.milliseconds),
                    health.quarantinedAt.map(ControlRows.milliseconds), ControlRows.milliseconds(now), host,
                ])
            return try self.fetchHost(db, host)
        }
    }

    public func setHostMode(_ host: String, to mode: HostMode, from: Set<HostMode>?, cause: String)
        async throws(ControlError) -> HostRecord
    {
        let now = ControlRows.milliseconds(now())
        let record = try await writing("change the mode of host \(host) in") { db in
            let record = try self.fetchHost(db, host)
            guard let change = try ControlRules.hostModeChange(record, to: mode, from: from) else { return record }
            try db.execute(
                sql: "UPDATE hosts SET mode = ?, mode_since_ms = ?, mode_cause = ? WHERE id = ?",
                arguments: [change.rawValue, now, cause, host])
            return try self.fetchHost(db, host)
        }
        logger.notice("host mode: \(record.mode.rawValue)", metadata: ["host.id": "\(host)", "host.cause": "\(cause)"])
        return record
    }

    public func setHostPower(_ host: String, to power: HostPower, from: Set<HostPower>?, cause: String)
        async throws(ControlError) -> HostRecord
    {
        let now = ControlRows.milliseconds(now())
        let record = try await writing("change the power of host \(host) in") { db in
            let record = try self.fetchHost(db, host)
            let holding = try String.fetchAll(
                db,
                sql:
                    "SELECT id FROM guests WHERE (host = ? OR moving_to = ?) AND state IN \(ControlRules.holdingStatesSQL)",
                arguments: [host, host])
            guard let change = try ControlRules.hostPowerChange(record, to: power, from: from, holding: holding) else {
                return record
            }
            try db.execute(
                sql: "UPDATE hosts SET power = ?, power_since_ms = ? WHERE id = ?",
                arguments: [change.rawValue, now, host])
            return try self.fetchHost(db, host)
        }
        logger.notice(
            "host power: \(record.power.rawValue)", metadata: ["host.id": "\(host)", "host.cause": "\(cause)"])
        return record
    }

    public func hosts() async throws(ControlError) -> [HostRecord] {
        try await reading("list the hosts of") { db in try self.allHosts(db) }
    }

    public func hostUsage() async throws(ControlError) -> [String: Resources] {
        try await reading("sum the guests of each host in") { db in try self.usageByHost(db) }
    }

    public func addFlavor(_ flavor: Flavor) async throws(ControlError) {
        try flavor.validate()
        try await inserting("flavor \(flavor.name)") { db in
            try db.execute(
                sql: "INSERT INTO flavors (name, vcpus, memory_bytes, disk_bytes, price_per_second_micros)"
                    + " VALUES (?, ?, ?, ?, ?)",
                arguments: [
                    flavor.name, flavor.resources.vcpus, flavor.resources.memoryBytes, flavor.resources.diskBytes,
                    flavor.pricePerSecondMicros,
                ])
        }
    }

    public func flavors() async throws(ControlError) -> [Flavor] {
        try await reading("list the flavors of") { db in
            try Row.fetchAll(db, sql: "SELECT * FROM flavors ORDER BY name").map(ControlRows.flavor)
        }
    }

    public func addImage(_ image: Image) async throws(ControlError) {
        try image.validate()
        try await inserting("image \(image.name)") { db in
            try db.execute(
                sql: "INSERT INTO images (name, kind, disk_template_path) VALUES (?, ?, ?)",
                arguments: [image.name, image.kind.rawValue, image.diskTemplatePath])
        }
    }

    public func images() async throws(ControlError) -> [Image] {
        try await reading("list the images of") { db in
            try Row.fetchAll(db, sql: "SELECT * FROM images ORDER BY name")
                .map { row in try ControlRows.image(row, file: self.path) }
        }
    }

    public func addProject(_ project: Project) async throws(ControlError) {
        try ControlNames.validate(project.name, "project")
        try project.quota.validate(project.name)
        try await inserting("project \(project.name)") { db in
            let quota = project.quota
            try db.execute(
                sql: "INSERT INTO projects (name, quota_guests, quota_vcpus, quota_memory_bytes, quota_disk_bytes)"
                    + " VALUES (?, ?, ?, ?, ?)",
                arguments: [
                    project.name, quota.guests, quota.resources.vcpus, quota.resources.memoryBytes,
                    quota.resources.diskBytes,
                ])
        }
    }

    /// A quota lowered below what the project holds refuses new guests until it holds less;
    /// nothing running is touched.
    public func setQuota(_ quota: Quota, project: String) async throws(ControlError) {
        try quota.validate(project)
        try await writing("set the quota of project \(project) in") { db in
            try db.execute(
                sql: "UPDATE projects SET quota_guests = ?, quota_vcpus = ?, quota_memory_bytes = ?,"
                    + " quota_disk_bytes = ? WHERE name = ?",
                arguments: [
                    quota.guests, quota.resources.vcpus, quota.resources.memoryBytes, quota.resources.diskBytes,
                    project,
                ])
            guard db.changesCount == 1 else { throw ControlError(.notFound, "no project \(project)") }
        }
    }

    public func projects() async throws(ControlError) -> [Project] {
        try await reading("list the projects of") { db in
            try Row.fetchAll(db, sql: "SELECT * FROM projects ORDER BY name").map(ControlRows.project)
        }
    }

    public func usage(project: String) async throws(ControlError) -> ProjectUsage {
        try await reading("sum the guests of project \(project) in") { db in try self.usage(db, project: project) }
    }

    // MARK: - Inside a transaction

    func fetchHost(_ db: Database, _ id: String) throws -> HostRecord {
        guard let host = try fetchHostIfAny(db, id) else {
            throw ControlError(.notFound, "no host \(id) is registered")
        }
        return host
    }

    func fetchHostIfAny(_ db: Database, _ id: String) throws -> HostRecord? {
        try Row.fetchOne(db, sql: "SELECT \(ControlRows.hostReadColumns) FROM hosts WHERE id = ?", arguments: [id]).map
        {
            try ControlRows.host($0, file: path)
        }
    }

    /// A guest that is moving counts on its host and on the host it moves to.
    func usageByHost(_ db: Database) throws -> [String: Resources] {
        let rows = try Row.fetchAll(
            db,
            sql: """
                SELECT host, SUM(vcpus) AS vcpus, SUM(memory_bytes) AS memory_bytes, SUM(disk_bytes) AS disk_bytes
                FROM (\(ControlRules.holdingByHostSQL)) GROUP BY host
                """)
        return Dictionary(uniqueKeysWithValues: rows.map { row in (row["host"] as String, ControlRows.resources(row)) })
    }

    func usage(_ db: Database, project: String) throws -> ProjectUsage {
        let row = try Row.fetchOne(
            db,
            sql: """
                SELECT COUNT(*) AS guests, COALESCE(SUM(vcpus), 0) AS vcpus, COALESCE(SUM(memory_bytes), 0) AS memory_bytes,
                COALESCE(SUM(disk_bytes), 0) AS disk_bytes FROM guests WHERE project = ? AND state IN \(ControlRows.holdingStates)
                """, arguments: [project])!
        return ProjectUsage(guests: row["guests"], resources: ControlRows.resources(row))
    }

    private func inserting(_ what: String, _ body: @escaping @Sendable (Database) throws -> Void)
        async throws(ControlError)
    {
        do {
            try await writing("add \(what) to", body)
        } catch let error where (error.cause ?? "").contains("UNIQUE constraint failed") {
            throw ControlError(.alreadyExists, "\(what) already exists in control store \(path)")
        }
        logger.info("catalogue changed", metadata: ["control.added": "\(what)"])
    }
}
