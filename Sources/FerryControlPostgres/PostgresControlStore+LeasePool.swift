import FerryControl
import FerryHostModel
import Foundation
import PostgresNIO

extension PostgresControlStore {
    public func leasesInWindow(at now: Date) async throws(ControlError) -> [LeaseRecord] {
        try await reading("list the leases in their window in") { connection in
            try await fetchLeases(
                connection, "state = 'admitted' AND phase != 'ended' AND start_ms <= \(Billing.milliseconds(now))")
        }
    }

    /// In the write transaction creates take (their advisory lock), so that slots and
    /// placements never count the same capacity twice.
    public func planLeaseDelivery(id: String) async throws(ControlError) -> (LeaseRecord, DeliveryPlan) {
        let now = now()
        return try await writing("plan the delivery of lease \(id) in") { connection in
            guard let lease = try await fetchLeases(connection, "id = \(id)").first, lease.state == .admitted,
                lease.phase != .ended
            else { throw ControlError(.notFound, "no lease \(id) in its window") }
            let plan = ControlRules.planDelivery(
                lease, needsKVM: try await leaseNeedsKVM(connection, lease),
                leases: try await fetchLeases(
                    connection, "state = 'admitted' AND phase IN ('delivering', 'active', 'short')"),
                guests: try await holdingGuests(connection, "TRUE"), hosts: try await allHosts(connection), now: now,
                heartbeatTimeout: heartbeatTimeout)
            let planned = ControlRules.leaseDeliveryPlanned(lease, plan: plan, now: now)
            // A plan that changes nothing (a short lease planned again) writes nothing.
            if planned != lease { try await writeLease(connection, planned) }
            return (planned, plan)
        }
    }

    public func changeLease(id: String, to phase: LeasePhase, shortUnits: Int, note: String) async throws(ControlError)
        -> LeaseRecord
    {
        let now = now()
        let lease = try await writing("change the phase of lease \(id) in") { connection in
            guard let lease = try await fetchLeases(connection, "id = \(id)").first else {
                throw ControlError(.notFound, "no lease \(id)")
            }
            let changed = ControlRules.leaseChanged(lease, to: phase, shortUnits: shortUnits, note: note, now: now)
            try await writeLease(connection, changed)
            return changed
        }
        logger.info(
            "lease phase changed",
            metadata: ["lease.id": "\(id)", "lease.phase": "\(phase.rawValue)", "note": "\(note)"])
        return lease
    }

    public func extendLease(id: String) async throws(ControlError) -> LeaseRecord {
        try await writing("extend lease \(id) in") { connection in
            guard var lease = try await fetchLeases(connection, "id = \(id)").first, lease.state == .admitted else {
                throw ControlError(.notFound, "no admitted lease \(id)")
            }
            guard
                let flavor = try await PostgresRows.all(
                    connection, "SELECT * FROM flavors WHERE name = \(lease.flavor)", logger: logger,
                    PostgresRows.flavor
                ).first
            else { throw ControlError(.notFound, "no flavor \(lease.flavor) any more: the lease cannot be extended") }
            let next = lease.end.addingTimeInterval(lease.end.timeIntervalSince(lease.start))
            let admitted = try await fetchLeases(
                connection,
                """
                state = 'admitted' AND (end_ms > \(Billing.milliseconds(lease.end)) OR (at_end = 'suspend' AND \
                phase != 'ended')) AND id != \(id)
                """)
            _ = try ControlRules.admitLease(
                LeaseSubmission(
                    project: lease.project, flavor: lease.flavor, count: lease.count, start: lease.end, end: next),
                id: id, flavor: flavor, hosts: try await allHosts(connection),
                usage: ["": try await onDemandUsage(connection)], admitted: admitted, now: now(),
                heartbeatTimeout: heartbeatTimeout)
            lease.end = next
            try await writeLease(connection, lease)
            return lease
        }
    }

    // MARK: - Inside a transaction

