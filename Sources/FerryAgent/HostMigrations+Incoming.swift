import FerryHostModel
import FerryInventory
import FerryVMM
import Foundation

/// The destination's side: the reservation (`POST /v1/migrations/incoming`), its status, its
/// abandonment (by the source, or when it expires) and the arrival's end.
extension HostMigrations {
    /// Reserves the guest (`migrating-in`, capacity and clashes checked in one inventory
    /// transaction), starts its `ferry vmm --incoming` and answers where it listens. Idempotent
    /// by `migration_id`.
    public func prepareIncoming(_ request: IncomingMigrationRequest, capacity: IncomingCapacity) throws(AgentAPIError)
        -> IncomingMigrationReservation
    {
        let id = request.migrationID
        let (existing, busy) = state.withLock { registry -> (IncomingEntry?, Bool) in
            if let entry = registry.incoming[id] { return (entry, false) }
            return (nil, !registry.preparing.insert(id).inserted)
        }
        if let existing {
            guard existing.record.request.guestID == request.guestID else {
                throw AgentAPIError(
                    .conflict, .conflict, "migration \(id) exists here for another guest; use a new migration ID")
            }
            return existing.record.reservation
        }
        if busy { throw AgentAPIError(.conflict, .busy, "migration \(id) is being reserved; retry in a moment") }
        defer { _ = state.withLock { $0.preparing.remove(id) } }
        let name = request.specification.name
        // Held by an operation that ends (a failed arrival's teardown, a stop): `busy`, which the
        // source asks again; a guest of that name that stays is `name_clash` from the inventory.
        guard guests.tryClaim(name, "an incoming migration") else {
            throw AgentAPIError(
                .conflict, .busy, "a guest named \(name) is busy here with another operation; retry in a moment")
        }
        var claimed = true
        defer { if claimed { guests.release(name) } }
        if let cold = request.cold {
            let reservation = try reserveCold(request, offer: cold, capacity: capacity)
            claimed = false  // the registration or the abandonment releases it
            return reservation
        }
        var entry = IncomingEntry(
            record: MigrationRecords.Incoming(
                request: request,
                reservation: IncomingMigrationReservation(
                    migrationID: id, guestID: request.guestID, address: "",
                    expiresAt: reservationExpiry())))
        // Written ahead of the row: an agent killed between the two finds the record on its
        // restart and removes the row (or finds no row), never a `migrating-in` row nobody knows.
        records.save(entry.record)
        do { try reserve(request, capacity: capacity) } catch {
            records.remove(entry.record)
            throw error
        }
        state.withLock { $0.incoming[id] = entry }
        let process = try spawn(request)
        entry.record.reservation.address = process.address
        entry.process = process
        state.withLock {
            $0.incoming[id]?.process = process
            $0.incoming[id]?.record.reservation.address = process.address
        }
        records.save(entry.record)
        updateInFlight()
        claimed = false  // the arrival's end releases it
        armExpiry(id, at: entry.record.reservation.expiresAt)
        return entry.record.reservation
    }

    /// `--incoming-reservation` seconds from now, rounded up to a whole second: the time as the
    /// answer and the record (`STATE/migrations/in-ID.json`, ISO 8601 seconds) both write it, so
    /// that a restarted agent expires the reservation when this one would have.
    private func reservationExpiry() -> Date {
        Date(timeIntervalSince1970: (Date().timeIntervalSince1970 + reservationSeconds).rounded(.up))
    }

    private func reserve(_ request: IncomingMigrationRequest, capacity: IncomingCapacity) throws(AgentAPIError) {
        let cause = "incoming migration \(request.migrationID) from \(request.sourceAgent)"
        do {
            _ = try guests.inventory.reserveIncoming(
                request.specification, id: request.guestID, capacity: capacity, cause: cause)
        } catch  where error.code == .alreadyExists {
            throw AgentAPIError(
                .conflict, .nameClash, "\(error.message); the guest stays on its source unchanged")
        } catch {
            throw HostGuests.apiError(error)
        }
    }

