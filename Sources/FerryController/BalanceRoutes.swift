import FerryControl
import Foundation
import Hummingbird

/// Load balancing (site admins, or the cluster key): `GET /v1/balance` reports the settings, the
/// last passes and the moves of the last hour against the cap; `POST /v1/balance` runs a pass now
/// (also when the periodic pass is off): 202 with the pass as it starts (or the one already
/// running), or with `?wait=true` 200 once its moves have ended.
struct BalanceRoutes: Sendable {
    let balancer: ClusterBalancer

    func add(to router: Router<ControllerContext>) {
        router.get("/v1/balance") { _, context in
            try context.require(.manageHosts)
            return try CloudRoutes.json(try await balancer.report())
        }
        router.post("/v1/balance") { request, context in
            try context.require(.manageHosts)
            let wait = try MoveRoutes.wait(request.uri.queryParameters)
            let user = try context.principal().user
            let (number, task) = await balancer.start(trigger: "asked by \(user)")
            guard !wait, let pass = await balancer.pass(number: number) else {
                let ended = await task.value
                return try CloudRoutes.json(ended)
            }
            return try CloudRoutes.json(pass, status: .accepted)
        }
    }
}
