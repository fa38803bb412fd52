import FerryHostModel
import FerryInventory
import FerryVMM
import Foundation

/// What nobody may guess: an `unresolved` handoff, and migrations an agent restart interrupted.
/// The destination's answer (`GET /v1/migrations/incoming/{id}`) decides for the source; the
/// incoming vmm's control socket decides for the destination (docs/agent.md).
extension HostMigrations {
    /// Asks the destination until it answers, then tells the source's vmm (`resolve`) and records
    /// the outcome. The guest stays claimed (and paused on the source) meanwhile.
    func resolve(_ unresolved: MigrationResource, guestID: GuestID, name: GuestName, socket: String) {
        var resource = unresolved
        var delay = 0.2
        while !stopped.load(ordering: .relaxed) {
            if let peer = resource.peer, let client = try? agentClient(peer),
                let answer = try? client.incomingStatus(migrationID: resource.id), let location = answer.resolution
            {
                settle(&resource, location: location, guestID: guestID, name: name, socket: socket)
                return
            }
            guard pause(delay) else { return }
            delay = min(delay * 2, 5)
        }
    }

    /// The destination said where the guest is: the vmm and the inventory follow.
    private func settle(
        _ resource: inout MigrationResource, location: String, guestID: GuestID, name: GuestName, socket: String
    ) {
        if Self.vmmState(socket) == "unresolved",
            let client = try? VMMControlClient(path: socket, timeoutSeconds: 10)
        {
            _ = try? client.call("resolve", ["guest_location": .string(location)])
            client.close()
        }
        // Resolved: the migration ends as what happened (unresolved is no end).
        resource.status = location == "destination" ? .completed : .failed
        resource.endedAt = resource.endedAt ?? Date()
        if location == "destination" {
            handedOff(name, guestID: guestID, resource: resource)
            resource.guestLocation = "destination"
            resource.error = (resource.error.map { $0 + "; " } ?? "") + "resolved: the destination runs the guest"
        } else {
            stayed(name, cause: "migration \(resource.id) resolved: the destination does not have the guest")
            resource.guestLocation = "source"
            resource.error = (resource.error.map { $0 + "; " } ?? "") + "resolved: the guest stays on the source"
        }
        let final = resource
        state.withLock { $0.outgoing[final.id]?.resource = final }
        records.save(MigrationRecords.Outgoing(resource: final, guestID: guestID))
        guests.release(name)
        updateInFlight()
        logger.notice(
            "migration resolved", metadata: ["migration.id": "\(final.id)", "migration.guest_location": "\(location)"])
    }

    // MARK: Agent restart

    /// Before the first reconciliation: every migration the last run left open is taken up again
    /// (its guest claimed, so reconciliation leaves it alone).
    func recoverAtStart() {
        for record in records.outgoing() {
            state.withLock { $0.outgoing[record.resource.id] = record }
            if Self.isOpen(record.resource) { recoverOutgoing(record) }
        }
        for record in records.incoming() {
            state.withLock { $0.incoming[record.request.migrationID] = IncomingEntry(record: record) }
            if record.ended == nil { recoverIncoming(record) }
        }
        updateInFlight()
    }