    /// The leases matching `condition` (SQL over the leases table, with its binds), by start,
    /// with their slots.
    func fetchLeases(_ connection: PostgresConnection, _ condition: PostgresQuery) async throws -> [LeaseRecord] {
        let query = PostgresQuery(
            unsafeSQL: "SELECT * FROM leases WHERE \(condition.sql) ORDER BY start_ms, id", binds: condition.binds)
        var leases = try await PostgresRows.all(connection, query, logger: logger) { row in
            try Self.lease(row, url: url)
        }
        guard !leases.isEmpty else { return [] }
        let slots = try await PostgresRows.all(
            connection, "SELECT lease_id, host, units FROM lease_slots WHERE lease_id = ANY(\(leases.map(\.id)))",
            logger: logger
        ) { row in
            (
                try row["lease_id"].decode(String.self), try row["host"].decode(String.self),
                Int(try row["units"].decode(Int64.self))
            )
        }
        for (lease, host, units) in slots {
            if let index = leases.firstIndex(where: { $0.id == lease }) { leases[index].slots[host] = units }
        }
        return leases
    }

    /// The guests holding capacity that match `condition` (SQL over the guests table).
    func holdingGuests(_ connection: PostgresConnection, _ condition: PostgresQuery) async throws -> [CloudGuest] {
        let query = PostgresQuery(
            unsafeSQL: "SELECT \(PostgresRows.guestColumns) FROM guests WHERE state IN \(ControlRules.holdingStatesSQL)"
                + " AND \(condition.sql) ORDER BY created_ms, id", binds: condition.binds)
        return try await PostgresRows.all(connection, query, logger: logger) { row in
            try PostgresRows.guest(row, url: url)
        }
    }

    /// What the guests outside every delivered lease's pool hold (the on-demand load).
    func onDemandUsage(_ connection: PostgresConnection) async throws -> Resources {
        try await PostgresRows.all(
            connection,
            """
            SELECT COALESCE(SUM(vcpus), 0)::BIGINT AS vcpus, COALESCE(SUM(memory_bytes), 0)::BIGINT AS memory_bytes,
            COALESCE(SUM(disk_bytes), 0)::BIGINT AS disk_bytes FROM guests
            WHERE state IN \(unescaped: ControlRules.holdingStatesSQL) AND (lease_id IS NULL OR lease_id NOT IN
            (SELECT id FROM leases WHERE phase IN ('delivering', 'active', 'short')))
            """, logger: logger, PostgresRows.resources)[0]
    }

    /// Whether the lease's guests need KVM: it boots guests of a kvm image.
    func leaseNeedsKVM(_ connection: PostgresConnection, _ lease: LeaseRecord) async throws -> Bool {
        guard let image = lease.image else { return false }
        return try await PostgresRows.all(
            connection, "SELECT kind FROM images WHERE name = \(image)", logger: logger,
            { row in try row["kind"].decode(String.self) }
        ).first == "kvm"
    }

    /// Writes what changes in a lease (its end, state, phase, SLA record) and replaces its slots.
    func writeLease(_ connection: PostgresConnection, _ lease: LeaseRecord) async throws {
        try await connection.query(
            """
            UPDATE leases SET end_ms = \(Billing.milliseconds(lease.end)), state = \(lease.state.rawValue),
            phase = \(lease.phase.rawValue), delivered_ms = \(lease.deliveredAt.map(Billing.milliseconds)),
            ended_ms = \(lease.endedAt.map(Billing.milliseconds)), short_units = \(lease.shortUnits),
            short_ms = \(lease.shortMilliseconds), short_since_ms = \(lease.shortSince.map(Billing.milliseconds)),
            note = \(lease.note) WHERE id = \(lease.id)
            """, logger: logger)
        try await connection.query("DELETE FROM lease_slots WHERE lease_id = \(lease.id)", logger: logger)
        for (host, units) in lease.slots.sorted(by: { $0.key < $1.key }) where units > 0 {
            try await connection.query(
                "INSERT INTO lease_slots (lease_id, host, units) VALUES (\(lease.id), \(host), \(units))",
                logger: logger)
        }
    }
}
