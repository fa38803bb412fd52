import FerryAgent
import FerryControl
import FerryHostModel
import Foundation
import Hummingbird

/// `POST /v1/guests/{id}/migrate`: a site admin (or the cluster key: the operator's tools) moves
/// a running guest to another host by live migration, to `host` or, without one, to the host the
/// scheduler picks. 202 with the guest `moving_to` its destination while the move runs; with
/// `?wait=true` the answer comes when it has ended: 200 with the guest on its new host, or the
/// error that says why it stays. Members of the guest's project are told 403, anyone else 404.
struct MoveRoutes: Sendable {
    let store: any ControlStore
    let mover: GuestMover

    func add(to router: Router<ControllerContext>) {
        router.post("/v1/guests/:id/migrate") { request, context in
            let text = context.parameters.get("id") ?? ""
            guard let id = try? GuestID(text), let guest = try await store.guest(id: id) else {
                throw CloudAPIError(.notFound, "not_found", "no guest \(text)")
            }
            try context.require(.readGuest, project: guest.project, notFoundMessage: "no guest \(text)")
            try context.require(.migrateGuests)
            let body = try await request.body.collect(upTo: .max)
            let migrate =
                body.readableBytes == 0
                ? MigrateGuestBody()
                : try RequestBodyDecoding.decode(MigrateGuestBody.self, from: body.readableBytesView)
            let wait = try Self.wait(request.uri.queryParameters)
            let options = try migrate.options()
            let moving = try await mover.begin(guest.id, to: migrate.host)
            if wait {
                return try CloudRoutes.json(CloudGuestView(try await mover.carryOut(moving, options: options)))
            }
            Task { [mover] in _ = try? await mover.carryOut(moving, options: options) }  // it logs how it ended
            return try CloudRoutes.json(CloudGuestView(moving), status: .accepted)
        }
    }

    static func wait(_ parameters: Hummingbird.Parameters) throws -> Bool {
        switch parameters.get("wait") {
        case nil, "false": return false
        case "true": return true
        case let text?:
            throw CloudAPIError(
                .unprocessableContent, "invalid_field", "wait: true or false, got \"\(text)\"", field: "wait")
        }
    }
}

/// What `POST /v1/guests/{id}/migrate` takes (an empty body too).
struct MigrateGuestBody: Codable, Sendable {
    /// The destination's host ID; nil: the scheduler picks one.
    var host: String?
    /// A cap on the migration's rate (the agents' `max_bandwidth_bytes_per_s`), to spare a busy
    /// network; nil: as fast as it goes.
    var maxBandwidthBytesPerSecond: Double?

    enum CodingKeys: String, CodingKey {
        case host
        case maxBandwidthBytesPerSecond = "max_bandwidth_bytes_per_s"
    }

    func options() throws -> MigrationRequest.Options? {
        guard let rate = maxBandwidthBytesPerSecond else { return nil }
        guard rate >= 1 else {
            throw CloudAPIError(
                .unprocessableContent, "invalid_field", "max_bandwidth_bytes_per_s: at least 1, got \(rate)",
                field: "max_bandwidth_bytes_per_s")
        }
        return MigrationRequest.Options(maxBandwidthBytesPerSecond: rate)
    }
}
