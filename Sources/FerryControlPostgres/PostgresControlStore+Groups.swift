import FerryControl
import FerryHostModel
import Foundation
import Logging
import PostgresNIO

extension PostgresControlStore {
    public func createScalingGroup(_ submission: ScalingGroupSubmission) async throws(ControlError) -> ScalingGroup {
        let group = try await writing("create group \(submission.name) of project \(submission.project) in") {
            connection in
            try await checkExists(connection, "projects", submission.project, "no project \(submission.project)")
            try await checkExists(
                connection, "flavors", submission.flavor,
                "no flavor \(submission.flavor): list the flavors and pick one")
            try await checkExists(
                connection, "images", submission.image, "no image \(submission.image): list the images and pick one")
            let taken = try await PostgresRows.all(
                connection,
                """
                SELECT id FROM scaling_groups WHERE project = \(submission.project) AND name = \(submission.name)
                AND state = 'active'
                """, logger: logger
            ) { row in try row["id"].decode(String.self) }
            guard taken.isEmpty else {
                throw ControlError(
                    .alreadyExists,
                    "project \(submission.project) already has a group \(submission.name): pick another name, or"
                        + " delete that group first")
            }
            let group = try ControlRules.newGroup(submission, id: ControlRules.newLeaseID(), now: now())
            let policy = ControlRules.policyJSON(group.policy, scaleIn: group.scaleIn)
            try await connection.query(
                """
                INSERT INTO scaling_groups (id, project, name, flavor, image, min_size, max_size, desired, policy,
                created_ms, last_action_ms, state, warm) VALUES (\(group.id), \(group.project), \(group.name),
                \(group.flavor), \(group.image), \(group.min), \(group.max), \(group.desired), \(policy),
                \(PostgresRows.milliseconds(group.createdAt)), NULL, 'active', \(group.warm))
                """, logger: logger)
            try await appendAction(
                connection, group.id, from: 0, to: group.desired, reason: "created", at: group.createdAt)
            return group
        }
        logger.info(
            "scaling group created",
            metadata: ["group.id": "\(group.id)", "group.project": "\(group.project)", "group.name": "\(group.name)"])
        return group
    }

    public func scalingGroups(project: String) async throws(ControlError) -> [ScalingGroup] {
        try await reading("list the groups of project \(project) in") { connection in
            try await PostgresRows.all(
                connection, "SELECT * FROM scaling_groups WHERE project = \(project) ORDER BY created_ms, id",
                logger: logger
            ) { row in try Self.group(row, url: url) }
        }
    }

    public func scalingGroup(id: String) async throws(ControlError) -> ScalingGroup? {
        try await reading("read group \(id) from") { connection in try await fetchGroup(connection, id) }
    }

    public func scalingGroupsToReconcile() async throws(ControlError) -> [ScalingGroup] {
        try await reading("list the groups to reconcile in") { connection in
            try await PostgresRows.all(
                connection,
                """
                SELECT * FROM scaling_groups g WHERE state = 'active' OR EXISTS (SELECT 1 FROM guests
                WHERE scaling_group = g.id AND state IN \(unescaped: ControlRules.holdingStatesSQL))
                ORDER BY created_ms, id
                """, logger: logger
            ) { row in try Self.group(row, url: url) }
        }
    }

    public func setDesired(group id: String, to desired: Int, reason: String) async throws(ControlError)
        -> ScalingGroup
    {
        let now = now()
        let (group, changed) = try await writing("change the desired count of group \(id) in") { connection in
            guard var group = try await fetchGroup(connection, id) else {
                throw ControlError(.notFound, "no group \(id)")
            }
            guard group.state == .active else {
                throw ControlError(.invalidArgument, "group \(group.name) is deleted: its desired count stays 0")
            }
            try ControlRules.checkDesired(desired, min: group.min, max: group.max)
            guard desired != group.desired else { return (group, false) }
            try await connection.query(
                """
                UPDATE scaling_groups SET desired = \(desired), last_action_ms = \(PostgresRows.milliseconds(now))
                WHERE id = \(id)
                """, logger: logger)
            try await appendAction(connection, id, from: group.desired, to: desired, reason: reason, at: now)
            group.desired = desired
            group.lastActionAt = now
            return (group, true)
        }
        if changed { logger.groupScaled(group, reason: reason) }
        return group
    }

    public func noteScalingAction(group id: String, reason: String) async throws(ControlError) {
        let now = now()
        try await writing("note an action of group \(id) in") { connection in
            guard let group = try await fetchGroup(connection, id) else {
                throw ControlError(.notFound, "no group \(id)")
            }
            try await appendAction(connection, id, from: group.desired, to: group.desired, reason: reason, at: now)
        }
    }

