import FerryDiskMove
import FerryHostModel
import FerryInventory
import FerrySystem
import FerryTransport
import Foundation
import Glibc
import Logging
import Synchronization

/// One cold migration on its source (docs/cold-migration.md): five phases on a thread of its
/// own, each timed into the resource's `phases_ms`. The guest stays this host's until the
/// destination's registration answers; a failure before it puts the guest back as it was.
final class ColdMigration: Sendable {
    enum Phase: String, Sendable {
        case shutdown, configuration, disks, registration
        case powerOn = "power_on"
    }

    /// A failure before the registration: the guest stays here.
    struct Failure: Error {
        var message: String
        var cancelled = false
    }

    let id: String
    let host: HostMigrations
    let name: GuestName
    let guestID: GuestID
    let peer: String
    /// The guest's state when the migration started (`running`, `paused`, `stopped`, `suspended`).
    let from: GuestState
    let options: MigrationRequest.Options
    let resource: Mutex<MigrationResource>
    private let cancelReason = Mutex<String?>(nil)
    private let diskCancellation = DiskMoveCancellation()
    /// The files offered, with the claim tokens written into them (removed at the end).
    let offered: Mutex<[ColdFile]>
    let interruptionStart = Mutex<ContinuousClock.Instant?>(nil)

    convenience init(
        id: String, host: HostMigrations, record: GuestRecord, peer: String, options: MigrationRequest.Options,
        from: GuestState? = nil, resource: MigrationResource? = nil, files: [ColdFile] = []
    ) {
        self.init(
            id: id, host: host, name: record.name, guestID: record.id, peer: peer, options: options,
            from: from ?? record.state, resource: resource, files: files)
    }

    init(
        id: String, host: HostMigrations, name: GuestName, guestID: GuestID, peer: String,
        options: MigrationRequest.Options, from: GuestState, resource: MigrationResource?, files: [ColdFile]
    ) {
        offered = Mutex(files)
        self.id = id
        self.host = host
        self.name = name
        self.guestID = guestID
        self.peer = peer
        do throws(AgentClientError) {
            peerClient = .success(try AgentClient(url: peer, key: host.key, timeoutMs: 30_000))
        } catch {
            peerClient = .failure(error)
        }
        self.from = from
        self.options = options
        var initial =
            resource ?? MigrationResource(id: id, guest: name.value, direction: .out, peer: peer, destination: peer)
        initial.kind = "cold"
        initial.keepSource = options.keepSource ?? false
        initial.phasesMs = initial.phasesMs ?? [:]
        if resource == nil {
            initial.phase = (self.from == .running || self.from == .paused) ? "shutdown" : "configuration"
        }
        self.resource = Mutex(initial)
    }

    var current: MigrationResource { resource.withLock { $0 } }

    /// The destination agent's client, made once (nil: `peer` is not a URL it can use).
    private let peerClient: Result<AgentClient, AgentClientError>

    var client: AgentClient {
        get throws(Failure) {
            switch peerClient {
            case .success(let client): return client
            case .failure(let error): throw Failure(message: "the destination agent \(peer): \(error.message)")
            }
        }
    }

    // MARK: Running

    /// The phases in order, then the end (on the calling thread).
    func run() {
        resource.withLock { $0.status = .active }
        do throws(Failure) {
            if from == .running || from == .paused { try timed(.shutdown) { () throws(Failure) in try shutdown() } }
            let placements = try timed(.configuration) { () throws(Failure) in try configure() }
            try timed(.disks) { () throws(Failure) in try moveFiles(placements) }
        } catch {
            fail(error)
            return
        }
        register()
    }

    /// Runs one phase: the resource names it while it runs and records its time after.
    private func timed<T>(_ phase: Phase, _ body: () throws(Failure) -> T) throws(Failure) -> T {
        if let reason = cancelReason.withLock({ $0 }) {
            throw Failure(message: "cancelled (\(reason))", cancelled: true)
        }
        resource.withLock { $0.phase = phase.rawValue }
        save()
        let start = ContinuousClock.now
        defer {
            let elapsed = ContinuousClock.now - start
            resource.withLock { $0.phasesMs?[phase.rawValue] = Self.milliseconds(elapsed) }
        }
        return try body()
    }

