import FerryHostModel
import FerryInventory
import FerryTransport
import FerryVMM
import Foundation
import HTTPTypes

/// The source's side: start (prepare the destination, record `migrating-out`, drive), cancel,
/// and the end the driver reports.
extension HostMigrations {
    /// `POST /v1/migrations`: returns the migration once the guest's vmm accepted `migrate`.
    public func start(_ request: MigrationRequest) throws(AgentAPIError) -> MigrationResource {
        if request.kind == "cold" { return try startCold(request) }
        let name = try GuestRoutes.name(request.guest)
        guard guests.tryClaim(name, "a migration") else {
            throw AgentAPIError(
                .conflict, .busy, "guest \(name) is busy with another operation; try again once it has ended")
        }
        var claimed = true
        defer { if claimed { guests.release(name) } }
        let record = try guests.require(name)
        guard record.state == .running || record.state == .paused, let facts = record.process else {
            throw AgentAPIError(
                .conflict, .conflict,
                "guest \(name) is \(record.state.rawValue): a live migration takes a running or paused guest")
        }
        let peer = try Self.peerURL(request.to)
        let id = OutgoingMigrationDriver.newID()
        let client = try agentClient(peer)
        let reservation = try prepare(client, peer: peer, id: id, record: record)
        let address = Self.reachable(reservation.address, peer: client.endpoint.host)
        let driver = OutgoingMigrationDriver(
            id: id, guest: name.value, socketPath: facts.controlSocket, destination: address, peer: peer,
            options: (request.options ?? .init()).driverOptions(keyFile: keyFile), logger: logger
        ) { [self] ended in outgoingEnded(ended, guestID: record.id, name: name) }
        do {
            _ = try guests.transition(record, to: .migratingOut, "migration \(id) to \(peer) started")
        } catch {
            try? client.abandonIncoming(migrationID: id)
            throw error
        }
        let entry = MigrationRecords.Outgoing(resource: driver.current, guestID: record.id)
        state.withLock {
            $0.drivers[id] = driver
            $0.outgoing[id] = entry
        }
        records.save(entry)
        updateInFlight()
        claimed = false  // the end releases the guest
        do { try driver.start() } catch { throw Self.apiError(error) }
        return driver.current
    }

    /// `DELETE /v1/migrations/{id}`.
    public func cancel(_ id: String) throws(AgentAPIError) -> MigrationResource {
        if let cold = state.withLock({ $0.cold[id] }) { return try cancelCold(cold) }
        guard let driver = state.withLock({ $0.drivers[id] }) else {
            _ = try show(id)
            throw AgentAPIError(.conflict, .conflict, "migration \(id) has ended; nothing to cancel")
        }
        let accepted: Bool
        do { accepted = try driver.cancel() } catch { throw Self.apiError(error) }
        let current = driver.current
        // Not taken: being cancelled already (the same answer again), or ended meanwhile.
        guard accepted || current.status == .cancelling else {
            throw AgentAPIError(
                .conflict, .conflict,
                "migration \(id) is ending (its vmm was cancelled already, or ended as it was asked); nothing to"
                    + " cancel (GET /v1/migrations/\(id) says how it ended)")
        }
        return current
    }

    /// The driver's end: the inventory follows (docs/agent.md, the ownership table).
    func outgoingEnded(_ ended: MigrationResource, guestID: GuestID, name: GuestName) {
        var resource = ended
        // An end taken up after a restart (the vmm ran on, or had left) carries no location, or
        // the `unknown` of an unresolved record; its status says it. A reported `lost` stays.
        if [nil, "unknown"].contains(resource.guestLocation) {
            switch ended.status {
            case .completed: resource.guestLocation = "destination"
            case .failed, .cancelled: resource.guestLocation = "source"
            default: break
            }
        }
        if ["starting", "precopy", "reconnecting"].contains(resource.phase), resource.status.isFinal {
            resource.phase = resource.status.rawValue
        }
        switch ended.status {
        case .completed:
            handedOff(name, guestID: guestID, resource: ended)
            guests.release(name)
        case .unresolved:
            resource.guestLocation = "unknown"
            let socket = guests.files.socketPath(guestID)
            let unresolved = resource
            let thread = Thread { [self] in resolve(unresolved, guestID: guestID, name: name, socket: socket) }
            thread.name = "ferry-agent-resolve"
            thread.start()
        default:
            stayed(
                name, cause: "migration \(ended.id) \(ended.status.rawValue): \(ended.error ?? "the guest stays here")")
            guests.release(name)
            if let peer = ended.peer, let client = try? agentClient(peer) {
                // Refused once bytes arrived: the destination's vmm then ends itself on the ABORT.
                let thread = Thread { try? client.abandonIncoming(migrationID: ended.id) }
                thread.name = "ferry-agent-abandon"
                thread.start()
            }
        }
        state.withLock { $0.outgoing[ended.id]?.resource = resource }
        records.save(MigrationRecords.Outgoing(resource: resource, guestID: guestID))
        recordFinished(resource, direction: .outgoing)
    }

