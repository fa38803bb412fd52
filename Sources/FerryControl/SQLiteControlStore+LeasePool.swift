import FerryHostModel
import Foundation
import GRDB

extension SQLiteControlStore {
    public func leasesInWindow(at now: Date) async throws(ControlError) -> [LeaseRecord] {
        try await reading("list the leases in their window in") { db in
            try self.fetchLeases(
                db, "state = 'admitted' AND phase != 'ended' AND start_ms <= ?", [Billing.milliseconds(now)])
        }
    }

    public func planLeaseDelivery(id: String) async throws(ControlError) -> (LeaseRecord, DeliveryPlan) {
        let now = now()
        return try await writing("plan the delivery of lease \(id) in") { db in
            guard let lease = try self.fetchLeases(db, "id = ?", [id]).first, lease.state == .admitted,
                lease.phase != .ended
            else { throw ControlError(.notFound, "no lease \(id) in its window") }
            let needsKVM = try self.leaseNeedsKVM(db, lease)
            let plan = ControlRules.planDelivery(
                lease, needsKVM: needsKVM, leases: try self.slotHoldingLeases(db),
                guests: try self.holdingGuests(db, "1 = 1", []), hosts: try self.allHosts(db), now: now,
                heartbeatTimeout: self.heartbeatTimeout)
            let planned = ControlRules.leaseDeliveryPlanned(lease, plan: plan, now: now)
            // A plan that changes nothing (a short lease planned again) writes nothing.
            if planned != lease { try self.writeLease(db, planned) }
            return (planned, plan)
        }
    }

    public func changeLease(id: String, to phase: LeasePhase, shortUnits: Int, note: String) async throws(ControlError)
        -> LeaseRecord
    {
        let now = now()
        let lease = try await writing("change the phase of lease \(id) in") { db in
            guard let lease = try self.fetchLeases(db, "id = ?", [id]).first else {
                throw ControlError(.notFound, "no lease \(id)")
            }
            let changed = ControlRules.leaseChanged(lease, to: phase, shortUnits: shortUnits, note: note, now: now)
            try self.writeLease(db, changed)
            return changed
        }
        logger.info(
            "lease phase changed",
            metadata: ["lease.id": "\(id)", "lease.phase": "\(phase.rawValue)", "note": "\(note)"])
        return lease
    }

    public func extendLease(id: String) async throws(ControlError) -> LeaseRecord {
        try await writing("extend lease \(id) in") { db in
            guard var lease = try self.fetchLeases(db, "id = ?", [id]).first, lease.state == .admitted else {
                throw ControlError(.notFound, "no admitted lease \(id)")
            }
            guard
                let flavorRow = try Row.fetchOne(
                    db, sql: "SELECT * FROM flavors WHERE name = ?", arguments: [lease.flavor])
            else { throw ControlError(.notFound, "no flavor \(lease.flavor) any more: the lease cannot be extended") }
            let next = lease.end.addingTimeInterval(lease.end.timeIntervalSince(lease.start))
            let admitted = try self.fetchLeases(
                db, "state = 'admitted' AND (end_ms > ? OR (at_end = 'suspend' AND phase != 'ended')) AND id != ?",
                [Billing.milliseconds(lease.end), id])
            _ = try ControlRules.admitLease(
                LeaseSubmission(
                    project: lease.project, flavor: lease.flavor, count: lease.count, start: lease.end, end: next),
                id: id, flavor: ControlRows.flavor(flavorRow), hosts: try self.allHosts(db),
                usage: ["": try self.onDemandUsage(db)], admitted: admitted, now: self.now(),
                heartbeatTimeout: self.heartbeatTimeout)
            lease.end = next
            try self.writeLease(db, lease)
            return lease
        }
    }

    // MARK: - Inside a transaction