    static func milliseconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
    }

    func save() {
        host.records.save(
            MigrationRecords.Outgoing(
                resource: current, guestID: guestID, coldFrom: from, coldFiles: offered.withLock { $0 },
                coldOptions: options))
    }

    /// `DELETE /v1/migrations/{id}`: honoured until the registration is asked for.
    func cancel(_ reason: String) -> Bool {
        let phase = current.phase
        guard [Phase.shutdown, .configuration, .disks].map(\.rawValue).contains(phase) else { return false }
        cancelReason.withLock { $0 = $0 ?? reason }
        diskCancellation.cancel(reason)
        resource.withLock { $0.status = .cancelling }
        return true
    }

    // MARK: Phases

    /// A running guest is stopped gracefully (its disks flushed), then recorded `migrating-out`.
    private func shutdown() throws(Failure) {
        interruptionStart.withLock { $0 = .now }
        let seconds = options.shutdownTimeoutSeconds ?? 30
        do {
            guard let record = try host.guests.inventory.guest(named: name) else {
                throw Failure(message: "guest \(name) is gone from the inventory")
            }
            let stopped = try host.guests.stopClaimed(
                record, timeout: .seconds(seconds), force: false, why: "cold migration \(id): shutdown")
            _ = try host.guests.transition(stopped, to: .migratingOut, "cold migration \(id) to \(peer): shut down")
        } catch let failure as Failure {
            throw failure
        } catch let error as AgentAPIError {
            throw Failure(message: "the guest did not shut down: \(error.message)")
        } catch {
            throw Failure(message: "the guest did not shut down: \(error)")
        }
    }

    /// Offers the guest to the destination: its specification and its files, each with a claim
    /// token written into the file so that the destination can tell whether it sees the same one.
    private func configure() throws(Failure) -> [ColdFilePlacement] {
        guard let record = try? host.guests.inventory.guest(named: name) else {
            throw Failure(message: "guest \(name) cannot be read from the inventory")
        }
        let files = offerFiles(record)
        offered.withLock { $0 = files }
        save()
        let request = IncomingMigrationRequest(
            migrationID: id, guestID: guestID, specification: record.specification, paused: false,
            sourceAgent: host.selfURL(), cold: ColdMigrationOffer(files: files, suspended: from == .suspended))
        let agent = try client
        let reservation: IncomingMigrationReservation
        do throws(AgentClientError) { reservation = try agent.prepareIncoming(request, busyFor: .seconds(15)) } catch {
            throw Failure(message: HostMigrations.destinationRefused(error, peer: peer).message)
        }
        let placements = reservation.placements ?? []
        resource.withLock { resource in
            resource.files = zip(files, placements).map { file, placement in
                MigrationResource.ColdFileReport(
                    name: file.name, sizeBytes: file.sizeBytes, allocatedBytes: file.allocatedBytes,
                    shared: placement.shared)
            }
        }
        return placements
    }

    private func offerFiles(_ record: GuestRecord) -> [ColdFile] {
        var paths: [(String, ColdFile.Role, String)] = record.specification.disks.compactMap { disk in
            disk.path.map { (disk.name, .disk, $0) }
        }
        if from == .suspended {
            let files = host.guests.files
            paths.append(("memory", .memory, "\(files.guestsDirectory)/\(guestID.hex).img"))
            paths.append(("suspend", .suspend, files.suspendPath(guestID)))
        }
        return paths.map { name, role, path in
            var info = stat()
            _ = stat(path, &info)
            let token = (0..<16).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
            let claimed =
                (try? ExtendedAttribute.set(path: path, name: HostMigrations.claimAttribute, value: Array(token.utf8)))
                != nil
            return ColdFile(
                name: name, role: role, sizeBytes: Int(info.st_size), allocatedBytes: Int(info.st_blocks) * 512,
                sourcePath: path, claim: role == .disk && claimed ? token : nil)
        }
    }

    /// Moves every file the destination does not see already, one after the other.
    private func moveFiles(_ placements: [ColdFilePlacement]) throws(Failure) {
        let files = offered.withLock { $0 }
        for (file, placement) in zip(files, placements) where !placement.shared {
            let report = try moveFile(file)
            resource.withLock { resource in
                guard let index = resource.files?.firstIndex(where: { $0.name == file.name }) else { return }
                resource.files?[index].wireBytes = report.wireBytes
                resource.files?[index].milliseconds = report.seconds * 1000
                resource.files?[index].resumes = report.resumes
                resource.bytesTransferred = (resource.bytesTransferred ?? 0) + report.wireBytes
            }
        }
    }

    /// One file: asks the destination for a receiver and sends. A connection that fails (the
    /// destination agent restarting, a cut the move could not resume) is tried again for 60 s;
    /// a refusal or a block that does not verify fails the migration at once.
    private func moveFile(_ file: ColdFile) throws(Failure) -> DiskMoveReport {
        let deadline = ContinuousClock.now + .seconds(60)
        var lastError = ""
        while ContinuousClock.now < deadline {
            if let reason = cancelReason.withLock({ $0 }) {
                throw Failure(message: "cancelled (\(reason))", cancelled: true)
            }
            do {
                let receipt = try client.receiveColdFile(migrationID: id, name: file.name)
                if receipt.done { return DiskMoveReport() }
                guard let address = receipt.address else {
                    throw Failure(message: "no receiver address for \(file.name)")
                }
                return try send(file, to: address)
            } catch let error as DiskMoveError
                where [.refused, .verification, .cancelled].contains(error.code) || error.peerReason == .verification
            {
                // Damage on the way (or in the destination's copy) is not retried: the guest stays.
                throw Failure(message: "\(file.name): \(error.message)", cancelled: error.code == .cancelled)
            } catch let error as AgentClientError where error.status != nil {
                throw Failure(message: "\(file.name): the destination refused it: \(error.message)")
            } catch {
                lastError = "\(error)"
                host.logger.warning(
                    "cold migration file move failed; trying again",
                    metadata: ["migration.id": "\(id)", "file": "\(file.name)", "error": "\(lastError)"])
                usleep(500_000)
            }
        }
        throw Failure(message: "\(file.name) could not be moved within 60 s: \(lastError)")
    }

    private func send(_ file: ColdFile, to address: String) throws -> DiskMoveReport {
        let reachable = HostMigrations.reachable(address, peer: (try client).endpoint.host)
        var options = DiskSendOptions(
            path: file.sourcePath, destination: try Endpoint.parse(reachable),
            security: ConnectionSecurity(key: host.key, encrypt: self.options.encrypt ?? false),
            sourceName: "ferry agent")
        options.streams = self.options.streams ?? 1
        options.maxBandwidthBytesPerSecond = self.options.maxBandwidthBytesPerSecond
        options.cancellation = diskCancellation
        return try DiskSender(options: options, logger: host.logger).run()
    }
}
