import FerryHostModel
import Foundation
import GRDB
import Logging

extension SQLiteControlStore {
    public func createScalingGroup(_ submission: ScalingGroupSubmission) async throws(ControlError) -> ScalingGroup {
        let group = try await writing("create group \(submission.name) of project \(submission.project) in") { db in
            guard
                try Bool.fetchOne(db, sql: "SELECT 1 FROM projects WHERE name = ?", arguments: [submission.project])
                    != nil
            else { throw ControlError(.notFound, "no project \(submission.project)") }
            guard
                try Bool.fetchOne(db, sql: "SELECT 1 FROM flavors WHERE name = ?", arguments: [submission.flavor])
                    != nil
            else { throw ControlError(.notFound, "no flavor \(submission.flavor): list the flavors and pick one") }
            guard
                try Bool.fetchOne(db, sql: "SELECT 1 FROM images WHERE name = ?", arguments: [submission.image]) != nil
            else { throw ControlError(.notFound, "no image \(submission.image): list the images and pick one") }
            guard
                try Bool.fetchOne(
                    db, sql: "SELECT 1 FROM scaling_groups WHERE project = ? AND name = ? AND state = 'active'",
                    arguments: [submission.project, submission.name]) == nil
            else {
                throw ControlError(
                    .alreadyExists,
                    "project \(submission.project) already has a group \(submission.name): pick another name, or"
                        + " delete that group first")
            }
            let group = try ControlRules.newGroup(submission, id: ControlRules.newLeaseID(), now: self.now())
            try db.execute(
                sql: """
                    INSERT INTO scaling_groups (id, project, name, flavor, image, min_size, max_size, desired, policy,
                    created_ms, last_action_ms, state, warm) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, 'active', ?)
                    """,
                arguments: [
                    group.id, group.project, group.name, group.flavor, group.image, group.min, group.max,
                    group.desired, ControlRules.policyJSON(group.policy, scaleIn: group.scaleIn),
                    ControlRows.milliseconds(group.createdAt), group.warm,
                ])
            try Self.appendAction(db, group.id, from: 0, to: group.desired, reason: "created", at: group.createdAt)
            return group
        }
        logger.info(
            "scaling group created",
            metadata: ["group.id": "\(group.id)", "group.project": "\(group.project)", "group.name": "\(group.name)"])
        return group
    }