    /// The leases matching `condition` (SQL over the leases table), by start, with their slots.
    func fetchLeases(_ db: Database, _ condition: String, _ arguments: StatementArguments) throws -> [LeaseRecord] {
        var leases = try Row.fetchAll(
            db, sql: "SELECT * FROM leases WHERE \(condition) ORDER BY start_ms, id", arguments: arguments
        ).map { row in try Self.lease(row, file: path) }
        for index in leases.indices {
            for row in try Row.fetchAll(
                db, sql: "SELECT host, units FROM lease_slots WHERE lease_id = ?", arguments: [leases[index].id])
            {
                leases[index].slots[row["host"]] = row["units"]
            }
        }
        return leases
    }

    /// The leases whose slots are set aside now.
    func slotHoldingLeases(_ db: Database) throws -> [LeaseRecord] {
        try fetchLeases(db, "state = 'admitted' AND phase IN ('delivering', 'active', 'short')", [])
    }

    /// The guests holding capacity that match `condition` (SQL over the guests table).
    func holdingGuests(_ db: Database, _ condition: String, _ arguments: StatementArguments) throws -> [CloudGuest] {
        try Row.fetchAll(
            db,
            sql: "SELECT \(ControlRows.guestColumns) FROM guests WHERE state IN \(ControlRows.holdingStates)"
                + " AND \(condition) ORDER BY created_ms, id", arguments: arguments
        ).map { row in try ControlRows.guest(row, file: path) }
    }

    func allHosts(_ db: Database) throws -> [HostRecord] {
        try Row.fetchAll(db, sql: "SELECT \(ControlRows.hostReadColumns) FROM hosts ORDER BY id").map { row in
            try ControlRows.host(row, file: path)
        }
    }

    /// What the guests outside every delivered lease's pool hold (the on-demand load).
    func onDemandUsage(_ db: Database) throws -> Resources {
        let row = try Row.fetchOne(
            db,
            sql: """
                SELECT COALESCE(SUM(vcpus), 0) AS vcpus, COALESCE(SUM(memory_bytes), 0) AS memory_bytes,
                COALESCE(SUM(disk_bytes), 0) AS disk_bytes FROM guests
                WHERE state IN \(ControlRows.holdingStates) AND (lease_id IS NULL OR lease_id NOT IN
                (SELECT id FROM leases WHERE phase IN ('delivering', 'active', 'short')))
                """)!
        return ControlRows.resources(row)
    }

    /// Whether the lease's guests need KVM: it boots guests of a kvm image.
    func leaseNeedsKVM(_ db: Database, _ lease: LeaseRecord) throws -> Bool {
        guard let image = lease.image else { return false }
        return try String.fetchOne(db, sql: "SELECT kind FROM images WHERE name = ?", arguments: [image]) == "kvm"
    }

    /// Writes what changes in a lease (its end, state, phase, SLA record) and replaces its slots.
    func writeLease(_ db: Database, _ lease: LeaseRecord) throws {
        try db.execute(
            sql: """
                UPDATE leases SET end_ms = ?, state = ?, phase = ?, delivered_ms = ?, ended_ms = ?, short_units = ?,
                short_ms = ?, short_since_ms = ?, note = ? WHERE id = ?
                """,
            arguments: [
                Billing.milliseconds(lease.end), lease.state.rawValue, lease.phase.rawValue,
                lease.deliveredAt.map(Billing.milliseconds), lease.endedAt.map(Billing.milliseconds), lease.shortUnits,
                lease.shortMilliseconds, lease.shortSince.map(Billing.milliseconds), lease.note, lease.id,
            ])
        try db.execute(sql: "DELETE FROM lease_slots WHERE lease_id = ?", arguments: [lease.id])
        for (host, units) in lease.slots.sorted(by: { $0.key < $1.key }) where units > 0 {
            try db.execute(
                sql: "INSERT INTO lease_slots (lease_id, host, units) VALUES (?, ?, ?)",
                arguments: [lease.id, host, units])
        }
    }
}
