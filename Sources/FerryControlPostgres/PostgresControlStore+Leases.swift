import FerryControl
import Foundation
import PostgresNIO

extension PostgresControlStore {
    /// In one write transaction (the advisory lock that creates take too), so that a create and
    /// a lease, or two leases, never count the same capacity twice.
    public func admitLease(_ submission: LeaseSubmission) async throws(ControlError) -> LeaseRecord {
        let lease = try await writing("admit a lease of project \(submission.project) in") { connection in
            let known = try await PostgresRows.all(
                connection, "SELECT name FROM projects WHERE name = \(submission.project)", logger: logger
            ) { row in try row["name"].decode(String.self) }
            guard !known.isEmpty else { throw ControlError(.notFound, "no project \(submission.project)") }
            guard
                let flavor = try await PostgresRows.all(
                    connection, "SELECT * FROM flavors WHERE name = \(submission.flavor)", logger: logger,
                    PostgresRows.flavor
                ).first
            else { throw ControlError(.notFound, "no flavor \(submission.flavor): list the flavors and pick one") }
            if let image = submission.image,
                try await PostgresRows.all(
                    connection, "SELECT name FROM images WHERE name = \(image)", logger: logger,
                    { row in try row["name"].decode(String.self) }
                ).isEmpty
            {
                throw ControlError(.notFound, "no image \(image): list the images and pick one")
            }
            let startMilliseconds = Billing.milliseconds(submission.start)
            let admitted = try await fetchLeases(
                connection,
                "state = 'admitted' AND (end_ms > \(startMilliseconds) OR (at_end = 'suspend' AND phase != 'ended'))")
            let lease = try ControlRules.admitLease(
                submission, id: ControlRules.newLeaseID(), flavor: flavor, hosts: try await allHosts(connection),
                usage: ["": try await onDemandUsage(connection)], admitted: admitted, now: now(),
                heartbeatTimeout: heartbeatTimeout)
            try await connection.query(
                """
                INSERT INTO leases (id, project, flavor, count, vcpus, memory_bytes, disk_bytes, start_ms, end_ms,
                at_end, state, created_ms, image) VALUES (\(lease.id), \(lease.project), \(lease.flavor),
                \(lease.count), \(lease.unit.vcpus), \(lease.unit.memoryBytes), \(lease.unit.diskBytes),
                \(Billing.milliseconds(lease.start)), \(Billing.milliseconds(lease.end)), \(lease.atEnd.rawValue),
                \(lease.state.rawValue), \(Billing.milliseconds(lease.createdAt)), \(lease.image))
                """, logger: logger)
            return lease
        }
        logger.info(
            "lease admitted",
            metadata: ["lease.id": "\(lease.id)", "lease.project": "\(lease.project)", "lease.count": "\(lease.count)"])
        return lease
    }

    public func leases(project: String) async throws(ControlError) -> [LeaseRecord] {
        try await reading("list the leases of project \(project) in") { connection in
            try await fetchLeases(connection, "project = \(project)")
        }
    }

    public func lease(id: String) async throws(ControlError) -> LeaseRecord? {
        try await reading("read lease \(id) from") { connection in
            try await fetchLeases(connection, "id = \(id)").first
        }
    }

    public func cancelLease(id: String) async throws(ControlError) -> LeaseRecord {
        let now = now()
        return try await writing("cancel lease \(id) in") { connection in
            guard var lease = try await fetchLeases(connection, "id = \(id)").first else {
                throw ControlError(.notFound, "no lease \(id)")
            }
            if lease.phase != .ended {
                lease = ControlRules.leaseChanged(lease, to: .ended, shortUnits: 0, note: "cancelled", now: now)
            }
            lease.state = .cancelled
            try await writeLease(connection, lease)
            return lease
        }
    }

    static func lease(_ row: PostgresRandomAccessRow, url: PostgresURL) throws -> LeaseRecord {
        let id = try row["id"].decode(String.self)
        guard let atEnd = LeaseEnd(rawValue: try row["at_end"].decode(String.self)),
            let state = LeaseState(rawValue: try row["state"].decode(String.self))
        else { throw ControlError(.unusableDatabase, "control store \(url): lease \(id) has an unknown end or state") }
        guard let phase = LeasePhase(rawValue: try row["phase"].decode(String.self)) else {
            throw ControlError(.unusableDatabase, "control store \(url): lease \(id) has an unknown phase")
        }
        var lease = LeaseRecord(
            id: id, project: try row["project"].decode(String.self), flavor: try row["flavor"].decode(String.self),
            count: Int(try row["count"].decode(Int64.self)), unit: try PostgresRows.resources(row),
            start: PostgresRows.date(try row["start_ms"].decode(Int64.self)),
            end: PostgresRows.date(try row["end_ms"].decode(Int64.self)), atEnd: atEnd, state: state,
            createdAt: PostgresRows.date(try row["created_ms"].decode(Int64.self)),
            image: try row["image"].decode(String?.self))
        lease.phase = phase
        lease.deliveredAt = try row["delivered_ms"].decode(Int64?.self).map(PostgresRows.date)
        lease.endedAt = try row["ended_ms"].decode(Int64?.self).map(PostgresRows.date)
        lease.shortUnits = Int(try row["short_units"].decode(Int64.self))
        lease.shortMilliseconds = try row["short_ms"].decode(Int64.self)
        lease.shortSince = try row["short_since_ms"].decode(Int64?.self).map(PostgresRows.date)
        lease.note = try row["note"].decode(String.self)
        return lease
    }
}
