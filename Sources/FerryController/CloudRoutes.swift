import FerryAgent
import FerryControl
import FerryHostModel
import Foundation
import Hummingbird

/// The controller's API (docs/controller-api.yaml): agents' heartbeats, guests, hosts, invoices.
struct CloudRoutes: Sendable {
    let store: any ControlStore
    let provisioner: GuestProvisioner
    let hosts: HostTracking
    let heartbeatTimeout: Duration

    func add(to router: Router<ControllerContext>) {
        router.post("/v1/agents/heartbeat") { request, context in
            guard case .cluster = context.caller else {
                throw CloudAPIError(
                    .forbidden, "forbidden",
                    "a host's heartbeat is signed with the cluster key (the agent's --key-file)")
            }
            let body = try await request.body.collect(upTo: .max)
            let heartbeat = try RequestBodyDecoding.decode(HostHeartbeat.self, from: body.readableBytesView)
            try await hosts.receive(heartbeat)
            return Response(status: .noContent)
        }
        router.get("/v1/hosts") { _, context in
            try context.require(.manageHosts)
            return try await hostList()
        }
        addGuests(to: router)
    }

    private func addGuests(to router: Router<ControllerContext>) {
        router.post("/v1/projects/:project/guests") { request, context in
            let project = context.parameters.get("project") ?? ""
            try context.require(.createGuest, project: project, notFoundMessage: "no project \(project)")
            let body = try await request.body.collect(upTo: .max)
            let create = try RequestBodyDecoding.decode(CreateGuestBody.self, from: body.readableBytesView)
            let name: GuestName
            do throws(HostModelError) { name = try GuestName(create.name) } catch {
                throw CloudAPIError(.unprocessableContent, "invalid_field", "name: \(error.message)", field: "name")
            }
            let creation = try await store.createGuest(
                GuestRequest(
                    project: project, name: name, flavor: create.flavor, image: create.image, lease: create.lease,
                    migrationPolicy: create.migrationPolicy ?? .liveOnly),
                clientToken: create.clientToken, cause: "api: create")
            if creation.created { Task { await provisioner.build(creation.guest) } }
            return try Self.json(CloudGuestView(creation.guest), status: creation.created ? .accepted : .ok)
        }
        router.get("/v1/projects/:project/guests") { _, context in
            let project = context.parameters.get("project") ?? ""
            try context.require(.listGuests, project: project, notFoundMessage: "no project \(project)")
            let guests = try await store.guests(project: project)
            return try Self.json(CloudGuestList(guests: guests.map(CloudGuestView.init)))
        }
        router.get("/v1/projects/:project/invoice") { request, context in
            let project = context.parameters.get("project") ?? ""
            try context.require(.readInvoice, project: project, notFoundMessage: "no project \(project)")
            let query = try InvoiceQuery(request.uri.queryParameters, now: Date())
            let invoice = try await store.invoice(project: project, from: query.from, to: query.to)
            return try Self.json(InvoiceView(invoice))
        }
        router.get("/v1/guests/:id") { _, context in
            try Self.json(CloudGuestView(try await guest(context, .readGuest)))
        }
        router.get("/v1/guests/:id/journal") { _, context in
            try Self.json(JournalView(try await store.journal(of: try await guest(context, .readGuest).id)))
        }
        router.get("/v1/guests/:id/usage") { request, context in
            let guest = try await guest(context, .readGuest)
            let minutes = try UsageQuery.minutes(request.uri.queryParameters)
            let now = Billing.milliseconds(Date())
            let since = now - Int64(minutes) * 60_000
            let samples = try await store.samples(guests: [guest.id], sinceMilliseconds: since)[guest.id] ?? []
            return try Self.json(UsageView(from: since, to: now, points: Telemetry.usage(samples), samples: samples))
        }
        router.post("/v1/guests/:id/stop") { _, context in
            try Self.json(CloudGuestView(try await provisioner.stop(try await guest(context, .stopGuest))))
        }
        router.post("/v1/guests/:id/start") { _, context in
            try Self.json(
                CloudGuestView(try await provisioner.start(try await guest(context, .startGuest))), status: .accepted)
        }
        // Project members' actions, as stop and start are.
        router.post("/v1/guests/:id/suspend") { _, context in
            try Self.json(CloudGuestView(try await provisioner.suspend(try await guest(context, .stopGuest))))
        }
        router.post("/v1/guests/:id/resume") { _, context in
            try Self.json(
                CloudGuestView(try await provisioner.resumeSuspended(try await guest(context, .startGuest))),
                status: .accepted)
        }
        router.post("/v1/guests/:id/policy") { request, context in
            let guest = try await guest(context, .setMigrationPolicy)
            let body = try await request.body.collect(upTo: .max)
            let change = try RequestBodyDecoding.decode(MigrationPolicyBody.self, from: body.readableBytesView)
            let cause = "api: set by \(try context.principal().user)"
            return try Self.json(
                CloudGuestView(try await store.setMigrationPolicy(guest.id, to: change.migrationPolicy, cause: cause)))
        }
        router.delete("/v1/guests/:id") { _, context in
            try Self.json(CloudGuestView(try await provisioner.delete(try await guest(context, .deleteGuest))))
        }
    }

