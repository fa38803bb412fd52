import FerryControl
import Foundation
import Hummingbird

/// Leases over HTTP: `POST /v1/projects/{p}/leases` (the project's admin) reserves capacity for a
/// window if admission allows, else 409 `insufficient_capacity` saying when and by how much it
/// falls short and the nearest window that fits; `GET` lists them (members); `DELETE
/// /v1/leases/{id}` gives one up (the project's admin).
struct LeaseRoutes: Sendable {
    let store: any ControlStore

    func add(to router: Router<ControllerContext>) {
        router.post("/v1/projects/:project/leases") { request, context in
            let project = context.parameters.get("project") ?? ""
            try context.require(.manageLeases, project: project, notFoundMessage: "no project \(project)")
            let body = try await CatalogueRoutes.decode(LeaseBody.self, request)
            let lease = try await store.admitLease(try body.submission(project: project))
            return try CloudRoutes.json(LeaseView(lease), status: .created)
        }
        router.get("/v1/projects/:project/leases") { _, context in
            let project = context.parameters.get("project") ?? ""
            try context.require(.readLeases, project: project, notFoundMessage: "no project \(project)")
            return try CloudRoutes.json(LeaseList(leases: try await store.leases(project: project).map(LeaseView.init)))
        }
        router.delete("/v1/leases/:id") { _, context in
            let id = context.parameters.get("id") ?? ""
            guard let lease = try await store.lease(id: id) else {
                throw CloudAPIError(.notFound, "not_found", "no lease \(id)")
            }
            try context.require(.manageLeases, project: lease.project, notFoundMessage: "no lease \(id)")
            return try CloudRoutes.json(LeaseView(try await store.cancelLease(id: id)))
        }
    }
}

/// `POST /v1/projects/{p}/leases`'s body.
struct LeaseBody: Decodable, Sendable {
    var flavor: String
    var count: Int
    var start: String
    var end: String
    var atEnd: String?

    enum CodingKeys: String, CodingKey {
        case flavor, count, start, end
        case atEnd = "at_end"
    }

    func submission(project: String) throws -> LeaseSubmission {
        let style = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        func time(_ text: String, _ field: String) throws -> Date {
            if let date = try? style.parse(text) { return date }
            if let date = try? Date.ISO8601FormatStyle().parse(text) { return date }
            throw CloudAPIError(
                .unprocessableContent, "invalid_field", "\(field): \"\(text)\" is not an RFC 3339 time", field: field)
        }
        guard let end = LeaseEnd(rawValue: atEnd ?? "stop") else {
            throw CloudAPIError(
                .unprocessableContent, "invalid_field", "at_end: one of stop, suspend, extend", field: "at_end")
        }
        return LeaseSubmission(
            project: project, flavor: flavor, count: count, start: try time(start, "start"),
            end: try time(self.end, "end"),
            atEnd: end)
    }
}

struct LeaseView: Encodable, Sendable {
    var id: String
    var project: String
    var flavor: String
    var count: Int
    var unit: Resources
    var start: String
    var end: String
    var atEnd: String
    var state: String
    var createdAt: String

    enum CodingKeys: String, CodingKey {
        case id, project, flavor, count, unit, start, end, state
        case atEnd = "at_end"
        case createdAt = "created_at"
    }

    init(_ lease: LeaseRecord) {
        id = lease.id
        project = lease.project
        flavor = lease.flavor
        count = lease.count
        unit = lease.unit
        start = CloudViews.time(lease.start)
        end = CloudViews.time(lease.end)
        atEnd = lease.atEnd.rawValue
        state = lease.state.rawValue
        createdAt = CloudViews.time(lease.createdAt)
    }
}

struct LeaseList: Encodable, Sendable {
    var leases: [LeaseView]
}
