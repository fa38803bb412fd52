import FerryHostModel
import FerryInventory
import Foundation

/// The source's side of a cold migration: start, cancel, confirm, and taking one up after a
/// restart (docs/cold-migration.md).
extension HostMigrations {
    /// `POST /v1/migrations` with `kind: cold`: returns at once; the phases run on a thread.
    func startCold(_ request: MigrationRequest) throws(AgentAPIError) -> MigrationResource {
        let name = try GuestRoutes.name(request.guest)
        guard guests.tryClaim(name, "a cold migration") else {
            throw AgentAPIError(
                .conflict, .busy, "guest \(name) is busy with another operation; try again once it has ended")
        }
        var claimed = true
        defer { if claimed { guests.release(name) } }
        let record = try guests.require(name)
        guard [.running, .paused, .stopped, .suspended].contains(record.state) else {
            throw AgentAPIError(
                .conflict, .conflict,
                "guest \(name) is \(record.state.rawValue): a cold migration takes a running, paused, stopped or"
                    + " suspended guest"
                    + (record.state == .defined ? " (start it once, or create it on the other host)" : ""))
        }
        let peer = try Self.peerURL(request.to)
        let id = OutgoingMigrationDriver.newID()
        let migration = ColdMigration(
            id: id, host: self, record: record, peer: peer, options: request.options ?? .init())
        if record.state == .stopped || record.state == .suspended {
            _ = try guests.transition(record, to: .migratingOut, "cold migration \(id) to \(peer) started")
        }
        state.withLock {
            $0.cold[id] = migration
            $0.outgoing[id] = MigrationRecords.Outgoing(
                resource: migration.current, guestID: record.id, coldFrom: record.state)
        }
        migration.save()
        updateInFlight()
        claimed = false  // the migration's end releases it
        let thread = Thread { migration.run() }
        thread.name = "ferry-agent-cold-migration"
        thread.start()
        return migration.current
    }

    /// A cold migration's cancel: honoured before its registration is asked for.
    func cancelCold(_ migration: ColdMigration) throws(AgentAPIError) -> MigrationResource {
        guard migration.cancel("cancelled through the API") else {
            let current = migration.current
            if current.status.isFinal {
                throw AgentAPIError(.conflict, .conflict, "migration \(current.id) has ended; nothing to cancel")
            }
            throw AgentAPIError(
                .conflict, .tooLate,
                "migration \(current.id) is at \(current.phase): the destination is registering the guest or has it;"
                    + " it can no longer be cancelled (migrate it back instead)")
        }
        return migration.current
    }

    /// `POST /v1/migrations/{id}/confirm`: removes the files a `keep_source` migration kept.
    public func confirmCold(_ id: String) throws(AgentAPIError) -> MigrationResource {
        guard var entry = state.withLock({ $0.outgoing[id] }) else { throw Self.noMigration(id) }
        guard entry.resource.kind == "cold", entry.resource.status == .completed else {
            throw AgentAPIError(
                .conflict, .conflict,
                "migration \(id) is not a completed cold migration; only those keep files to confirm")
        }
        guests.files.removeFiles(entry.resource.retained ?? [])
        entry.resource.retained = []
        let confirmed = entry
        state.withLock { $0.outgoing[id] = confirmed }
        records.save(confirmed)
        return confirmed.resource
    }

