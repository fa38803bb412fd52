import FerryHostModel
import FerryVMM
import Foundation
import Hummingbird

/// `/v1/guests…`: the guests' API (docs/agent-api.yaml). Every handler hands its work to
/// `BlockingWork` and awaits it: SQLite, spawning and control sockets block.
struct GuestRoutes: Sendable {
    let guests: HostGuests
    let work: BlockingWork
    let power: HostPowerSwitch

    func add(to router: Router<BasicRequestContext>) {
        router.get("/v1/guests") { _, _ in
            let records = try await work.run { try guests.list() }
            return try HostRoutes.json(GuestList(guests: records.map { GuestView($0) }))
        }
        router.post("/v1/guests") { request, _ in
            let body = try await request.body.collect(upTo: .max)
            let spec = try RequestBodyDecoding.decodeValidated(GuestSpecification.self, from: body.readableBytesView)
            let id = try RequestBodyDecoding.decode(GivenGuestID.self, from: body.readableBytesView).id
            try power.refuseInStandby("guests")
            let (record, created) = try await work.run { try guests.create(spec, id: id) }
            return try HostRoutes.json(GuestView(record), status: created ? .created : .ok)
        }
        router.get("/v1/guests/:name") { _, context in
            let name = try Self.name(context)
            let view = try await work.run {
                let (record, journal) = try guests.show(name)
                var view = GuestView(record, journal: journal)
                view.usage = guests.usage(record)
                return view
            }
            return try HostRoutes.json(view)
        }
        router.delete("/v1/guests/:name") { request, context in
            let name = try Self.name(context)
            let removeDisks = try Self.flag(request, "remove_disks")
            try await work.run { try guests.delete(name, removeDisks: removeDisks) }
            return Response(status: .noContent)
        }
        addActions(to: router)
        router.get("/v1/guests/:name/console") { request, context in
            let name = try Self.name(context)
            let since = try Self.integer(request, "since", 0...Int(1e15), default: 0)
            let limit = try Self.integer(request, "limit", 1...10_000, default: 1000)
            let page = try await work.run { try guests.console(name, since: since, limit: limit) }
            return HostRoutes.text(page.line + "\n", contentType: "application/json; charset=utf-8")
        }
    }

    private func addActions(to router: Router<BasicRequestContext>) {
        router.post("/v1/guests/:name/start") { _, context in
            let name = try Self.name(context)
            return try HostRoutes.json(GuestView(try await work.run { try guests.start(name) }))
        }
        router.post("/v1/guests/:name/stop") { request, context in
            let name = try Self.name(context)
            let body = try await request.body.collect(upTo: .max)
            let stop =
                body.readableBytes == 0
                ? StopRequest() : try RequestBodyDecoding.decode(StopRequest.self, from: body.readableBytesView)
            let timeout = stop.timeoutSeconds ?? 30
            guard (1...3600).contains(timeout) else {
                throw AgentAPIError(
                    .unprocessableContent, .invalidField, "timeout_seconds: 1 to 3600, got \(timeout)",
                    field: "timeout_seconds")
            }
            let force = stop.force ?? false
            let record = try await work.run { try guests.stop(name, timeout: .seconds(timeout), force: force) }
            return try HostRoutes.json(GuestView(record))
        }
        router.post("/v1/guests/:name/suspend") { _, context in
            let name = try Self.name(context)
            return try HostRoutes.json(GuestView(try await work.run { try guests.suspend(name) }))
        }
        router.post("/v1/guests/:name/resume") { _, context in
            let name = try Self.name(context)
            return try HostRoutes.json(GuestView(try await work.run { try guests.resume(name) }))
        }
        router.post("/v1/guests/:name/pace") { request, context in
            let name = try Self.name(context)
            let body = try await request.body.collect(upTo: 64 << 10)
            let pace = try RequestBodyDecoding.decode(PaceRequest.self, from: body.readableBytesView)
            return try HostRoutes.json(GuestView(try await work.run { try guests.pace(name, rate: pace.rate) }))
        }
    }

    static func name(_ context: BasicRequestContext) throws(AgentAPIError) -> GuestName {
        try name(context.parameters.get("name") ?? "")
    }

    static func name(_ text: String) throws(AgentAPIError) -> GuestName {
        do { return try GuestName(text) } catch {
            throw AgentAPIError(.notFound, .notFound, "no guest named \"\(text)\": \(error.message)")
        }
    }

    static func flag(_ request: Request, _ name: String) throws(AgentAPIError) -> Bool {
        switch request.uri.queryParameters.get(name) {
        case nil, "false", "0": return false
        case "true", "1", "": return true
        case let other?:
            throw AgentAPIError(
                .unprocessableContent, .invalidField, "\(name): true or false, got \"\(other)\"", field: name)
        }
    }

    static func integer(_ request: Request, _ name: String, _ range: ClosedRange<Int>, default value: Int)
        throws(AgentAPIError) -> Int
    {
        guard let text = request.uri.queryParameters.get(name) else { return value }
        guard let number = Int(text), range.contains(number) else {
            throw AgentAPIError(
                .unprocessableContent, .invalidField,
                "\(name): an integer from \(range.lowerBound) to \(range.upperBound), got \"\(text)\"", field: name)
        }
        return number
    }
}

/// The optional `id` of a create's body: the ID a controller gave the guest (32 hex digits).
struct GivenGuestID: Decodable {
    var id: GuestID?
}
