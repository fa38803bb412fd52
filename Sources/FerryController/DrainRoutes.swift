import FerryAgent
import FerryControl
import Foundation
import Hummingbird

/// Host maintenance (site admins, or the cluster key): `POST /v1/hosts/{id}/drain` puts the host
/// in `draining` and empties it by live migration (202 with how the drain stands; an optional
/// body `{"max_bandwidth_bytes_per_s": N}` caps each of its migrations, live or cold);
/// `GET /v1/hosts/{id}/drain` follows it (moved, moving, waiting, failed, an ETA);
/// `POST /v1/hosts/{id}/undrain` gives the host back (`active`).
struct DrainRoutes: Sendable {
    let store: any ControlStore
    let drainer: HostDrainer

    func add(to router: Router<ControllerContext>) {
        router.post("/v1/hosts/:id/drain") { request, context in
            try context.require(.manageHosts)
            let host = context.parameters.get("id") ?? ""
            let cause = "drain asked by \(try context.principal().user)"
            let body = try await request.body.collect(upTo: .max)
            let options =
                body.readableBytes == 0
                ? nil : try RequestBodyDecoding.decode(DrainBody.self, from: body.readableBytesView).options()
            return try CloudRoutes.json(
                try await drainer.drain(host, cause: cause, options: options), status: .accepted)
        }
        router.get("/v1/hosts/:id/drain") { _, context in
            try context.require(.manageHosts)
            let host = context.parameters.get("id") ?? ""
            guard let report = drainer.report(host) else {
                guard try await store.hosts().contains(where: { $0.id == host }) else {
                    throw CloudAPIError(.notFound, "not_found", "no host \(host) is registered")
                }
                throw CloudAPIError(
                    .notFound, "not_found",
                    "this controller has not drained host \(host) since it started: POST /v1/hosts/\(host)/drain")
            }
            return try CloudRoutes.json(report)
        }
        router.post("/v1/hosts/:id/undrain") { _, context in
            try context.require(.manageHosts)
            let host = context.parameters.get("id") ?? ""
            let record = try await drainer.undrain(host, cause: "undrain asked by \(try context.principal().user)")
            let used = try await store.hostUsage()[host] ?? .zero
            return try CloudRoutes.json(
                HostView(record, used: used, now: Date(), heartbeatTimeout: drainer.heartbeatTimeout))
        }
    }
}

/// What `POST /v1/hosts/{id}/drain` takes (an empty body too).
struct DrainBody: Codable, Sendable {
    /// A cap on each of the drain's migrations (live, and a cold move's disk), to spare a busy
    /// network; nil: as fast as they go.
    var maxBandwidthBytesPerSecond: Double?

    enum CodingKeys: String, CodingKey {
        case maxBandwidthBytesPerSecond = "max_bandwidth_bytes_per_s"
    }

    func options() throws -> MigrationRequest.Options? {
        try MigrateGuestBody(maxBandwidthBytesPerSecond: maxBandwidthBytesPerSecond).options()
    }
}