    /// The source: the vmm still migrates (attach a driver), is unresolved or gone (ask the
    /// destination), or ended meanwhile (record what it says).
    private func recoverOutgoing(_ saved: MigrationRecords.Outgoing) {
        if let from = saved.coldFrom {
            recoverCold(saved, from: from)
            return
        }
        let row = try? guests.inventory.guest(id: saved.guestID)
        guard let row, row.state == .migratingOut, guests.tryClaim(row.name, "a migration") else {
            // The end was recorded in the inventory but not here (the agent died between the
            // two): no row means the handoff removed it; a row in another state, that it stayed.
            var resource = saved.resource
            let gone = row == nil
            if !resource.status.isFinal { resource.status = gone ? .completed : .failed }
            resource.guestLocation = gone ? "destination" : "source"
            resource.endedAt = resource.endedAt ?? Date()
            resource.error = (resource.error.map { $0 + "; " } ?? "") + "taken up after the agent restarted"
            state.withLock { $0.outgoing[resource.id]?.resource = resource }
            records.save(MigrationRecords.Outgoing(resource: resource, guestID: saved.guestID))
            return
        }
        let socket = row.process?.controlSocket ?? guests.files.socketPath(row.id)
        let reported = Self.vmmState(socket)
        logger.notice(
            "taking up migration \(saved.resource.id) after a restart: the guest's vmm reports \(reported ?? "nothing")"
        )
        switch reported {
        case "migrating-out":
            let driver = OutgoingMigrationDriver(
                id: saved.resource.id, guest: row.name.value, socketPath: socket,
                destination: saved.resource.destination, peer: saved.resource.peer, logger: logger
            ) { [self] ended in outgoingEnded(ended, guestID: row.id, name: row.name) }
            state.withLock { $0.drivers[saved.resource.id] = driver }
            driver.attach(startedAt: saved.resource.startedAt)
        case "running", "paused":
            var resource = saved.resource
            resource.status = .failed
            resource.endedAt = Date()
            resource.error = "the migration ended while the agent was down; the guest's vmm runs it here"
            outgoingEnded(resource, guestID: row.id, name: row.name)
        case "left":
            var resource = saved.resource
            (resource.status, resource.endedAt) = (.completed, Date())
            outgoingEnded(resource, guestID: row.id, name: row.name)
        default:  // unresolved, or the vmm is gone: the destination decides
            var resource = saved.resource
            (resource.status, resource.guestLocation) = (.unresolved, "unknown")
            state.withLock { $0.outgoing[resource.id]?.resource = resource }
            let unresolved = resource
            let thread = Thread { [self] in resolve(unresolved, guestID: row.id, name: row.name, socket: socket) }
            thread.name = "ferry-agent-resolve"
            thread.start()
        }
    }

    /// The destination: its incoming vmm is no longer its child; its control socket says where
    /// the arrival stands, and a vmm that vanished without the guest running is `failed`.
    private func recoverIncoming(_ saved: MigrationRecords.Incoming) {
        let name = saved.request.specification.name
        let id = saved.request.migrationID
        let row = try? guests.inventory.guest(id: saved.request.guestID)
        if let row, row.state != .migratingIn {
            // The arrival was recorded in the inventory (the row left `migrating-in`), its end not
            // here: the agent died between the two. It arrived; a source that asks must hear so,
            // or it would keep a row of its own for a guest that runs here.
            finishIncoming(id, ended: .arrived, exitStatus: nil, error: nil)
            return
        }
        guard let row, guests.tryClaim(name, "an incoming migration") else {
            finishIncoming(id, ended: .failed, exitStatus: nil, error: "the agent restarted without the arrival")
            return
        }
        if saved.request.cold != nil {
            // No vmm: the source sends the files again that were not verified, then registers.
            logger.notice("taking up incoming cold migration \(id) after a restart")
            armColdExpiry(id)
            return
        }
        let socket = guests.files.socketPath(row.id)
        guard let hello = GuestProcess.hello(socket: socket), hello.id == row.id,
            let answer = try? VMMControlClient(path: socket, timeoutSeconds: 5).call("hello")
        else {
            incomingEnded(
                id, .failed(exitStatus: nil, reason: "its ferry vmm --incoming vanished while the agent was down"))
            return
        }
        let process = IncomingGuestProcess(
            pid: hello.facts.pid, processStartTicks: hello.facts.startTime,
            address: answer["incoming"]?.stringValue ?? saved.reservation.address, socketPath: socket,
            logPath: guests.files.logPath(row.id)
        ) { [self] outcome in incomingEnded(id, outcome) }
        state.withLock { $0.incoming[id]?.process = process }
        logger.notice("taking up incoming migration \(id) after a restart: its vmm reports \(hello.state)")
        // The reservation's expiry, counted from its original time (kept in the record): a
        // source that never connects does not pin the row, the vmm and its port for ever.
        armExpiry(id, at: saved.reservation.expiresAt)
    }
}
