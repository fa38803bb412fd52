import GRDB

extension SQLiteControlStore {
    public func admitLease(_ submission: LeaseSubmission) async throws(ControlError) -> LeaseRecord {
        let lease = try await writing("admit a lease of project \(submission.project) in") { db in
            guard
                try Bool.fetchOne(db, sql: "SELECT 1 FROM projects WHERE name = ?", arguments: [submission.project])
                    != nil
            else { throw ControlError(.notFound, "no project \(submission.project)") }
            guard
                let flavorRow = try Row.fetchOne(
                    db, sql: "SELECT * FROM flavors WHERE name = ?", arguments: [submission.flavor])
            else { throw ControlError(.notFound, "no flavor \(submission.flavor): list the flavors and pick one") }
            let hosts = try self.allHosts(db)
            if let image = submission.image,
                try Row.fetchOne(db, sql: "SELECT 1 FROM images WHERE name = ?", arguments: [image]) == nil
            {
                throw ControlError(.notFound, "no image \(image): list the images and pick one")
            }
            let admitted = try self.fetchLeases(
                db, "state = 'admitted' AND (end_ms > ? OR (at_end = 'suspend' AND phase != 'ended'))",
                [Billing.milliseconds(submission.start)])
            let lease = try ControlRules.admitLease(
                submission, id: ControlRules.newLeaseID(), flavor: ControlRows.flavor(flavorRow), hosts: hosts,
                usage: ["": try self.onDemandUsage(db)],
                admitted: admitted, now: self.now(), heartbeatTimeout: self.heartbeatTimeout)
            try db.execute(
                sql: """
                    INSERT INTO leases (id, project, flavor, count, vcpus, memory_bytes, disk_bytes, start_ms, end_ms,
                    at_end, state, created_ms, image) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    lease.id, lease.project, lease.flavor, lease.count, lease.unit.vcpus, lease.unit.memoryBytes,
                    lease.unit.diskBytes, Billing.milliseconds(lease.start), Billing.milliseconds(lease.end),
                    lease.atEnd.rawValue, lease.state.rawValue, Billing.milliseconds(lease.createdAt), lease.image,
                ])
            return lease
        }
        logger.info(
            "lease admitted",
            metadata: ["lease.id": "\(lease.id)", "lease.project": "\(lease.project)", "lease.count": "\(lease.count)"])
        return lease
    }

    public func leases(project: String) async throws(ControlError) -> [LeaseRecord] {
        try await reading("list the leases of project \(project) in") { db in
            try self.fetchLeases(db, "project = ?", [project])
        }
    }

    public func lease(id: String) async throws(ControlError) -> LeaseRecord? {
        try await reading("read lease \(id) from") { db in
            try self.fetchLeases(db, "id = ?", [id]).first
        }
    }

    public func cancelLease(id: String) async throws(ControlError) -> LeaseRecord {
        let now = now()
        return try await writing("cancel lease \(id) in") { db in
            guard var lease = try self.fetchLeases(db, "id = ?", [id]).first else {
                throw ControlError(.notFound, "no lease \(id)")
            }
            if lease.phase != .ended {
                lease = ControlRules.leaseChanged(lease, to: .ended, shortUnits: 0, note: "cancelled", now: now)
            }
            lease.state = .cancelled
            try self.writeLease(db, lease)
            return lease
        }
    }

    static func lease(_ row: Row, file: String) throws(ControlError) -> LeaseRecord {
        guard let atEnd = LeaseEnd(rawValue: row["at_end"]), let state = LeaseState(rawValue: row["state"]) else {
            throw ControlError(
                .unusableDatabase, "control store \(file): lease \(row["id"] as String) has an unknown end or state")
        }
        guard let phase = LeasePhase(rawValue: row["phase"]) else {
            throw ControlError(
                .unusableDatabase, "control store \(file): lease \(row["id"] as String) has an unknown phase")
        }
        var lease = LeaseRecord(
            id: row["id"], project: row["project"], flavor: row["flavor"], count: row["count"],
            unit: ControlRows.resources(row), start: ControlRows.date(row["start_ms"]),
            end: ControlRows.date(row["end_ms"]),
            atEnd: atEnd, state: state, createdAt: ControlRows.date(row["created_ms"]), image: row["image"])
        lease.phase = phase
        lease.deliveredAt = (row["delivered_ms"] as Int64?).map(ControlRows.date)
        lease.endedAt = (row["ended_ms"] as Int64?).map(ControlRows.date)
        lease.shortUnits = row["short_units"]
        lease.shortMilliseconds = row["short_ms"]
        lease.shortSince = (row["short_since_ms"] as Int64?).map(ControlRows.date)
        lease.note = row["note"]
        return lease
    }
}
