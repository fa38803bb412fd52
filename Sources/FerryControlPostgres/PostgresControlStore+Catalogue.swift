import FerryControl
import Foundation
import PostgresNIO

extension PostgresControlStore {
    public func reportHost(_ registration: HostRegistration) async throws(ControlError) -> HostHealthChange {
        try ControlRules.validate(registration)
        let date = now()
        let now = PostgresRows.milliseconds(date)
        let change = try await writing("register host \(registration.id) in") { connection in
            let previous = try await self.fetchHostIfAny(connection, registration.id)
            let health = HostRecord.reported(registration.healthReport, previous: previous, now: date)
            let capacity = registration.capacity
            let evacuateBy = health.evacuateBy.map(PostgresRows.milliseconds)
            let quarantined = health.quarantinedAt.map(PostgresRows.milliseconds)
            try await connection.query(
                """
                INSERT INTO hosts (\(unescaped: PostgresRows.hostColumns)) VALUES (\(registration.id),
                \(registration.address), \(capacity.vcpus), \(capacity.memoryBytes), \(capacity.diskBytes),
                \(registration.kvm), \(health.health.rawValue), \(health.reason), \(evacuateBy), \(quarantined), \(now),
                \(now))
                ON CONFLICT (id) DO UPDATE SET address = excluded.address, vcpus = excluded.vcpus,
                memory_bytes = excluded.memory_bytes, disk_bytes = excluded.disk_bytes, kvm = excluded.kvm,
                health = excluded.health, health_reason = excluded.health_reason,
                evacuate_by_ms = excluded.evacuate_by_ms, quarantined_ms = excluded.quarantined_ms,
                last_heartbeat_ms = excluded.last_heartbeat_ms
                """, logger: logger)
            let power = HostRecord.reportedPower(registration.power, previous: previous, now: date)
            let since = power.since.map(PostgresRows.milliseconds)
            try await connection.query(
                "UPDATE hosts SET power = \(power.power.rawValue), power_since_ms = \(since) WHERE id = \(registration.id)",
                logger: logger)
            return HostHealthChange(
                host: try await self.fetchHost(connection, registration.id), previous: previous?.health)
        }
        if change.previous == nil {
            logger.info(
                "host registered", metadata: ["host.id": "\(change.host.id)", "host.address": "\(change.host.address)"])
        }
        return change
    }

    public func heartbeat(host: String, health report: HostHealthReport) async throws(ControlError) -> HostRecord {
        let date = now()
        let now = PostgresRows.milliseconds(date)
        return try await writing("record a heartbeat of host \(host) in") { connection in
            guard let previous = try await self.fetchHostIfAny(connection, host) else {
                throw ControlError(.notFound, "no host \(host) is registered: its agent must register first")
            }
            let health = HostRecord.reported(report, previous: previous, now: date)
            let evacuateBy = health.evacuateBy.map(PostgresRows.milliseconds)
            let quarantined = health.quarantinedAt.map(PostgresRows.milliseconds)
            try await connection.query(
                """
                UPDATE hosts SET health = \(health.health.rawValue), health_reason = \(health.reason),
                evacuate_by_ms = \(evacuateBy), quarantined_ms = \(quarantined), last_heartbeat_ms = \(now)
                WHERE id = \(host)
                """, logger: logger)
            return try await self.fetchHost(connection, host)
        }
    }

    public func setHostMode(_ host: String, to mode: HostMode, from: Set<HostMode>?, cause: String)
        async throws(ControlError) -> HostRecord
    {
        let now = PostgresRows.milliseconds(now())
        let record = try await writing("change the mode of host \(host) in") { connection in
            let record = try await self.fetchHost(connection, host)
            guard let change = try ControlRules.hostModeChange(record, to: mode, from: from) else { return record }
            try await connection.query(
                "UPDATE hosts SET mode = \(change.rawValue), mode_since_ms = \(now), mode_cause = \(cause) WHERE id = \(host)",
                logger: logger)
            return try await self.fetchHost(connection, host)
        }
        logger.notice("host mode: \(record.mode.rawValue)", metadata: ["host.id": "\(host)", "host.cause": "\(cause)"])
        return record
    }