    /// `POST /v1/migrations/{id}/revert`: a completed cold migration whose files this host kept
    /// (`keep_source`) moves the guest back: its destination agent is asked to cold-migrate it
    /// here, and the kept copies are the base of the move (only the blocks that differ cross the
    /// wire, Protocol.md 10.8). Answers the destination's new migration.
    public func revertCold(_ id: String) throws(AgentAPIError) -> MigrationResource {
        guard let entry = state.withLock({ $0.outgoing[id] }) else { throw Self.noMigration(id) }
        let resource = entry.resource
        guard resource.kind == "cold", resource.status == .completed, let peer = resource.peer else {
            throw AgentAPIError(.conflict, .conflict, "migration \(id) is not a completed cold migration")
        }
        guard !(resource.retained ?? []).isEmpty else {
            throw AgentAPIError(
                .conflict, .conflict,
                "migration \(id) kept no files here (no keep_source, or confirmed): migrate the guest back instead")
        }
        var options = MigrationRequest.Options()
        options.powerOn = entry.coldFrom == .running || entry.coldFrom == .paused ? true : nil
        let request = MigrationRequest(guest: resource.guest, to: selfURL(), kind: "cold", options: options)
        let client = try agentClient(peer)
        do throws(AgentClientError) {
            let body = Array((try? AgentClient.exchangeEncoder.encode(request)) ?? Data())
            let answer = try client.checked(try client.send("POST", "/v1/migrations", body: body))
            guard let back = try? MigrationResource.decode(String(decoding: answer.body, as: UTF8.self)) else {
                throw AgentClientError(.protocolViolation, "the answer is not a migration")
            }
            logger.notice("cold migration reverted", metadata: ["migration.id": "\(id)", "revert.id": "\(back.id)"])
            return back
        } catch {
            throw Self.destinationRefused(error, peer: peer)
        }
    }

    // MARK: Restart

    /// A cold migration the last run left open: the destination's answer decides, as for live.
    func recoverCold(_ saved: MigrationRecords.Outgoing, from: GuestState) {
        guard let row = try? guests.inventory.guest(id: saved.guestID) else {
            // Registered, the row removed: what is left is the power-on (the start asked before
            // the restart may have run; a second one is refused and the first one's end stands).
            // The record's name was a guest name when it was written.
            guard let name = try? GuestName(saved.resource.guest) else { return }
            let migration = ColdMigration(
                id: saved.resource.id, host: self, name: name, guestID: saved.guestID,
                peer: saved.resource.peer ?? saved.resource.destination, options: saved.coldOptions ?? .init(),
                from: from, resource: saved.resource, files: saved.coldFiles ?? [])
            state.withLock { $0.cold[saved.resource.id] = migration }
            logger.notice("taking up cold migration \(saved.resource.id) after a restart: registered, powering on")
            let thread = Thread { migration.powerOn() }
            thread.name = "ferry-agent-cold-migration"
            thread.start()
            return
        }
        guard guests.tryClaim(row.name, "a cold migration") else { return }
        let peer = saved.resource.peer ?? saved.resource.destination
        let migration = ColdMigration(
            id: saved.resource.id, host: self, record: row, peer: peer, options: saved.coldOptions ?? .init(),
            from: from, resource: saved.resource, files: saved.coldFiles ?? [])
        state.withLock { $0.cold[saved.resource.id] = migration }
        logger.notice(
            "taking up cold migration \(saved.resource.id) after a restart: the guest is \(row.state.rawValue)")
        let thread = Thread { [self] in resolveCold(migration, row: row) }
        thread.name = "ferry-agent-resolve"
        thread.start()
    }

    /// Asks the destination until it answers: registered → the guest is its; anything else →
    /// the guest stays here (the destination is told to forget it).
    private func resolveCold(_ migration: ColdMigration, row: GuestRecord) {
        guard row.state == .migratingOut else {
            migration.fail(
                ColdMigration.Failure(
                    message: "the agent restarted before the guest left (it was \(row.state.rawValue))"))
            return
        }
        var delay = 0.2
        while !stopped.load(ordering: .relaxed) {
            do {
                let client = try migration.client
                let answer = try client.incomingStatus(migrationID: migration.id)
                if answer.state == .arrived {
                    migration.registered()
                } else {
                    migration.fail(ColdMigration.Failure(message: "the agent restarted before the registration"))
                }
                return
            } catch let error as AgentClientError where error.status == 404 {
                migration.fail(
                    ColdMigration.Failure(message: "the agent restarted; the destination never had the guest"))
                return
            } catch {
                guard pause(delay) else { return }
                delay = min(delay * 2, 5)
            }
        }
    }
}
