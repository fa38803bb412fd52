import FerryDiskMove
import FerryHostModel
import FerryInventory
import FerrySystem
import FerryTransport
import FerryVMM
import Foundation
import Glibc

/// The destination's side of a cold migration (docs/cold-migration.md): the `configuration`
/// step reserves the row (`migrating-in`, no vmm) and places the files; a disk-move receiver per
/// file that is not shared; the registration, the one moment the guest becomes this host's.
extension HostMigrations {
    /// The attribute a source writes into each file to find out whether this host sees it.
    static let claimAttribute = "user.ferry.claim"

    /// `POST /v1/migrations/incoming` with `cold`, once the name is claimed.
    func reserveCold(_ request: IncomingMigrationRequest, offer: ColdMigrationOffer, capacity: IncomingCapacity)
        throws(AgentAPIError) -> IncomingMigrationReservation
    {
        let placements = place(offer, request)
        try checkTargets(offer, placements)
        var placed = request
        for index in placed.specification.disks.indices {
            let name = placed.specification.disks[index].name
            placed.specification.disks[index].path = placements.first { $0.name == name }?.path
        }
        let record = MigrationRecords.Incoming(
            request: placed,
            reservation: IncomingMigrationReservation(
                migrationID: request.migrationID, guestID: request.guestID, address: "",
                expiresAt: Date().addingTimeInterval(reservationSeconds), placements: placements),
            received: [])
        records.save(record)  // ahead of the row, as for live
        let cause = "incoming cold migration \(request.migrationID) from \(request.sourceAgent)"
        do {
            _ = try guests.inventory.reserveIncoming(
                placed.specification, id: request.guestID, capacity: capacity, cause: cause)
        } catch  where error.code == .alreadyExists {
            records.remove(record)
            throw AgentAPIError(.conflict, .nameClash, error.message)
        } catch {
            records.remove(record)
            throw HostGuests.apiError(error)
        }
        state.withLock { $0.incoming[request.migrationID] = IncomingEntry(record: record) }
        armColdExpiry(request.migrationID)
        updateInFlight()
        return record.reservation
    }

    /// Where each file goes. A disk whose claim token this host reads at the source's path is the
    /// same file (shared storage) and stays where it is. A disk that is not shared goes to this
    /// agent's `disks/` (a suspended guest's device state is pointed there at the registration);
    /// the memory image and the suspend record go to `guests/`, named by the guest's ID.
    func place(_ offer: ColdMigrationOffer, _ request: IncomingMigrationRequest) -> [ColdFilePlacement] {
        let files = guests.files
        let stem = "\(files.guestsDirectory)/\(request.guestID.hex)"
        return offer.files.map { file in
            switch file.role {
            case .memory: return ColdFilePlacement(name: file.name, path: stem + ".img", shared: false)
            case .suspend:
                return ColdFilePlacement(name: file.name, path: files.suspendPath(request.guestID), shared: false)
            case .disk:
                if Self.sameFile(file) {
                    return ColdFilePlacement(name: file.name, path: file.sourcePath, shared: true)
                }
                if let kept = retainedCopy(of: request.guestID, disk: file.name) {
                    return ColdFilePlacement(name: file.name, path: kept, shared: false, base: kept)
                }
                let path = files.defaultDiskPath(guest: request.specification.name, disk: file.name)
                return ColdFilePlacement(name: file.name, path: path, shared: false)
            }
        }
    }

    /// The file this host kept of the guest's disk `disk` when a `keep_source` cold migration
    /// moved the guest away (not confirmed since), if it is still there.
    func retainedCopy(of guestID: GuestID, disk: String) -> String? {
        let kept = state.withLock { registry in
            registry.outgoing.values.filter { $0.guestID == guestID && $0.resource.kind == "cold" }
                .sorted { $0.resource.startedAt > $1.resource.startedAt }
        }
        for record in kept {
            let paths = record.resource.retained ?? []
            let file = (record.coldFiles ?? []).first {
                $0.role == .disk && $0.name == disk && paths.contains($0.sourcePath)
            }
            if let file, access(file.sourcePath, R_OK) == 0 { return file.sourcePath }
        }
        return nil
    }