    /// The guest the path names, if the caller may do `action` to it; a guest of a project the
    /// caller is not in is as absent as one that never was.
    private func guest(_ context: ControllerContext, _ action: ProjectAction) async throws -> CloudGuest {
        let text = context.parameters.get("id") ?? ""
        guard let id = try? GuestID(text), let guest = try await store.guest(id: id) else {
            throw CloudAPIError(.notFound, "not_found", "no guest \(text)")
        }
        try context.require(action, project: guest.project, notFoundMessage: "no guest \(text)")
        return guest
    }

    private func hostList() async throws -> Response {
        let usage = try await store.hostUsage()
        let now = Date()
        let views = try await store.hosts().map { host in
            HostView(host, used: usage[host.id] ?? .zero, now: now, heartbeatTimeout: heartbeatTimeout)
        }
        return try Self.json(HostList(hosts: views))
    }

    static func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let bytes = Array(try encoder.encode(value)) + [0x0A]
        var headers = HTTPFields()
        headers[.contentType] = "application/json; charset=utf-8"
        headers[.contentLength] = String(bytes.count)
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }
}

/// The catalogue and the projects: what cloud admins define (`/v1/flavors`, `/v1/images`,
/// `/v1/projects`).
struct CatalogueRoutes: Sendable {
    let store: any ControlStore

    func add(to router: Router<ControllerContext>) {
        router.get("/v1/flavors") { _, context in
            try context.require(.readCatalogue)
            return try CloudRoutes.json(["flavors": try await store.flavors()])
        }
        router.post("/v1/flavors") { request, context in
            try context.require(.manageFlavors)
            let flavor = try await Self.decode(Flavor.self, request)
            try await store.addFlavor(flavor)
            return try CloudRoutes.json(flavor, status: .created)
        }
        router.get("/v1/images") { _, context in
            try context.require(.readCatalogue)
            return try CloudRoutes.json(["images": try await store.images()])
        }
        router.post("/v1/images") { request, context in
            try context.require(.manageImages)
            let image = try await Self.decode(Image.self, request)
            try await store.addImage(image)
            return try CloudRoutes.json(image, status: .created)
        }
        router.get("/v1/projects") { _, context in
            let principal = try context.principal()
            return try CloudRoutes.json(["projects": principal.visible(try await store.projects())])
        }
        router.post("/v1/projects") { request, context in
            try context.require(.manageProjects)
            let project = try await Self.decode(Project.self, request)
            try await store.addProject(project)
            return try CloudRoutes.json(project, status: .created)
        }
    }

    static func decode<Value: Decodable>(_ type: Value.Type, _ request: Request) async throws -> Value {
        let body = try await request.body.collect(upTo: .max)
        return try RequestBodyDecoding.decode(Value.self, from: body.readableBytesView)
    }
}