    /// Starts the vmm in the guests' directory (its socket where `HostGuests` expects every
    /// guest's) and records its process on the row; a failure removes the row.
    private func spawn(_ request: IncomingMigrationRequest) throws(AgentAPIError) -> IncomingGuestProcess {
        let id = request.migrationID
        let name = request.specification.name
        var spawner = IncomingGuestSpawner(
            stateDirectory: guests.files.guestsDirectory, executable: GuestProcess.executable)
        spawner.resumeTimeout = incomingResumeTimeout
        let process: IncomingGuestProcess
        do {
            process = try spawner.spawn(
                id: request.guestID, name: name, listenHost: migrationHost, keyFile: keyFile, paused: request.paused
            ) { [self] outcome in incomingEnded(id, outcome) }
        } catch {
            finishIncoming(id, ended: .failed, exitStatus: nil, error: error.message)
            _ = try? guests.inventory.removeFailedArrival(
                name, cause: "incoming migration \(id) failed: \(error.message)")
            throw AgentAPIError(.internalServerError, .internalError, error.message)
        }
        let facts = ProcessFacts(
            pid: process.pid, startTime: process.processStartTicks, controlSocket: process.socketPath)
        do {
            _ = try guests.inventory.recordProcess(name, facts, generation: nil)
        } catch {
            throw AgentAPIError(
                .internalServerError, .internalError,
                "the ferry vmm --incoming for \(name) ended before it was recorded (\(error.message)); see"
                    + " \(process.logPath)")
        }
        return process
    }

    /// `GET /v1/migrations/incoming/{id}`.
    public func incomingStatus(_ id: String) throws(AgentAPIError) -> IncomingMigrationStatus {
        guard let entry = state.withLock({ $0.incoming[id] }) else { throw Self.noMigration(id) }
        let record = entry.record
        var status = IncomingMigrationStatus(
            migrationID: id, guestID: record.request.guestID, state: record.ended ?? .waiting,
            exitStatus: record.exitStatus, error: record.error)
        if record.ended == nil, record.request.cold != nil, !(record.received ?? []).isEmpty || !entry.receivers.isEmpty
        {
            status.state = .receiving
        }
        if record.ended == nil, let process = entry.process {
            if entry.abandoning {
                // Being abandoned: its vmm may be dead already, which must not read as a source
                // reaching it. It stays `waiting` until the end is recorded (`abandoned`), or a
                // source turns out to have reached it after all.
                status.state = .waiting
                return status
            }
            status.state = IncomingMigrationStatus.state(of: process, receiving: Self.receiving(process))
            if status.state == .failed { status.state = .receiving }  // its end is being recorded: ask again
        }
        return status
    }

    static func receiving(_ process: IncomingGuestProcess) -> Bool {
        guard let status = try? VMMControlClient(path: process.socketPath, timeoutSeconds: 5).call("status") else {
            return true  // busy or ending: not waiting any more
        }
        return IncomingGuestProcess.sourceReached(status) || status["state"]?.stringValue != "migrating-in"
    }

    /// `DELETE /v1/migrations/incoming/{id}`: only while no byte arrived.
    public func abandonIncoming(_ id: String, why: String = "abandoned by its source") throws(AgentAPIError) {
        guard let entry = state.withLock({ $0.incoming[id] }) else { throw Self.noMigration(id) }
        if let ended = entry.record.ended {
            if ended == .abandoned { return }
            throw AgentAPIError(.conflict, .conflict, "incoming migration \(id) has ended (\(ended.rawValue))")
        }
        if entry.record.request.cold != nil {
            try abandonCold(id, entry: entry, why: why)
            return
        }
        guard let process = entry.process else {
            throw AgentAPIError(.conflict, .busy, "incoming migration \(id) is being reserved; retry in a moment")
        }
        state.withLock { $0.incoming[id]?.abandoning = true }
        let done = process.abandon()
        guard done == .abandoned else {
            state.withLock { $0.incoming[id]?.abandoning = false }
            if done == .unanswered {
                throw AgentAPIError(
                    .conflict, .busy,
                    "incoming migration \(id): its ferry vmm did not answer within 5 s; nothing was abandoned; retry")
            }
            throw AgentAPIError(
                .conflict, .bytesReceived,
                "incoming migration \(id) has received bytes from its source already: it is not abandoned; only the"
                    + " migration's own end decides now (the source cancels with DELETE /v1/migrations/\(id))")
        }
        logger.notice("incoming migration abandoned", metadata: ["migration.id": "\(id)", "migration.why": "\(why)"])
        _ = process.waitForOutcome(timeoutSeconds: 30)
        // The outcome's handler removes the row just after: answer once it did.
        let deadline = Date().addingTimeInterval(10)
        while state.withLock({ $0.incoming[id]?.record.ended == nil }) && Date() < deadline { usleep(10_000) }
    }