    /// Once the guest is this host's again, a kept copy that became its disk is no longer kept
    /// (a later `confirm` of the old migration must not remove it).
    func release(retained paths: [String], of guestID: GuestID) {
        let changed = state.withLock { registry -> [MigrationRecords.Outgoing] in
            var changed: [MigrationRecords.Outgoing] = []
            for (id, record) in registry.outgoing where record.guestID == guestID {
                guard let retained = record.resource.retained, retained.contains(where: paths.contains) else {
                    continue
                }
                registry.outgoing[id]?.resource.retained = retained.filter { !paths.contains($0) }
                if let updated = registry.outgoing[id] { changed.append(updated) }
            }
            return changed
        }
        for record in changed { records.save(record) }
    }

    /// This host reads the source's token, and the size it announced, at the same path.
    static func sameFile(_ file: ColdFile) -> Bool {
        guard let claim = file.claim, let token = ExtendedAttribute.get(path: file.sourcePath, name: claimAttribute)
        else { return false }
        var info = stat()
        guard stat(file.sourcePath, &info) == 0, Int(info.st_size) == file.sizeBytes else { return false }
        return String(decoding: token, as: UTF8.self) == claim
    }

    /// Refuses, before anything moves, a file that would replace one here or that does not fit.
    private func checkTargets(_ offer: ColdMigrationOffer, _ placements: [ColdFilePlacement]) throws(AgentAPIError) {
        var needed: [String: Int] = [:]  // bytes per file system
        for (file, placement) in zip(offer.files, placements) where !placement.shared {
            if access(placement.path, F_OK) == 0 && placement.base != placement.path {
                throw AgentAPIError(
                    .conflict, .conflict,
                    "\(placement.path) exists on this host (\(file.role.rawValue) \(file.name)); remove it or migrate"
                        + " the guest elsewhere")
            }
            let directory = (placement.path as NSString).deletingLastPathComponent
            var info = statvfs()
            guard statvfs(directory, &info) == 0 else {
                throw AgentAPIError(
                    .conflict, .conflict,
                    "\(directory) cannot take \(file.name) here: \(String(cString: strerror(errno)))")
            }
            let key = "\(info.f_fsid)"
            let before = needed[key] ?? 0
            needed[key] = before + file.allocatedBytes
            let free = Int(info.f_bavail) * Int(info.f_frsize)
            if before + file.allocatedBytes > free {
                throw AgentAPIError(
                    .conflict, .insufficientCapacity,
                    "the guest's files need \(before + file.allocatedBytes) bytes in \(directory), which has \(free)"
                        + " bytes free; free space there or migrate the guest elsewhere; nothing was sent")
            }
        }
    }

    /// `POST /v1/migrations/incoming/{id}/files/{name}`: a receiver for one file (the same one
    /// again while it runs; `done` once the file verified).
    public func receiveColdFile(_ id: String, name: String) throws(AgentAPIError) -> ColdFileReceipt {
        let (entry, placement) = try coldFile(id, name: name)
        touch(id)
        if entry.record.received?.contains(name) == true {
            return ColdFileReceipt(name: name, address: nil, done: true)
        }
        if let running = entry.receivers[name] {
            return ColdFileReceipt(name: name, address: running.address, done: false)
        }
        let listener: TCPListener
        do { listener = try TCPListener(Endpoint(host: migrationHost, port: 0)) } catch {
            throw AgentAPIError(.internalServerError, .internalError, "cannot listen for \(name): \(error)")
        }
        let address = "\(migrationHost):\(listener.port)"
        let cancellation = DiskMoveCancellation()
        var options = DiskReceiveOptions(
            path: placement.path, security: ConnectionSecurity(key: key), overwrite: true, acceptTimeoutMs: 30_000,
            idleTimeoutMs: 30_000, destinationName: "ferry agent")
        options.cancellation = cancellation
        options.base = placement.base
        options.resumeWindowMs = min(15_000, Int(reservationSeconds * 1000))
        let receiverOptions = options
        state.withLock { $0.incoming[id]?.receivers[name] = ColdReceiver(address: address, cancellation: cancellation) }
        let thread = Thread { [self] in runReceiver(id, name: name, listener: listener, options: receiverOptions) }
        thread.name = "ferry-agent-disk-receive"
        thread.start()
        return ColdFileReceipt(name: name, address: address, done: false)
    }

