import FerryControl
import Foundation
import Hummingbird

/// Auto-scaling groups over HTTP: `POST /v1/projects/{p}/groups` (the project's admin) creates a
/// group, which the controller's scaler fills to its desired count; `GET` lists them (members);
/// `GET /v1/groups/{id}` shows one with its members, `GET /v1/groups/{id}/actions` its timeline;
/// `PUT /v1/groups/{id}/desired` sets the count by hand (its policy may move it again at the next
/// pass, as the Kubernetes HPA does); `DELETE /v1/groups/{id}` gives it up: its members are
/// stopped and deleted.
struct GroupRoutes: Sendable {
    let store: any ControlStore

    func add(to router: Router<ControllerContext>) {
        router.post("/v1/projects/:project/groups") { request, context in
            let project = context.parameters.get("project") ?? ""
            try context.require(.manageGroups, project: project, notFoundMessage: "no project \(project)")
            let body = try await CatalogueRoutes.decode(GroupBody.self, request)
            let group = try await store.createScalingGroup(try body.submission(project: project))
            return try CloudRoutes.json(GroupView(group), status: .created)
        }
        router.get("/v1/projects/:project/groups") { _, context in
            let project = context.parameters.get("project") ?? ""
            try context.require(.readGroups, project: project, notFoundMessage: "no project \(project)")
            return try CloudRoutes.json(
                GroupList(groups: try await store.scalingGroups(project: project).map { GroupView($0) }))
        }
        router.get("/v1/groups/:id") { _, context in
            let group = try await group(context, .readGroups)
            let members = try await store.groupMembers(group: group.id)
            let backoff = try await GroupScaler.backoff(store, members: members)
            return try CloudRoutes.json(GroupView(group, members: members, backoff: backoff))
        }
        router.get("/v1/groups/:id/actions") { _, context in
            let group = try await group(context, .readGroups)
            let actions = try await store.scalingActions(group: group.id)
            return try CloudRoutes.json(GroupActionList(actions: actions.map(GroupActionView.init)))
        }
        router.put("/v1/groups/:id/desired") { request, context in
            let group = try await group(context, .manageGroups)
            let body = try await CatalogueRoutes.decode(DesiredBody.self, request)
            let principal = try context.principal()
            let reason = "user \(principal.user): " + (body.reason ?? "set by hand")
            return try CloudRoutes.json(
                GroupView(try await store.setDesired(group: group.id, to: body.desired, reason: reason)))
        }
        router.delete("/v1/groups/:id") { _, context in
            let group = try await group(context, .manageGroups)
            let reason = "user \(try context.principal().user): delete the group"
            return try CloudRoutes.json(GroupView(try await store.deleteScalingGroup(id: group.id, reason: reason)))
        }
    }

    /// The group the path names, if the caller may do `action` to it; a group of a project the
    /// caller is not in is as absent as one that never was.
    private func group(_ context: ControllerContext, _ action: ProjectAction) async throws -> ScalingGroup {
        let id = context.parameters.get("id") ?? ""
        guard let group = try await store.scalingGroup(id: id) else {
            throw CloudAPIError(.notFound, "not_found", "no group \(id)")
        }
        try context.require(action, project: group.project, notFoundMessage: "no group \(id)")
        return group
    }
}

/// `POST /v1/projects/{p}/groups`'s body.
struct GroupBody: Decodable, Sendable {
    var name: String
    var flavor: String
    var image: String
    var min: Int
    var max: Int
    var desired: Int?
    /// Suspended members kept ready beyond the desired running ones (0 when absent).
    var warm: Int?
    var policy: ScalingPolicy
    var scaleIn: String?

    enum CodingKeys: String, CodingKey {
        case name, flavor, image, min, max, desired, warm, policy
        case scaleIn = "scale_in"
    }

    func submission(project: String) throws -> ScalingGroupSubmission {
        guard let order = ScaleInOrder(rawValue: scaleIn ?? "newest") else {
            throw CloudAPIError(
                .unprocessableContent, "invalid_field", "scale_in: newest or least_loaded", field: "scale_in")
        }
        return ScalingGroupSubmission(
            project: project, name: name, flavor: flavor, image: image, min: min, max: max, desired: desired,
            policy: policy, scaleIn: order, warm: warm ?? 0)
    }
}

/// `PUT /v1/groups/{id}/desired`'s body.
struct DesiredBody: Decodable, Sendable {
    var desired: Int
    /// Said in the group's timeline after the user's name.
    var reason: String?
}

struct GroupView: Encodable, Sendable {
    var id: String
    var project: String
    var name: String
    var flavor: String
    var image: String
    var min: Int
    var max: Int
    var desired: Int
    var warm: Int
    var policy: ScalingPolicy
    var scaleIn: String
    var state: String
    var createdAt: String
    var lastActionAt: String?
    /// In `GET /v1/groups/{id}`: every guest made for the group, oldest first.
    var members: [CloudGuestView]?
    /// In `GET /v1/groups/{id}`: the back-off after members that failed to build.
    var buildBackoff: BackoffView?

    struct BackoffView: Encodable, Sendable {
        var failuresInARow: Int
        var lastFailureAt: String?
        /// While the group waits: when it may build its next member.
        var nextAttemptAt: String?

        enum CodingKeys: String, CodingKey {
            case failuresInARow = "failures_in_a_row"
            case lastFailureAt = "last_failure_at"
            case nextAttemptAt = "next_attempt_at"
        }

        init(_ backoff: BuildBackoff) {
            failuresInARow = backoff.failuresInARow
            lastFailureAt = backoff.lastFailureMilliseconds.map { CloudViews.time(milliseconds: $0) }
            nextAttemptAt = backoff.nextAttemptMilliseconds.map { CloudViews.time(milliseconds: $0) }
        }
    }

    enum CodingKeys: String, CodingKey {
        case id, project, name, flavor, image, min, max, desired, warm, policy, state, members
        case buildBackoff = "build_backoff"
        case scaleIn = "scale_in"
        case createdAt = "created_at"
        case lastActionAt = "last_action_at"
    }

    init(_ group: ScalingGroup, members: [CloudGuest]? = nil, backoff: BuildBackoff? = nil) {
        id = group.id
        project = group.project
        name = group.name
        flavor = group.flavor
        image = group.image
        min = group.min
        max = group.max
        desired = group.desired
        warm = group.warm
        policy = group.policy
        scaleIn = group.scaleIn.rawValue
        state = group.state.rawValue
        createdAt = CloudViews.time(group.createdAt)
        lastActionAt = group.lastActionAt.map(CloudViews.time)
        self.members = members?.map(CloudGuestView.init)
        buildBackoff = backoff.map(BackoffView.init)
    }
}

struct GroupList: Encodable, Sendable {
    var groups: [GroupView]
}

struct GroupActionView: Encodable, Sendable {
    var sequence: Int64
    var time: String
    var from: Int
    var to: Int
    var reason: String

    init(_ action: ScalingAction) {
        sequence = action.sequence
        time = CloudViews.time(action.time)
        from = action.from
        to = action.to
        reason = action.reason
    }
}

struct GroupActionList: Encodable, Sendable {
    var actions: [GroupActionView]
}
