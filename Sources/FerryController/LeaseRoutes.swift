import FerryControl
import Foundation
import Hummingbird

/// Leases over HTTP: `POST /v1/projects/{p}/leases` (the project's admin) reserves capacity for a
/// window if admission allows, else 409 `insufficient_capacity` saying when and by how much it
/// falls short and the nearest window that fits; `GET` lists them (members), `GET
/// /v1/leases/{id}` shows one with its pool and SLA record (members); `DELETE /v1/leases/{id}`
/// gives one up (the project's admin). The controller's `LeaseKeeper` delivers and ends them.
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
        router.get("/v1/leases/:id") { _, context in
            let id = context.parameters.get("id") ?? ""
            guard let lease = try await store.lease(id: id) else {
                throw CloudAPIError(.notFound, "not_found", "no lease \(id)")
            }
            try context.require(.readLeases, project: lease.project, notFoundMessage: "no lease \(id)")
            return try CloudRoutes.json(LeaseView(lease))
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
    var image: String?

    enum CodingKeys: String, CodingKey {
        case flavor, count, start, end, image
        case atEnd = "at_end"
    }

    func submission(project: String) throws -> LeaseSubmission {
        guard let end = LeaseEnd(rawValue: atEnd ?? "stop") else {
            throw CloudAPIError(
                .unprocessableContent, "invalid_field", "at_end: one of stop, suspend, extend", field: "at_end")
        }
        return LeaseSubmission(
            project: project, flavor: flavor, count: count, start: try CloudViews.parseTime(start, field: "start"),
            end: try CloudViews.parseTime(self.end, field: "end"), atEnd: end, image: image)
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
    var image: String?
    var phase: String
    /// Units set aside per host while delivered.
    var slots: [String: Int]
    var sla: SLAView
    var note: String

    /// The SLA record: when the pool was delivered, whether on time, how much of the window
    /// so far every unit was available.
    struct SLAView: Encodable, Sendable {
        var deliveredAt: String?
        var deliveryMs: Int64?
        var onTime: Bool?
        var availableFraction: Double
        var shortUnits: Int
        var endedAt: String?

        enum CodingKeys: String, CodingKey {
            case deliveredAt = "delivered_at"
            case deliveryMs = "delivery_ms"
            case onTime = "on_time"
            case availableFraction = "available_fraction"
            case shortUnits = "short_units"
            case endedAt = "ended_at"
        }
    }

    enum CodingKeys: String, CodingKey {
        case id, project, flavor, count, unit, start, end, state, image, phase, slots, sla, note
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
        image = lease.image
        phase = lease.phase.rawValue
        slots = lease.slots
        note = lease.note
        let now = Date()
        sla = SLAView(
            deliveredAt: lease.deliveredAt.map(CloudViews.time), deliveryMs: lease.deliveryMilliseconds,
            onTime: lease.deliveryMilliseconds.map { $0 <= ControlRules.leaseDeliveryGraceMilliseconds }
                ?? (now.timeIntervalSince(lease.start) * 1000 > Double(ControlRules.leaseDeliveryGraceMilliseconds)
                    ? false : nil),
            availableFraction: (lease.availableFraction(at: now) * 10_000).rounded() / 10_000,
            shortUnits: lease.shortUnits, endedAt: lease.endedAt.map(CloudViews.time))
    }
}

struct LeaseList: Encodable, Sendable {
    var leases: [LeaseView]
}
