import FerryControl
import Foundation
import Hummingbird

/// The console's auto-scaling group pages (`/console/groups/{id}`): the group, its members and
/// its timeline for the project's members; for its admins, forms that set the desired count and
/// delete the group (each POST answers 303 to the page that shows its outcome).
struct ConsoleGroupRoutes: Sendable {
    let store: any ControlStore

    func add(to router: RouterGroup<ControllerContext>) {
        router.get("groups/:id") { _, context in
            let group = try await group(context, .readGroups)
            return try await page(group, try ConsoleSession(context))
        }
        router.post("groups/:id/desired") { request, context in
            let group = try await group(context, .manageGroups)
            let form = FormFields(String(buffer: try await request.body.collect(upTo: .max)))
            guard let desired = form["desired"].flatMap({ Int($0) }) else {
                throw CloudAPIError(
                    .unprocessableContent, "invalid_field", "desired: a whole number of members", field: "desired")
            }
            let user = try context.principal().user
            _ = try await store.setDesired(group: group.id, to: desired, reason: "user \(user): set by hand")
            return ConsoleHTML.redirect("/console/groups/\(group.id)")
        }
        router.post("groups/:id/delete") { _, context in
            let group = try await group(context, .manageGroups)
            let user = try context.principal().user
            _ = try await store.deleteScalingGroup(id: group.id, reason: "user \(user): delete the group")
            return ConsoleHTML.redirect("/console/groups/\(group.id)")
        }
    }

    /// The group the path names, if the caller may do `action` to it; another project's group is
    /// as absent as one that never was.
    private func group(_ context: ControllerContext, _ action: ProjectAction) async throws -> ScalingGroup {
        let id = context.parameters.get("id") ?? ""
        guard let group = try await store.scalingGroup(id: id) else {
            throw CloudAPIError(.notFound, "not_found", "no group \(id)")
        }
        try context.require(action, project: group.project, notFoundMessage: "no group \(id)")
        return group
    }

    /// The group's members, its actions and its timeline over the last 10 minutes (or since just
    /// before it was made).
    private func page(_ group: ScalingGroup, _ session: ConsoleSession) async throws -> Response {
        let members = try await store.groupMembers(group: group.id)
        let actions = try await store.scalingActions(group: group.id)
        let backoff = try await GroupScaler.backoff(store, members: members)
        var view = GroupPageView(group, members: members, actions: actions, backoff: backoff)
        view.csrfToken = session.csrfToken
        view.canManage =
            group.state == .active
            && Authorization.decide(session.principal, .manageGroups, project: group.project) == .allow
        let now = Billing.milliseconds(Date())
        let since = max(now - 10 * 60_000, min(now - 30_000, Billing.milliseconds(group.createdAt) - 5_000))
        let samples = try await store.samples(guests: members.map(\.id), sinceMilliseconds: since)
        var journals: [[CloudJournalEntry]] = []
        for member in members { journals.append(try await store.journal(of: member.id)) }
        view.chart = GroupChart.svg(
            metric: GroupMetric.series(samples, metric: group.policy.metric, bucketMilliseconds: 2000),
            desired: GroupChart.desired(actions), running: GroupChart.running(journals), from: since, to: now,
            maxCount: group.max, title: "Group \(group.name): \(group.policy.metric.rawValue) and members over time")
        return ConsoleHTML.render(
            "group", view, title: "Group \(group.name)", session: session, refreshSeconds: 5)
    }
}