    /// The guest runs on the destination: the source's row goes (journal `migrated to AGENT`).
    func handedOff(_ name: GuestName, guestID: GuestID, resource: MigrationResource) {
        let cause = "migrated to \(resource.peer ?? resource.destination) (migration \(resource.id))"
        do {
            _ = try guests.inventory.removeAfterHandoff(name, cause: cause, generation: nil)
        } catch {
            logger.error("handoff not recorded", metadata: ["guest.name": "\(name)", "guest.error": "\(error)"])
        }
        // The guest lives on elsewhere: its memory image here is garbage (the destination verified
        // every page), and a 1 GiB guest migrated away would otherwise leave 1 GiB behind. Its
        // logs stay for whoever wants to read how it left.
        let files = guests.files
        let stem = "\(files.guestsDirectory)/\(guestID.hex)"
        files.removeFiles([files.socketPath(guestID), files.specPath(guestID), stem + ".img", stem + ".img.lock"])
    }

    /// The guest stays on the source: its row goes back to what its vmm reports (`crashed` when
    /// the vmm is gone).
    func stayed(_ name: GuestName, cause: String) {
        guard let record = try? guests.inventory.guest(named: name), record.state == .migratingOut else { return }
        let reported = record.process.flatMap { Self.vmmState($0.controlSocket) }
        let next: GuestState =
            switch reported {
            case "paused": .paused
            case "running": .running
            case nil: .crashed
            default: .running
            }
        do { _ = try guests.transition(record, to: next, cause) } catch {
            logger.error("migration end not recorded", metadata: ["guest.name": "\(name)", "guest.error": "\(error)"])
        }
    }

    // MARK: The destination

    func agentClient(_ peer: String) throws(AgentAPIError) -> AgentClient {
        do { return try AgentClient(url: peer, key: key, timeoutMs: 30_000) } catch {
            throw AgentAPIError(.unprocessableContent, .invalidField, "to: \(error.message)", field: "to")
        }
    }

    /// `http://HOST:PORT` of the destination agent.
    static func peerURL(_ to: String) throws(AgentAPIError) -> String {
        do throws(AgentClientError) { return "http://\(try AgentClient.parse(to))" } catch {
            throw AgentAPIError(.unprocessableContent, .invalidField, "to: \(error.message)", field: "to")
        }
    }

    /// A vmm listening on every address (0.0.0.0 or ::) is reached at the destination agent's host.
    static func reachable(_ address: String, peer host: String) -> String {
        guard let colon = address.lastIndex(of: ":") else { return address }
        let listenHost = address[..<colon]
        guard ["0.0.0.0", "[::]", "::"].contains(listenHost) else { return address }
        return "\(host)\(address[colon...])"
    }

    func prepare(_ client: AgentClient, peer: String, id: String, record: GuestRecord) throws(AgentAPIError)
        -> IncomingMigrationReservation
    {
        let request = IncomingMigrationRequest(
            migrationID: id, guestID: record.id, specification: record.specification,
            paused: record.state == .paused, sourceAgent: selfURL())
        do {
            return try client.prepareIncoming(request, busyFor: .seconds(3))
        } catch {
            throw Self.destinationRefused(error, peer: peer)
        }
    }

    static func destinationRefused(_ error: AgentClientError, peer: String) -> AgentAPIError {
        guard let status = error.status else {
            return AgentAPIError(
                .badGateway, .unavailable,
                "the destination agent \(peer) cannot be reached (\(error.message)); check the address and that its"
                    + " agent runs")
        }
        if status == 401 {
            return AgentAPIError(
                .badGateway, .unavailable,
                "the destination agent \(peer) refused this agent's credential (\(error.message)): both agents need"
                    + " the same --key-file")
        }
        let code = error.apiError.flatMap { AgentAPIError.Code(rawValue: $0.code) } ?? .conflict
        let message = error.apiError?.message ?? error.message
        return AgentAPIError(
            HTTPResponse.Status(code: status), code,
            "the destination agent \(peer) refused the guest: \(message); the guest stays here unchanged")
    }

    static func apiError(_ error: MigrationDriverError) -> AgentAPIError {
        switch error.code {
        case .vmmUnreachable, .ended: AgentAPIError(.conflict, .conflict, error.message)
        case .tooLate: AgentAPIError(.conflict, .tooLate, error.message)
        case .refused where error.message.contains("bad_request"):
            AgentAPIError(.unprocessableContent, .invalidField, error.message)
        case .refused: AgentAPIError(.conflict, .conflict, error.message)
        case .spawn: AgentAPIError(.internalServerError, .internalError, error.message)
        }
    }
}
