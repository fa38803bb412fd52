import FerryHostModel
import FerryInventory
import Foundation
import HTTPTypes
import Hummingbird

/// `/v1/migrations…`: live migration between agents (docs/agent-api.yaml, docs/agent.md).
/// Blocking work goes to `BlockingWork`; the event stream waits on an `AsyncStream`.
struct MigrationRoutes: Sendable {
    let migrations: HostMigrations
    let work: BlockingWork
    let power: HostPowerSwitch
    let capacity: @Sendable () throws(AgentAPIError) -> IncomingCapacity

    func add(to router: Router<BasicRequestContext>) {
        router.get("/v1/migrations") { _, _ in
            try Self.exchangeJSON(MigrationList(migrations: try await work.run { migrations.list() }))
        }
        router.post("/v1/migrations") { request, _ in
            let body = try await request.body.collect(upTo: .max)
            let start = try RequestBodyDecoding.decodeValidated(MigrationRequest.self, from: body.readableBytesView)
            let resource = try await work.run { try migrations.start(start) }
            var response = try Self.exchangeJSON(resource, status: .created)
            response.headers[.location] = "/v1/migrations/\(resource.id)"
            return response
        }
        router.get("/v1/migrations/:id") { _, context in
            let id = try Self.id(context)
            return try Self.exchangeJSON(try await work.run { try migrations.show(id) })
        }
        router.delete("/v1/migrations/:id") { _, context in
            let id = try Self.id(context)
            return try Self.exchangeJSON(try await work.run { try migrations.cancel(id) }, status: .accepted)
        }
        router.post("/v1/migrations/:id/revert") { _, context in
            let id = try Self.id(context)
            return try Self.exchangeJSON(try await work.run { try migrations.revertCold(id) }, status: .accepted)
        }
        router.post("/v1/migrations/:id/confirm") { _, context in
            let id = try Self.id(context)
            return try Self.exchangeJSON(try await work.run { try migrations.confirmCold(id) })
        }
        router.get("/v1/migrations/:id/events") { request, context in
            let id = try Self.id(context)
            let after = request.headers[HTTPField.Name("Last-Event-ID")!].flatMap { UInt64($0) }
            let log = try await work.run { try migrations.events(id) }
            return Self.eventStream(log.stream(after: after))
        }
        addIncoming(to: router)
    }

    private func addIncoming(to router: Router<BasicRequestContext>) {
        router.post("/v1/migrations/incoming") { request, _ in
            let body = try await request.body.collect(upTo: .max)
            let incoming = try RequestBodyDecoding.decodeValidated(
                IncomingMigrationRequest.self, from: body.readableBytesView)
            try power.refuseInStandby("incoming migrations")
            let capacity = self.capacity
            let reservation = try await work.run { try migrations.prepareIncoming(incoming, capacity: try capacity()) }
            return try Self.exchangeJSON(reservation, status: .created)
        }
        router.get("/v1/migrations/incoming/:id") { _, context in
            let id = try Self.id(context)
            return try Self.exchangeJSON(try await work.run { try migrations.incomingStatus(id) })
        }
        router.delete("/v1/migrations/incoming/:id") { _, context in
            let id = try Self.id(context)
            try await work.run { try migrations.abandonIncoming(id) }
            return Response(status: .noContent)
        }
        router.post("/v1/migrations/incoming/:id/files/:name") { _, context in
            let id = try Self.id(context)
            let name = context.parameters.get("name") ?? ""
            return try Self.exchangeJSON(try await work.run { try migrations.receiveColdFile(id, name: name) })
        }
        router.post("/v1/migrations/incoming/:id/register") { _, context in
            let id = try Self.id(context)
            return try Self.exchangeJSON(try await work.run { try migrations.registerCold(id) })
        }
    }

    /// `text/event-stream`: each event as it is appended; the body ends after `end`.
    static func eventStream(_ events: AsyncStream<MigrationEvent>) -> Response {
        var fields = HTTPFields()
        fields[.contentType] = "text/event-stream; charset=utf-8"
        fields[.cacheControl] = "no-cache"
        return Response(
            status: .ok, headers: fields,
            body: ResponseBody { writer in
                for await event in events { try await writer.write(ByteBuffer(string: event.eventStreamText)) }
                try await writer.finish(nil)
            })
    }

    /// The agent-to-agent types as `AgentClient` decodes them (dates ISO 8601).
    static func exchangeJSON(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
        var bytes = Array(try AgentClient.exchangeEncoder.encode(value))
        bytes.append(0x0A)
        var fields = HTTPFields()
        fields[.contentType] = "application/json; charset=utf-8"
        fields[.contentLength] = String(bytes.count)
        return Response(status: status, headers: fields, body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    static func id(_ context: BasicRequestContext) throws(AgentAPIError) -> String {
        let text = context.parameters.get("id") ?? ""
        guard !text.isEmpty, text.count <= 64,
            text.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") })
        else { throw AgentAPIError(.notFound, .notFound, "no migration \"\(text)\"; GET /v1/migrations lists them") }
        return text
    }
}