    private func coldFile(_ id: String, name: String) throws(AgentAPIError) -> (IncomingEntry, ColdFilePlacement) {
        guard let entry = state.withLock({ $0.incoming[id] }) else { throw Self.noMigration(id) }
        guard entry.record.request.cold != nil, let placements = entry.record.reservation.placements else {
            throw AgentAPIError(.conflict, .conflict, "migration \(id) is not a cold migration; it moves no files")
        }
        guard entry.record.ended == nil else {
            throw AgentAPIError(
                .conflict, .conflict, "incoming migration \(id) has ended (\(entry.record.ended!.rawValue))")
        }
        guard let placement = placements.first(where: { $0.name == name }) else {
            throw AgentAPIError(.notFound, .notFound, "migration \(id) has no file \(name)")
        }
        guard !placement.shared else {
            throw AgentAPIError(.conflict, .conflict, "\(name) is shared: both hosts see \(placement.path)")
        }
        return (entry, placement)
    }

    private func runReceiver(_ id: String, name: String, listener: TCPListener, options: DiskReceiveOptions) {
        defer {
            listener.close()
            touch(id)
        }
        do {
            let report = try DiskReceiver(listener: listener, options: options, logger: logger).run()
            let record = state.withLock { registry -> MigrationRecords.Incoming? in
                registry.incoming[id]?.receivers[name] = nil
                let received = (registry.incoming[id]?.record.received ?? []) + [name]
                registry.incoming[id]?.record.received = received
                return registry.incoming[id]?.record
            }
            if let record { records.save(record) }
            logger.info(
                "cold migration file received",
                metadata: [
                    "migration.id": "\(id)", "file": "\(name)", "bytes_written": "\(report.bytesWritten)",
                    "wire_bytes": "\(report.wireBytes)",
                ])
        } catch {
            _ = state.withLock { $0.incoming[id]?.receivers.removeValue(forKey: name) }
            logger.warning(
                "cold migration file not received",
                metadata: ["migration.id": "\(id)", "file": "\(name)", "error": "\(error)"])
        }
    }

    /// `POST /v1/migrations/incoming/{id}/register`: once every file that is not shared verified,
    /// the row becomes the guest's (`stopped`, or `suspended`). Idempotent: a second call answers
    /// the same.
    public func registerCold(_ id: String) throws(AgentAPIError) -> IncomingMigrationStatus {
        guard let entry = state.withLock({ $0.incoming[id] }) else { throw Self.noMigration(id) }
        let record = entry.record
        guard let offer = record.request.cold, let placements = record.reservation.placements else {
            throw AgentAPIError(.conflict, .conflict, "migration \(id) is not a cold migration")
        }
        if record.ended == .arrived {
            return IncomingMigrationStatus(migrationID: id, guestID: record.request.guestID, state: .arrived)
        }
        if let ended = record.ended {
            throw AgentAPIError(.conflict, .conflict, "incoming migration \(id) has ended (\(ended.rawValue))")
        }
        let taken = state.withLock { registry -> Bool in
            guard registry.incoming[id]?.abandoning == false, registry.incoming[id]?.registering == false else {
                return false
            }
            registry.incoming[id]?.registering = true
            return true
        }
        guard taken else {
            throw AgentAPIError(
                .conflict, .busy, "incoming migration \(id) is being registered or abandoned; ask again")
        }
        defer {
            state.withLock {
                $0.incoming[id]?.registering = false
                $0.incoming[id]?.lastActivity = .now
            }
        }
        let missing = waitForFiles(id, placements.filter { !$0.shared }.map(\.name))
        guard missing.isEmpty else {
            throw AgentAPIError(
                .conflict, .conflict,
                "incoming migration \(id) lacks verified \(missing.joined(separator: ", ")); send them first")
        }
        let name = record.request.specification.name
        if offer.suspended, let suspend = placements.first(where: { $0.name == "suspend" }),
            let memory = placements.first(where: { $0.name == "memory" })
        {
            var disks: [String: String] = [:]
            for file in offer.files where file.role == .disk {
                disks[file.sourcePath] = placements.first { $0.name == file.name }?.path
            }
            do throws(VMMError) { try SuspendFile.relocate(suspend.path, image: memory.path, disks: disks) } catch {
                throw AgentAPIError(.internalServerError, .internalError, "\(suspend.path): \(error.message)")
            }
        }
        guard
            let row = try HostGuests.inventoryCall({ () throws(InventoryError) in
                try guests.inventory.guest(named: name)
            }),
            row.state == .migratingIn
        else {
            throw AgentAPIError(.conflict, .conflict, "guest \(name) is not arriving here any more")
        }
        do throws(InventoryError) {
            _ = try guests.inventory.transition(
                name, from: .migratingIn, to: offer.suspended ? .suspended : .stopped,
                cause: "cold migration \(id) from \(record.request.sourceAgent) registered: every file verified",
                generation: row.generation)
        } catch {
            throw HostGuests.apiError(error)
        }
        finishIncoming(id, ended: .arrived, exitStatus: nil, error: nil)
        release(retained: placements.compactMap(\.base), of: record.request.guestID)
        guests.release(name)
        logger.notice("cold migration registered", metadata: ["migration.id": "\(id)", "guest.name": "\(name)"])
        return IncomingMigrationStatus(migrationID: id, guestID: record.request.guestID, state: .arrived)
    }

