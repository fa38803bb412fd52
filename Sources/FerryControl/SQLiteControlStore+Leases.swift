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
            let hosts = try Row.fetchAll(db, sql: "SELECT \(ControlRows.hostColumns) FROM hosts ORDER BY id").map {
                row in try ControlRows.host(row, file: self.path)
            }
            let admitted = try Row.fetchAll(
                db, sql: "SELECT * FROM leases WHERE state = 'admitted' AND end_ms > ?",
                arguments: [Billing.milliseconds(submission.start)]
            ).map { row in try Self.lease(row, file: self.path) }
            let lease = try ControlRules.admitLease(
                submission, id: ControlRules.newLeaseID(), flavor: ControlRows.flavor(flavorRow), hosts: hosts,
                usage: self.usageByHost(db),
                admitted: admitted, now: self.now(), heartbeatTimeout: self.heartbeatTimeout)
            try db.execute(
                sql: """
                    INSERT INTO leases (id, project, flavor, count, vcpus, memory_bytes, disk_bytes, start_ms, end_ms,
                    at_end, state, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    lease.id, lease.project, lease.flavor, lease.count, lease.unit.vcpus, lease.unit.memoryBytes,
                    lease.unit.diskBytes, Billing.milliseconds(lease.start), Billing.milliseconds(lease.end),
                    lease.atEnd.rawValue, lease.state.rawValue, Billing.milliseconds(lease.createdAt),
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
            try Row.fetchAll(
                db, sql: "SELECT * FROM leases WHERE project = ? ORDER BY start_ms, id", arguments: [project]
            ).map { row in try Self.lease(row, file: self.path) }
        }
    }

    public func lease(id: String) async throws(ControlError) -> LeaseRecord? {
        try await reading("read lease \(id) from") { db in
            try Row.fetchOne(db, sql: "SELECT * FROM leases WHERE id = ?", arguments: [id]).map { row in
                try Self.lease(row, file: self.path)
            }
        }
    }

    public func cancelLease(id: String) async throws(ControlError) -> LeaseRecord {
        try await writing("cancel lease \(id) in") { db in
            guard try Row.fetchOne(db, sql: "SELECT 1 FROM leases WHERE id = ?", arguments: [id]) != nil else {
                throw ControlError(.notFound, "no lease \(id)")
            }
            try db.execute(sql: "UPDATE leases SET state = 'cancelled' WHERE id = ?", arguments: [id])
            let row = try Row.fetchOne(db, sql: "SELECT * FROM leases WHERE id = ?", arguments: [id])!
            return try Self.lease(row, file: self.path)
        }
    }

    static func lease(_ row: Row, file: String) throws(ControlError) -> LeaseRecord {
        guard let atEnd = LeaseEnd(rawValue: row["at_end"]), let state = LeaseState(rawValue: row["state"]) else {
            throw ControlError(
                .unusableDatabase, "control store \(file): lease \(row["id"] as String) has an unknown end or state")
        }
        return LeaseRecord(
            id: row["id"], project: row["project"], flavor: row["flavor"], count: row["count"],
            unit: ControlRows.resources(row), start: ControlRows.date(row["start_ms"]),
            end: ControlRows.date(row["end_ms"]),
            atEnd: atEnd, state: state, createdAt: ControlRows.date(row["created_ms"]))
    }
}