    public func scalingGroups(project: String) async throws(ControlError) -> [ScalingGroup] {
        try await reading("list the groups of project \(project) in") { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM scaling_groups WHERE project = ? ORDER BY created_ms, id", arguments: [project]
            ).map { row in try Self.group(row, file: self.path) }
        }
    }

    public func scalingGroup(id: String) async throws(ControlError) -> ScalingGroup? {
        try await reading("read group \(id) from") { db in try self.fetchGroup(db, id) }
    }

    public func scalingGroupsToReconcile() async throws(ControlError) -> [ScalingGroup] {
        try await reading("list the groups to reconcile in") { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT * FROM scaling_groups g WHERE state = 'active' OR EXISTS (SELECT 1 FROM guests
                    WHERE scaling_group = g.id AND state IN \(ControlRows.holdingStates)) ORDER BY created_ms, id
                    """
            ).map { row in try Self.group(row, file: self.path) }
        }
    }

    public func setDesired(group id: String, to desired: Int, reason: String) async throws(ControlError)
        -> ScalingGroup
    {
        let now = now()
        let (group, changed) = try await writing("change the desired count of group \(id) in") { db in
            guard var group = try self.fetchGroup(db, id) else { throw ControlError(.notFound, "no group \(id)") }
            guard group.state == .active else {
                throw ControlError(.invalidArgument, "group \(group.name) is deleted: its desired count stays 0")
            }
            try ControlRules.checkDesired(desired, min: group.min, max: group.max)
            guard desired != group.desired else { return (group, false) }
            try db.execute(
                sql: "UPDATE scaling_groups SET desired = ?, last_action_ms = ? WHERE id = ?",
                arguments: [desired, ControlRows.milliseconds(now), id])
            try Self.appendAction(db, id, from: group.desired, to: desired, reason: reason, at: now)
            group.desired = desired
            group.lastActionAt = now
            return (group, true)
        }
        if changed { logger.groupScaled(group, reason: reason) }
        return group
    }

    public func noteScalingAction(group id: String, reason: String) async throws(ControlError) {
        let now = now()
        try await writing("note an action of group \(id) in") { db in
            guard let group = try self.fetchGroup(db, id) else { throw ControlError(.notFound, "no group \(id)") }
            try Self.appendAction(db, id, from: group.desired, to: group.desired, reason: reason, at: now)
        }
    }

    public func deleteScalingGroup(id: String, reason: String) async throws(ControlError) -> ScalingGroup {
        let now = now()
        return try await writing("delete group \(id) in") { db in
            guard var group = try self.fetchGroup(db, id) else { throw ControlError(.notFound, "no group \(id)") }
            guard group.state == .active else { return group }
            try db.execute(
                sql: "UPDATE scaling_groups SET state = 'deleted', desired = 0, last_action_ms = ? WHERE id = ?",
                arguments: [ControlRows.milliseconds(now), id])
            try Self.appendAction(db, id, from: group.desired, to: 0, reason: reason, at: now)
            group.state = .deleted
            group.desired = 0
            group.lastActionAt = now
            return group
        }
    }

    public func scalingActions(group id: String) async throws(ControlError) -> [ScalingAction] {
        try await reading("read the actions of group \(id) in") { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM scaling_actions WHERE group_id = ? ORDER BY sequence", arguments: [id]
            ).map { row in
                ScalingAction(
                    sequence: row["sequence"], groupID: row["group_id"], time: ControlRows.date(row["time_ms"]),
                    from: row["from_desired"], to: row["to_desired"], reason: row["reason"])
            }
        }
    }

    public func groupMembers(group id: String) async throws(ControlError) -> [CloudGuest] {
        try await reading("list the members of group \(id) in") { db in
            try Row.fetchAll(
                db,
                sql: "SELECT \(ControlRows.guestColumns) FROM guests WHERE scaling_group = ? ORDER BY created_ms, id",
                arguments: [id]
            ).map { row in try ControlRows.guest(row, file: self.path) }
        }
    }

    // MARK: - Inside a transaction

    /// Refuses a member the group has no room for: the group must be active, of the request's
    /// project, flavor and image, and have fewer live members than it desires (two controllers
    /// reconciling the same group cannot overshoot).
    func checkRoomInGroup(_ db: Database, _ id: String, _ request: GuestRequest) throws {
        guard let group = try fetchGroup(db, id), group.project == request.project else {
            throw ControlError(.notFound, "no group \(id) in project \(request.project)")
        }
        let live =
            try Int.fetchOne(
                db,
                sql:
                    "SELECT COUNT(*) FROM guests WHERE scaling_group = ? AND state IN \(ControlRows.sqlList(GroupPlan.memberStates))",
                arguments: [id]) ?? 0
        try ControlRules.checkRoom(in: group, live: live, request)
    }

    func join(_ db: Database, _ guest: GuestID, _ group: String) throws {
        try db.execute(sql: "UPDATE guests SET scaling_group = ? WHERE id = ?", arguments: [group, guest.hex])
    }

    func fetchGroup(_ db: Database, _ id: String) throws -> ScalingGroup? {
        try Row.fetchOne(db, sql: "SELECT * FROM scaling_groups WHERE id = ?", arguments: [id]).map { row in
            try Self.group(row, file: path)
        }
    }

    static func appendAction(_ db: Database, _ id: String, from: Int, to: Int, reason: String, at time: Date) throws {
        try db.execute(
            sql:
                "INSERT INTO scaling_actions (group_id, time_ms, from_desired, to_desired, reason) VALUES (?, ?, ?, ?, ?)",
            arguments: [id, ControlRows.milliseconds(time), from, to, reason])
    }

    static func group(_ row: Row, file: String) throws(ControlError) -> ScalingGroup {
        guard let state = ScalingGroupState(rawValue: row["state"]),
            let (policy, scaleIn) = ControlRules.policy(fromJSON: row["policy"])
        else {
            throw ControlError(
                .unusableDatabase, "control store \(file): group \(row["id"] as String) has an unknown state or policy")
        }
        let lastAction: Int64? = row["last_action_ms"]
        return ScalingGroup(
            id: row["id"], project: row["project"], name: row["name"], flavor: row["flavor"], image: row["image"],
            min: row["min_size"], max: row["max_size"], desired: row["desired"], policy: policy, scaleIn: scaleIn,
            state: state, createdAt: ControlRows.date(row["created_ms"]),
            lastActionAt: lastAction.map(ControlRows.date),
            warm: row["warm"])
    }
}

extension ControlRules {
    /// Refuses a member `group` has no room for (it has `live` members, warm ones counted: live
    /// or suspended; room for `desired` and `warm`).
    public static func checkRoom(in group: ScalingGroup, live: Int, _ request: GuestRequest) throws(ControlError) {
        guard group.state == .active else {
            throw ControlError(.invalidArgument, "group \(group.name) is deleted: it takes no new members")
        }
        guard group.flavor == request.flavor, group.image == request.image else {
            throw ControlError(
                .invalidArgument,
                "group \(group.name)'s members are \(group.flavor) guests of image \(group.image), not"
                    + " \(request.flavor) of \(request.image)")
        }
        guard live < group.desired + group.warm else {
            throw ControlError(
                .stale,
                "group \(group.name) has \(live) live members (warm ones counted) for a desired count of"
                    + " \(group.desired) and \(group.warm) warm: no room for another; read the group again")
        }
    }
}

extension Logger {
    /// The line every store logs for a committed change of a group's desired count.
    public func groupScaled(_ group: ScalingGroup, reason: String) {
        info(
            "scaling group desired count changed",
            metadata: [
                "group.id": "\(group.id)", "group.name": "\(group.name)", "group.desired": "\(group.desired)",
                "group.reason": "\(reason)",
            ])
    }
}