    /// The files of `names` not yet received, after waiting up to 10 s for receivers that run
    /// (the source's DISK_VERIFIED may overtake the receiver's own record of it).
    private func waitForFiles(_ id: String, _ names: [String]) -> [String] {
        let deadline = Date().addingTimeInterval(10)
        while true {
            let (received, running) = state.withLock { registry in
                (
                    Set(registry.incoming[id]?.record.received ?? []),
                    Set(registry.incoming[id]?.receivers.keys ?? [:].keys)
                )
            }
            let missing = names.filter { !received.contains($0) }
            if missing.isEmpty || missing.allSatisfy({ !running.contains($0) }) || Date() > deadline { return missing }
            usleep(20_000)
        }
    }

    func touch(_ id: String) { state.withLock { $0.incoming[id]?.lastActivity = .now } }

    /// Abandons the arrival when its source has been silent for `--incoming-reservation` seconds
    /// with nothing moving (no receiver running, no registration): a source that never comes back
    /// does not leave a `migrating-in` row for ever. Safe whenever it fires: until the
    /// registration the source owns the guest, and a source that asks later hears `abandoned`.
    func armColdExpiry(_ id: String) {
        let thread = Thread { [self] in
            while pause(1) {
                let idle = state.withLock { registry -> Bool? in
                    guard let entry = registry.incoming[id], entry.record.ended == nil else { return nil }
                    let quiet = entry.receivers.isEmpty && !entry.registering && !entry.abandoning
                    return quiet && ContinuousClock.now - entry.lastActivity > .seconds(reservationSeconds)
                }
                guard let idle else { return }
                if idle {
                    try? abandonIncoming(id, why: "its source was silent for \(Int(reservationSeconds)) s")
                    return
                }
            }
        }
        thread.name = "ferry-agent-reservation"
        thread.start()
    }

    /// Abandons a cold arrival before its registration: receivers cancelled, files that are not
    /// shared removed (partial or whole), the row removed.
    func abandonCold(_ id: String, entry: IncomingEntry, why: String) throws(AgentAPIError) {
        let taken = state.withLock { registry -> Bool? in
            if registry.incoming[id]?.registering == true { return nil }
            guard registry.incoming[id]?.abandoning == false else { return false }
            registry.incoming[id]?.abandoning = true
            return true
        }
        guard let taken else {
            throw AgentAPIError(.conflict, .busy, "incoming migration \(id) is being registered; ask again")
        }
        guard taken else { return }
        let record = entry.record
        for receiver in entry.receivers.values { receiver.cancellation.cancel(why) }
        let placements = (record.reservation.placements ?? []).filter { !$0.shared }
        // A kept older copy the move started from stays as it was (the guest is still the source's).
        let received = placements.filter { $0.base != $0.path }.map(\.path)
        guests.files.removeFiles(received + placements.map { $0.path + ".partial" })
        let name = record.request.specification.name
        do {
            _ = try guests.inventory.removeFailedArrival(name, cause: "incoming cold migration \(id) abandoned: \(why)")
        } catch {
            logger.error("arrival end not recorded", metadata: ["guest.name": "\(name)", "guest.error": "\(error)"])
        }
        finishIncoming(id, ended: .abandoned, exitStatus: nil, error: why)
        guests.release(name)
    }
}