    /// Abandons the reservation at `expiresAt` unless a source reached its vmm by then (on a
    /// thread of its own; at once when that time has passed).
    func armExpiry(_ id: String, at expiresAt: Date) {
        let thread = Thread { [self] in expire(id, at: expiresAt) }
        thread.name = "ferry-agent-reservation"
        thread.start()
    }

    /// A reservation no source connected to by `expiresAt` is abandoned.
    private func expire(_ id: String, at expiresAt: Date) {
        guard pause(max(0, expiresAt.timeIntervalSinceNow)) else { return }
        // Until the reservation ended or a source reached its vmm: a vmm that did not answer (a
        // loaded host) is asked again rather than left reserved for ever.
        while state.withLock({ $0.incoming[id]?.record.ended == nil }) {
            do {
                try abandonIncoming(id, why: "its reservation expired before a source connected")
                return
            } catch  where error.code == .busy {
                guard pause(0.5) else { return }
            } catch {
                return
            }
        }
    }

    /// The incoming vmm's outcome: the row becomes the guest's, or goes.
    func incomingEnded(_ id: String, _ outcome: IncomingGuestProcess.Outcome) {
        guard let entry = state.withLock({ $0.incoming[id] }) else { return }
        let request = entry.record.request
        let name = request.specification.name
        switch outcome {
        case .running:
            arrived(name, id: id, from: request.sourceAgent)
            finishIncoming(id, ended: .arrived, exitStatus: nil, error: nil)
        case .failed(let exitStatus, let reason):
            let ended: IncomingMigrationStatus.State = entry.abandoning ? .abandoned : .failed
            let said = reason.map { ": \($0)" } ?? ""
            let cause =
                "incoming migration \(id) \(ended == .abandoned ? "abandoned" : "failed")"
                + " (its ferry vmm exited \(exitStatus.map(String.init) ?? "with an unknown status"))\(said)"
            do { _ = try guests.inventory.removeFailedArrival(name, cause: cause) } catch {
                logger.error(
                    "arrival end not recorded", metadata: ["guest.name": "\(name)", "guest.error": "\(error)"])
            }
            let files = guests.files
            files.removeFiles([
                files.socketPath(request.guestID), files.guestsDirectory + "/\(request.guestID.hex).img",
            ])
            finishIncoming(id, ended: ended, exitStatus: exitStatus, error: cause)
        }
        guests.release(name)
    }

    /// The guest runs (or is paused) here: `migrating-in` → `running` (→ `paused`), watched like any guest.
    private func arrived(_ name: GuestName, id: String, from source: String) {
        guard var record = try? guests.inventory.guest(named: name), record.state == .migratingIn else { return }
        let cause = "incoming migration \(id) from \(source) arrived"
        let paused = record.process.flatMap { Self.vmmState($0.controlSocket) } == "paused"
        do {
            record = try guests.transition(record, to: paused ? .paused : .running, cause)
        } catch {
            logger.error("arrival not recorded", metadata: ["guest.name": "\(name)", "guest.error": "\(error)"])
            return
        }
        guests.watches.open(record, owner: guests)
    }

    func finishIncoming(_ id: String, ended: IncomingMigrationStatus.State, exitStatus: Int32?, error: String?) {
        let (record, reservedAt) = state.withLock { registry -> (MigrationRecords.Incoming?, ContinuousClock.Instant) in
            registry.incoming[id]?.record.ended = ended
            registry.incoming[id]?.record.exitStatus = exitStatus
            registry.incoming[id]?.record.error = error
            return (registry.incoming[id]?.record, registry.incoming[id]?.reservedAt ?? .now)
        }
        guard let record else { return }
        records.save(record)
        let outcome = ended == .arrived ? "completed" : ended == .abandoned ? "cancelled" : "failed"
        metrics.recordMigrationFinished(
            direction: .incoming, outcome: outcome, downtime: nil, totalTime: ContinuousClock.now - reservedAt,
            bytesSent: 0)
        updateInFlight()
    }
}