    public func deleteScalingGroup(id: String, reason: String) async throws(ControlError) -> ScalingGroup {
        let now = now()
        return try await writing("delete group \(id) in") { connection in
            guard var group = try await fetchGroup(connection, id) else {
                throw ControlError(.notFound, "no group \(id)")
            }
            guard group.state == .active else { return group }
            try await connection.query(
                """
                UPDATE scaling_groups SET state = 'deleted', desired = 0,
                last_action_ms = \(PostgresRows.milliseconds(now)) WHERE id = \(id)
                """, logger: logger)
            try await appendAction(connection, id, from: group.desired, to: 0, reason: reason, at: now)
            group.state = .deleted
            group.desired = 0
            group.lastActionAt = now
            return group
        }
    }

    public func scalingActions(group id: String) async throws(ControlError) -> [ScalingAction] {
        try await reading("read the actions of group \(id) in") { connection in
            try await PostgresRows.all(
                connection, "SELECT * FROM scaling_actions WHERE group_id = \(id) ORDER BY sequence", logger: logger
            ) { row in
                ScalingAction(
                    sequence: try row["sequence"].decode(Int64.self), groupID: try row["group_id"].decode(String.self),
                    time: PostgresRows.date(try row["time_ms"].decode(Int64.self)),
                    from: try row["from_desired"].decode(Int.self), to: try row["to_desired"].decode(Int.self),
                    reason: try row["reason"].decode(String.self))
            }
        }
    }

    public func groupMembers(group id: String) async throws(ControlError) -> [CloudGuest] {
        try await reading("list the members of group \(id) in") { connection in
            try await PostgresRows.all(
                connection,
                """
                SELECT \(unescaped: PostgresRows.guestColumns) FROM guests WHERE scaling_group = \(id)
                ORDER BY created_ms, id
                """, logger: logger
            ) { row in try PostgresRows.guest(row, url: self.url) }
        }
    }

    // MARK: - Inside a transaction

    /// Refuses a member the group has no room for (`ControlRules.checkRoom`).
    func checkRoomInGroup(_ connection: PostgresConnection, _ id: String, _ request: GuestRequest) async throws {
        guard let group = try await fetchGroup(connection, id), group.project == request.project else {
            throw ControlError(.notFound, "no group \(id) in project \(request.project)")
        }
        let states = GroupPlan.memberStates.map(\.rawValue).sorted()
        let live =
            try await PostgresRows.all(
                connection,
                "SELECT COUNT(*)::BIGINT AS live FROM guests WHERE scaling_group = \(id) AND state = ANY(\(states))",
                logger: logger
            ) { row in try row["live"].decode(Int.self) }.first ?? 0
        try ControlRules.checkRoom(in: group, live: live, request)
    }

    func join(_ connection: PostgresConnection, _ guest: GuestID, _ group: String) async throws {
        try await connection.query(
            "UPDATE guests SET scaling_group = \(group) WHERE id = \(guest.hex)", logger: logger)
    }

    func fetchGroup(_ connection: PostgresConnection, _ id: String) async throws -> ScalingGroup? {
        try await PostgresRows.all(connection, "SELECT * FROM scaling_groups WHERE id = \(id)", logger: logger) {
            row in try Self.group(row, url: url)
        }.first
    }

    private func checkExists(_ connection: PostgresConnection, _ table: String, _ name: String, _ missing: String)
        async throws
    {
        let found = try await PostgresRows.all(
            connection, "SELECT name FROM \(unescaped: table) WHERE name = \(name)", logger: logger
        ) { row in try row["name"].decode(String.self) }
        guard !found.isEmpty else { throw ControlError(.notFound, missing) }
    }

    private func appendAction(
        _ connection: PostgresConnection, _ id: String, from: Int, to: Int, reason: String, at time: Date
    ) async throws {
        try await connection.query(
            """
            INSERT INTO scaling_actions (group_id, time_ms, from_desired, to_desired, reason)
            VALUES (\(id), \(PostgresRows.milliseconds(time)), \(from), \(to), \(reason))
            """, logger: logger)
    }

    static func group(_ row: PostgresRandomAccessRow, url: PostgresURL) throws -> ScalingGroup {
        let id = try row["id"].decode(String.self)
        guard let state = ScalingGroupState(rawValue: try row["state"].decode(String.self)),
            let (policy, scaleIn) = ControlRules.policy(fromJSON: try row["policy"].decode(String.self))
        else {
            throw ControlError(.unusableDatabase, "control store \(url): group \(id) has an unknown state or policy")
        }
        return ScalingGroup(
            id: id, project: try row["project"].decode(String.self), name: try row["name"].decode(String.self),
            flavor: try row["flavor"].decode(String.self), image: try row["image"].decode(String.self),
            min: try row["min_size"].decode(Int.self), max: try row["max_size"].decode(Int.self),
            desired: try row["desired"].decode(Int.self), policy: policy, scaleIn: scaleIn, state: state,
            createdAt: PostgresRows.date(try row["created_ms"].decode(Int64.self)),
            lastActionAt: try row["last_action_ms"].decode(Int64?.self).map(PostgresRows.date),
            warm: try row["warm"].decode(Int.self))
    }
}
