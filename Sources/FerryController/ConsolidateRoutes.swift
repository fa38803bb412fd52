import FerryControl
import Foundation
import Hummingbird

/// Consolidation and host power (site admins, or the cluster key): `POST /v1/consolidate`
/// (`?dry_run=1`: the plan only) packs the guests onto fewer hosts and puts the freed ones in
/// standby (202 with the report as it stands); `GET /v1/consolidate` gives the last report;
/// `POST /v1/hosts/{id}/standby` puts an empty host in standby, `POST /v1/hosts/{id}/wake` wakes one.
struct ConsolidateRoutes: Sendable {
    let store: any ControlStore
    let consolidator: HostConsolidator
    let power: HostStandby
    let heartbeatTimeout: Duration

    func add(to router: Router<ControllerContext>) {
        router.post("/v1/consolidate") { request, context in
            try context.require(.manageHosts)
            let dryRun = ["1", "true", "yes"].contains(request.uri.queryParameters.get("dry_run") ?? "")
            let cause = "consolidation asked by \(try context.principal().user)"
            let report = try await consolidator.consolidate(dryRun: dryRun, cause: cause)
            return try CloudRoutes.json(report, status: dryRun ? .ok : .accepted)
        }
        router.get("/v1/consolidate") { _, context in
            try context.require(.manageHosts)
            guard let report = consolidator.last else {
                throw CloudAPIError(
                    .notFound, "not_found",
                    "this controller has not consolidated since it started: POST /v1/consolidate")
            }
            return try CloudRoutes.json(report)
        }
        router.post("/v1/hosts/:id/standby") { _, context in
            try context.require(.manageHosts)
            let host = context.parameters.get("id") ?? ""
            let record = try await power.standby(host, cause: "standby asked by \(try context.principal().user)")
            return try await view(record)
        }
        router.post("/v1/hosts/:id/wake") { _, context in
            try context.require(.manageHosts)
            let host = context.parameters.get("id") ?? ""
            let record = try await power.wake(host, cause: "wake asked by \(try context.principal().user)")
            return try await view(record, status: .accepted)
        }
    }

    private func view(_ record: HostRecord, status: HTTPResponse.Status = .ok) async throws -> Response {
        let used = try await store.hostUsage()[record.id] ?? .zero
        return try CloudRoutes.json(
            HostView(record, used: used, now: Date(), heartbeatTimeout: heartbeatTimeout), status: status)
    }
}