    public func setHostPower(_ host: String, to power: HostPower, from: Set<HostPower>?, cause: String)
        async throws(ControlError) -> HostRecord
    {
        let now = PostgresRows.milliseconds(now())
        let record = try await writing("change the power of host \(host) in") { connection in
            let record = try await self.fetchHost(connection, host)
            let holding = try await PostgresRows.all(
                connection,
                """
                SELECT id FROM guests WHERE (host = \(host) OR moving_to = \(host))
                AND state IN \(unescaped: ControlRules.holdingStatesSQL)
                """, logger: logger
            ) { row in try row["id"].decode(String.self) }
            guard let change = try ControlRules.hostPowerChange(record, to: power, from: from, holding: holding) else {
                return record
            }
            try await connection.query(
                "UPDATE hosts SET power = \(change.rawValue), power_since_ms = \(now) WHERE id = \(host)",
                logger: logger)
            return try await self.fetchHost(connection, host)
        }
        logger.notice(
            "host power: \(record.power.rawValue)", metadata: ["host.id": "\(host)", "host.cause": "\(cause)"])
        return record
    }

    public func hosts() async throws(ControlError) -> [HostRecord] {
        try await reading("list the hosts of") { connection in try await self.allHosts(connection) }
    }

    public func hostUsage() async throws(ControlError) -> [String: Resources] {
        try await reading("sum the guests of each host in") { connection in try await self.usageByHost(connection) }
    }

    public func addFlavor(_ flavor: Flavor) async throws(ControlError) {
        try ControlRules.validate(flavor)
        let resources = flavor.resources
        try await inserting(
            "flavor \(flavor.name)",
            """
            INSERT INTO flavors (name, vcpus, memory_bytes, disk_bytes, price_per_second_micros)
            VALUES (\(flavor.name), \(resources.vcpus), \(resources.memoryBytes), \(resources.diskBytes),
            \(flavor.pricePerSecondMicros))
            """)
    }

    public func flavors() async throws(ControlError) -> [Flavor] {
        try await reading("list the flavors of") { connection in
            try await PostgresRows.all(connection, "SELECT * FROM flavors ORDER BY name", logger: logger) { row in
                try PostgresRows.flavor(row)
            }
        }
    }

    public func addImage(_ image: Image) async throws(ControlError) {
        try ControlRules.validate(image)
        try await inserting(
            "image \(image.name)",
            "INSERT INTO images (name, kind, disk_template_path) VALUES (\(image.name), \(image.kind.rawValue), \(image.diskTemplatePath))"
        )
    }

    public func images() async throws(ControlError) -> [Image] {
        try await reading("list the images of") { connection in
            try await PostgresRows.all(connection, "SELECT * FROM images ORDER BY name", logger: logger) { row in
                try PostgresRows.image(row, url: self.url)
            }
        }
    }

    public func addProject(_ project: Project) async throws(ControlError) {
        try ControlRules.validate(project)
        let quota = project.quota
        try await inserting(
            "project \(project.name)",
            """
            INSERT INTO projects (name, quota_guests, quota_vcpus, quota_memory_bytes, quota_disk_bytes)
            VALUES (\(project.name), \(quota.guests), \(quota.resources.vcpus), \(quota.resources.memoryBytes),
            \(quota.resources.diskBytes))
            """)
    }

    /// A quota lowered below what the project holds refuses new guests until it holds less;
    /// nothing running is touched.
    public func setQuota(_ quota: Quota, project: String) async throws(ControlError) {
        try ControlRules.validate(quota, project: project)
        try await writing("set the quota of project \(project) in") { connection in
            let updated: [Bool] = try await PostgresRows.all(
                connection,
                """
                UPDATE projects SET quota_guests = \(quota.guests), quota_vcpus = \(quota.resources.vcpus),
                quota_memory_bytes = \(quota.resources.memoryBytes), quota_disk_bytes = \(quota.resources.diskBytes)
                WHERE name = \(project) RETURNING name
                """, logger: logger
            ) { _ in true }
            guard updated.count == 1 else { throw ControlError(.notFound, "no project \(project)") }
        }
    }

    public func projects() async throws(ControlError) -> [Project] {
        try await reading("list the projects of") { connection in
            try await PostgresRows.all(connection, "SELECT * FROM projects ORDER BY name", logger: logger) { row in
                try PostgresRows.project(row)
            }
        }
    }

    public func usage(project: String) async throws(ControlError) -> ProjectUsage {
        try await reading("sum the guests of project \(project) in") { connection in
            try await self.usage(connection, project: project)
        }
    }

    // MARK: - Inside a transaction

    func fetchHost(_ connection: PostgresConnection, _ id: String) async throws -> HostRecord {
        guard let host = try await fetchHostIfAny(connection, id) else {
            throw ControlError(.notFound, "no host \(id) is registered")
        }
        return host
    }

    /// The host, if registered (writes take the store's write lock: two reports of one host read
    /// each other's health in turn).
    func fetchHostIfAny(_ connection: PostgresConnection, _ id: String) async throws -> HostRecord? {
        try await PostgresRows.all(
            connection, "SELECT \(unescaped: PostgresRows.hostReadColumns) FROM hosts WHERE id = \(id)", logger: logger
        ) { row in try PostgresRows.host(row, url: url) }.first
    }

    func allHosts(_ connection: PostgresConnection) async throws -> [HostRecord] {
        try await PostgresRows.all(
            connection, "SELECT \(unescaped: PostgresRows.hostReadColumns) FROM hosts ORDER BY id", logger: logger
        ) { row in try PostgresRows.host(row, url: url) }
    }

    /// A guest that is moving counts on its host and on the host it moves to.
    func usageByHost(_ connection: PostgresConnection) async throws -> [String: Resources] {
        let rows = try await PostgresRows.all(
            connection,
            """
            SELECT host, SUM(vcpus)::BIGINT AS vcpus, SUM(memory_bytes)::BIGINT AS memory_bytes,
            SUM(disk_bytes)::BIGINT AS disk_bytes
            FROM (\(unescaped: ControlRules.holdingByHostSQL)) AS held GROUP BY host
            """, logger: logger
        ) { row in (try row["host"].decode(String.self), try PostgresRows.resources(row)) }
        return Dictionary(uniqueKeysWithValues: rows)
    }

    func usage(_ connection: PostgresConnection, project: String) async throws -> ProjectUsage {
        let rows = try await PostgresRows.all(
            connection,
            """
            SELECT COUNT(*) AS guests, COALESCE(SUM(vcpus), 0)::BIGINT AS vcpus,
            COALESCE(SUM(memory_bytes), 0)::BIGINT AS memory_bytes, COALESCE(SUM(disk_bytes), 0)::BIGINT AS disk_bytes
            FROM guests WHERE project = \(project) AND state IN \(unescaped: ControlRules.holdingStatesSQL)
            """, logger: logger
        ) { row in ProjectUsage(guests: try row["guests"].decode(Int.self), resources: try PostgresRows.resources(row))
        }
        return rows[0]
    }

    private func inserting(_ what: String, _ query: PostgresQuery) async throws(ControlError) {
        do {
            try await writing("add \(what) to") { connection in _ = try await connection.query(query, logger: logger) }
        } catch let error where (error.cause ?? "").contains("SQLSTATE 23505") {
            throw ControlError(.alreadyExists, "\(what) already exists in control store \(url)")
        }
        logger.info("catalogue changed", metadata: ["control.added": "\(what)"])
    }
}
