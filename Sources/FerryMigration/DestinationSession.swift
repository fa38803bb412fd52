import FerryCodec
import FerryProtocol
import FerrySystem
import FerryTransport
import Glibc
import Logging
import Synchronization

/// One live migration into this host, from the source's `HELLO` to the guest running here
/// (Protocol.md section 5): checks the guest fits, receives and verifies pages into
/// `PATH.partial` on the control connection and the page streams that join it, and on COMMIT
/// renames the image to `PATH` and resumes the guest. On any failure before COMMIT the partial
/// image is removed and no guest runs here.
///
/// A state machine over `Phase` (Protocol.md section 6's destination states, plus the
/// handshake before them); one method per phase: `handshake()`, `receive()` (this file's
/// extension in DestinationReceiving.swift), `awaitCommit()` and `resumeGuest()`
/// (DestinationHandoff.swift).
///
/// Not `Sendable`: one thread runs it.
final class DestinationSession {
    /// The session's phase: `handshake` until the guest's image exists, then Protocol.md
    /// section 6's `receiving` → `awaiting-commit` → `resumed`, or `discarded` from any of them.
    enum Phase: String {
        case handshake
        case receiving
        case awaitingCommit = "awaiting-commit"
        case resumed
        case discarded
    }

    /// How long the page streams have to join after ACCEPT.
    static let joinTimeout = 10.0
    /// Seconds from ACCEPT in which a tentative session (a HELLO without a key) must send its
    /// GUEST_CONFIG and the first frame after it to be established (Protocol.md section 9.5).
    static let establishTimeout = 10.0
    static let hangUpWaitMs = 5_000

    let options: DestinationOptions
    let connection: FramedConnection
    let hello: Hello
    let registry: SessionRegistry
    let progress: ProgressHandler?
    var log: Logger
    /// A preallocated, faulted-in image waiting for a guest of its size, if any.
    let prepared: PreparedImage?
    var prepareSeconds: Double { prepared?.seconds ?? 0 }
    let admission: HelloAdmission
    /// What the host gives an established tentative session (an established one has it already).
    let hostClaim: HostClaim
    /// The session was established: it holds a slot and its host's claim (its host releases
    /// both when `run` returns) and its guest's disk space. From the start with a key; without
    /// one, once its GUEST_CONFIG and first frame arrived in time and the claims succeeded.
    private(set) var established = false

    private(set) var phase = Phase.handshake
    let start = MonotonicClock.now()
    let cpuStart = ProcessCPU.now()
    var report: MigrationReport
    let pageSize: Int
    let pageCount: Int
    let streamCount: Int
    var size: Int { pageSize * pageCount }
    let sessionID = UInt64.random(in: 1...UInt64.max)
    /// The secret that binds this migration to its source (CSPRNG): JOIN, RESUME and a
    /// resolving STATUS_QUERY must present it; only ACCEPT carries it.
    let sessionToken = SessionToken.random()
    let hashTable: PageHashTable
    let roundTable: PageRoundTable
    let stripes: PageStripes
    /// The control connection and page streams of the current attempt: a RESUME closes them,
    /// so that this thread learns at once that the source gave up on them. (A failed page
    /// stream does not: the source closes all its connections when one fails, and closing the
    /// control connection here could hide an ABORT the source sent on it.)
    let live = LiveConnections()
    var control: FramedConnection
    /// Cleared once the final round starts (DEVICE_STATE): from then on a loss is not resumed.
    let resumable: AtomicFlag
    /// Set just before `VERIFIED` ok is sent: a cancel no longer cuts the control connection's reads.
    let verifiedSent = AtomicFlag(false)

    // Set up by the handshake.
    var deadlines: ConnectionDeadlines?
    var deadlineToken: UInt64?
    var promisedDisk: UInt64 = 0
    var createdPartial = false
    var createdAttachment = false
    /// `PATH.partial` became `PATH` (at COMMIT; in post-copy once the memory verified).
    var imagePublished = false
    var owned = false
    var sessionOpened = false
    var handoffBegun = false
    var image: ReceivedImage?
    var guest: (any IncomingGuest)?
    var guestStarted = false
    /// The guest's progress when it resumed here, and when the migration ended (the last
    /// post-copy page verified; the resume itself after pre-copy).
    var progressAtResume: GuestProgressSample?
    var progressAtEnd: GuestProgressSample?
    var guestIdentity: (mac: MACAddress, ip: IPv4Address)?
    /// The payloads COMPLETE.state_digest covers, as received.
    var configPayload: [UInt8] = []
    var deviceStatePayload: [UInt8] = []
    /// The first frame after GUEST_CONFIG, read before the image exists (a PAGE_BATCH's header
    /// only); the receiving loop takes it first.
    var firstIncoming: IncomingFrame?
    var sinks: [PageSink] = []
    var rounds: StreamRounds
    var receivers: [StreamReceiver] = []
    /// `PATH.partial` and `PATH` locked (`ImageLock`): handed over by a single-guest agent, which
    /// releases them; taken by the session itself (`ownsLocks`) when its agent serves several guests.
    var imageLocks: DestinationImageLocks?
    var ownsLocks = false
    /// Whatever ends this session before the guest resumes here discards it, for this reason.
    var discardReason = "the migration ended before COMMIT"
    /// The key of this session's handler in `options.cancellation`.
    var cancelHandler: Int?
    var receiving = ReceivingState()
    /// The source asked for post-copy and this side can serve its memory on demand (the image
    /// is on tmpfs): ACCEPT offers it (Protocol.md section 11).
    var offersPostcopy = false

    init(
        options: DestinationOptions, connection: FramedConnection, hello: Hello, registry: SessionRegistry,
        admission: HelloAdmission = .established, hostClaim: HostClaim = .none,
        prepared: PreparedImage?, imageLocks: DestinationImageLocks? = nil, logger: Logger,
        progress: ProgressHandler?
    ) {
        self.options = options
        self.imageLocks = imageLocks
        self.connection = connection
        self.control = connection
        self.hello = hello
        self.registry = registry
        self.admission = admission
        self.hostClaim = hostClaim
        self.prepared = prepared
        self.progress = progress
        var log = logger
        log[metadataKey: "migration.role"] = "destination"
        log[metadataKey: "migration.source"] = "\(connection.peerDescription)"
        if !hello.guestName.isEmpty { log[metadataKey: "migration.guest"] = "\(hello.guestName)" }
        self.log = log
        pageSize = Int(hello.pageSize)
        pageCount = Int(hello.pageCount)
        streamCount = Int(hello.streamCount)
        hashTable = PageHashTable(pageCount: pageCount)
        roundTable = PageRoundTable(pageCount: pageCount)
        stripes = PageStripes(streamCount: streamCount)
        rounds = StreamRounds(streams: streamCount - 1)
        resumable = AtomicFlag(options.resumeTimeoutSeconds > 0)
        report = MigrationReport(
            role: "destination", image: options.imagePath, imageBytes: UInt64(pageSize * pageCount),
            pageSize: pageSize, vcpus: Int(hello.vcpuCount), workload: "")
    }

    var partialPath: String { options.imagePath + ".partial" }
    /// Where a guest's attachment is received (Protocol.md 3.25); `PATH.attachment` once it resumes.
    var partialAttachmentPath: String { options.imagePath + ".partial.attachment" }
    var attachmentPath: String { options.imagePath + ".attachment" }

    /// The report as far as the migration got, ended by `error`.
    func reportAfterFailure(_ error: MigrationError) -> MigrationReport {
        var partial = report
        // The final figures are set at the end; the rounds received so far say how far it got.
        if partial.rounds == 0 { partial.rounds = partial.perRound.count }
        if partial.wireBytes == 0 { partial.wireBytes = partial.perRound.reduce(0) { $0 + $1.wireBytes } }
        partial.totalMs = MonotonicClock.seconds(since: start).milliseconds
        partial.recordFailure(error)
        return partial
    }

    func run() throws -> DestinationResult {
        defer { cleanUp() }
        log.info("source connected", metadata: ["migration.source_name": "\(hello.sourceName)"])
        try handshake()
        try attachStreamsAtStart()
        enter(.receiving)
        try receive()
        enter(.awaitingCommit)
        let handoff = try awaitCommit()
        defer { if handoff !== control { handoff.close() } }
        if receiving.postcopy != nil && handoff !== control {
            // COMMIT came on the source's resolve connection: post-copy goes on there, and a
            // RESUME after a loss must be able to close it (the session's live connections).
            control = handoff
            live.add(handoff)
        }
        // Post-copy: the faults are answered from before the first vCPU runs.
        receiving.postcopy?.serveFaults(on: handoff)
        receiving.postcopy?.mapPresentPages()
        try resumeGuest(answering: handoff)
        guard let postcopy = receiving.postcopy else { return try runHere(handoff) }
        let last = try receivePostcopy(postcopy, on: handoff)
        defer { if last !== handoff { last.close() } }
        return try runHere(last)
    }

    func enter(_ next: Phase) {
        log.debug("phase", metadata: ["migration.from": "\(phase.rawValue)", "migration.to": "\(next.rawValue)"])
        phase = next
    }

    /// Everything the session holds, released in the reverse order of taking it.
    private func cleanUp() {
        stopWatchingCancel()
        if handoffBegun && !owned {
            registry.handoffs.set(session: sessionID, .discarded, message: "discarded before COMMIT: \(discardReason)")
        }
        if handoffBegun { registry.handoffs.end(session: sessionID, forget: !established) }
        if sessionOpened { registry.close(session: sessionID) }
        for receiver in receivers { receiver.stop() }
        // A guest that waits on a page that will not come must be able to stop.
        receiving.postcopy?.abandon()
        control.close()
        if let deadlineToken { deadlines?.disarm(deadlineToken) }
        if let guest {
            if guestStarted { _ = guest.stop() } else { guest.discard() }
        }
        if createdPartial && !owned { try? ImageFile.remove(path: partialPath) }
        if createdAttachment && !owned { try? ImageFile.remove(path: partialAttachmentPath) }
        if ownsLocks { imageLocks?.release() }
        registry.releaseDisk(promisedDisk)
        if deadlines != nil && !established { registry.endTentative() }
        connection.close()
        if !owned && phase != .handshake { phase = .discarded }
    }

    /// Fails the session before COMMIT: tells the source (unless it aborted itself) and throws.
    func fail(_ failure: MigrationError, on connection: FramedConnection? = nil) -> MigrationError {
        if failure.code != .peerAborted {
            try? (connection ?? control).send(
                Abort(reason: failure.abortReason, message: String(failure.message.prefix(1000))))
        }
        discardReason = failure.message
        return failure
    }

    // MARK: handshake

    /// Decides whether the guest fits here, answers ACCEPT, reads GUEST_CONFIG, prepares the
    /// guest's kind and creates the image it is received into.
    private func handshake() throws {
        if case .tentative(let reaper) = admission { deadlines = reaper }
        if let reason = options.cancellation?.reason {
            try? connection.send(Refuse(reason: .busy, message: "this destination is shutting down (\(reason))"))
            throw MigrationError(.cancelled, "refused a source: cancelled (\(reason))", guest: .notHere)
        }
        if let refusal = check(hello, promisedDisk: &promisedDisk, promise: deadlines == nil) {
            try? connection.send(Refuse(reason: refusal.reason, message: refusal.message))
            log.warning(
                "refused the guest",
                metadata: ["migration.reason": "\(refusal.reason)", "migration.message": "\(refusal.message)"])
            throw MigrationError(.refused, "refused the source's guest: \(refusal.message)", guest: .notHere)
        }
        if deadlines == nil { established = true }
        report.authenticated = connection.security.authenticated
        report.encryption = connection.security.cipher.description
        openSession()
        var step = "handshake"
        offersPostcopy =
            hello.codecs.contains(.postcopy)
            && (try? ImageFile.filesystemType(directoryOf: options.imagePath)) == "tmpfs"
        do {
            try connection.send(
                Accept(
                    version: ProtocolLimits.version, codecs: offersPostcopy ? CodecSet.all.union(.postcopy) : .all,
                    memoryAvailable: (try? availableMemoryBytes()) ?? 0,
                    diskAvailable: (try? ImageFile.freeBytes(directoryOf: options.imagePath)) ?? 0,
                    sessionID: sessionID, sessionToken: sessionToken, destinationName: options.name))
            deadlineToken = deadlines.map { $0.arm(connection.stream, seconds: Self.establishTimeout) }
            let config = try readGuestConfig()
            firstIncoming = try connection.receive(direct: .pageBatch)
            if let token = deadlineToken {
                deadlineToken = nil
                guard deadlines?.disarm(token) == true else { throw Self.missedDeadline() }
                try establish(size: UInt64(size) + config.attachmentLength, promisedDisk: &promisedDisk)
            }
            let memory = try makeImage(layout: config.regions)
            let attachment = try receiveAttachment(config)
            step = "preparing the guest's \(options.guestKinds[hello.guestKind]?.name ?? "kind")"
            try prepareGuest(config, attachment: attachment)
            try guest?.attach(
                memory: image?.guestView == nil
                    ? memory : try GuestMemory(layout: config.regions, in: image!.guestBase, pageSize: pageSize))
            sinks = (0..<max(streamCount, 1)).map { index in
                PageSink(
                    memory: memory, pageCount: pageCount, hashTable: hashTable, roundTable: roundTable,
                    stripes: stripes, stream: index)
            }
        } catch {
            var failure = MigrationError.wrap(error, during: step, guest: .notHere)
            if let token = deadlineToken, deadlines?.disarm(token) == false { failure = Self.missedDeadline() }
            throw fail(failure, on: connection)
        }
    }

    /// Registers the session (its streams may join from now on) and its handoff record.
    private func openSession() {
        let live = live
        let resumable = resumable
        registry.open(
            session: sessionID, token: sessionToken, extraStreams: streamCount - 1,
            onReattach: { type in
                // A RESUME only during pre-copy. A source that gave up during its blackout (its
                // STATUS_QUERY then carries its ABORT) is taken at any time before VERIFIED: the
                // connections it abandoned may hang without an error (a wedged page stream, a silent
                // network), and closing them ends the session's wait at once. Past DEVICE_STATE that
                // discards (no resume then); before it, the session reads the ABORT.
                guard type == .statusQuery || resumable.value else { return false }
                live.closeAll()
                return true
            })
        sessionOpened = true
        live.add(connection)
        watchCancel()
        report.session = hex(sessionID)
        registry.handoffs.begin(
            session: sessionID, token: sessionToken, guestName: hello.guestName, pageCount: hello.pageCount,
            control: connection)
        handoffBegun = true
    }

    /// Reads GUEST_CONFIG and hands the guest's description to its kind.
    private func readGuestConfig() throws -> GuestConfig {
        let frame = try connection.receive()
        guard frame.type == .guestConfig else {
            throw MigrationError(
                .protocolViolation, "expected GUEST_CONFIG after ACCEPT, got \(frame.type)", guest: .notHere)
        }
        let config = try GuestConfig(payload: frame.payload)
        configPayload = [UInt8](frame.payload)
        let regionPages = config.regions.reduce(UInt64(0)) { $0 &+ $1.pageCount }
        guard regionPages == hello.pageCount else {
            throw MigrationError(
                .protocolViolation, "GUEST_CONFIG's memory regions hold \(regionPages) pages, HELLO \(hello.pageCount)",
                guest: .notHere)
        }
        report.workload = config.workload
        guestIdentity = (options.guestMAC ?? config.guestMAC, options.guestIPv4 ?? IPv4Address(config.guestIPv4))
        guard options.guestKinds[hello.guestKind] != nil else {
            throw MigrationError(.configuration, "guest kind \(hello.guestKind) is not received here", guest: .notHere)
        }
        return config
    }

    /// Receives the attachment GUEST_CONFIG announced (its first chunk is `firstIncoming`) into
    /// `PATH.partial.attachment`, then reads the frame after it (Protocol.md 3.25).
    private func receiveAttachment(_ config: GuestConfig) throws -> GuestAttachment? {
        guard config.attachmentLength > 0 else { return nil }
        guard case .frame(let first) = firstIncoming else {
            throw MigrationError(
                .protocolViolation,
                "expected GUEST_ATTACHMENT after GUEST_CONFIG (it announced \(config.attachmentLength) bytes), got PAGE_BATCH",
                guest: .notHere)
        }
        firstIncoming = nil
        createdAttachment = true
        let started = MonotonicClock.now()
        try AttachmentTransfer.receive(
            length: config.attachmentLength, hash: config.attachmentHash, first: first, from: connection,
            into: partialAttachmentPath)
        log.info(
            "received the guest's attachment",
            metadata: [
                "migration.attachment_bytes": "\(config.attachmentLength)",
                "migration.attachment_ms": "\(MonotonicClock.seconds(since: started).milliseconds)",
            ])
        firstIncoming = try connection.receive(direct: .pageBatch)
        return GuestAttachment(
            path: partialAttachmentPath, length: config.attachmentLength, hash: config.attachmentHash)
    }

    /// Hands the guest's description (and its received attachment) to its kind.
    private func prepareGuest(_ config: GuestConfig, attachment: GuestAttachment?) throws {
        guard let kind = options.guestKinds[hello.guestKind] else { return }
        let offer = IncomingGuestOffer(
            cpuStateFormat: hello.cpuStateFormat, vcpus: Int(hello.vcpuCount), pageSize: pageSize,
            description: GuestDescription(seed: config.seed, parameters: config.workload, attachment: attachment),
            layout: config.regions, consoleLine: options.consoleLine)
        guest = try kind.prepare(offer, logger: log)
    }

    /// The image the pages are received into: the preallocated one if it fits, else a new
    /// `PATH.partial` with its space allocated now (a full disk is this clean error, not a
    /// SIGBUS later). The regions lie in it back to back, in page-numbering order.
    private func makeImage(layout: [MemoryRegionDescriptor]) throws -> GuestMemory {
        if imageLocks == nil {
            imageLocks = try DestinationImageLocks.acquire(imagePath: options.imagePath)
            ownsLocks = true
        }
        let mapped: MappedRegion
        if let ready = prepared?.take(), ready.size == size {
            mapped = ready
            log.info(
                "using the preallocated image", metadata: ["migration.prepare_ms": "\(prepareSeconds.milliseconds)"])
        } else {
            if options.preallocateBytes != nil {
                log.warning(
                    "the guest's size differs from --prealloc; making a new image",
                    metadata: [
                        "migration.guest_bytes": "\(size)",
                        "migration.prealloc_bytes": "\(options.preallocateBytes ?? 0)",
                    ])
            }
            try ImageFile.create(path: partialPath, size: size, overwrite: true, reserve: true)
            mapped = try MappedRegion.mapFile(path: partialPath, writable: true)
        }
        // The image holds its space now (or never needed new space: --prealloc).
        registry.releaseDisk(promisedDisk)
        promisedDisk = 0
        createdPartial = true
        let image = ReceivedImage(
            mapped,
            guestView: offersPostcopy
                ? ReceivedImage(try MappedRegion.mapFile(path: partialPath, writable: true)) : nil)
        self.image = image
        return try GuestMemory(layout: layout, in: image.region.base, pageSize: pageSize)
    }

    static func missedDeadline() -> MigrationError {
        MigrationError(
            .transport,
            "the source did not send its GUEST_CONFIG and first page frame within \(seconds(establishTimeout)) of ACCEPT; a source without a key must (Protocol.md section 9.5)",
            guest: .notHere)
    }

    /// Makes a tentative session established: takes a slot, its host's claim and its disk, in
    /// that order, giving back what it took when one fails (then it throws, naming which).
    private func establish(size: UInt64, promisedDisk: inout UInt64) throws {
        guard registry.establish() else {
            throw MigrationError(
                .refused,
                "busy: this destination is receiving \(registry.maxSessions == 1 ? "another guest" : "\(registry.maxSessions) guests, its limit") that arrived first; try again when it is done, or use another destination",
                guest: .notHere)
        }
        if let refusal = hostClaim.claim() {
            registry.unestablish()
            throw MigrationError(.refused, refusal, guest: .notHere)
        }
        if let refusal = promiseDisk(size, promisedDisk: &promisedDisk) {
            hostClaim.release()
            registry.unestablish()
            throw MigrationError(.refused, "disk: \(refusal.message)", guest: .notHere)
        }
        established = true
        log.info("the source is established", metadata: ["migration.promised_disk": "\(promisedDisk)"])
    }

    static func seconds(_ value: Double) -> String {
        value == value.rounded() ? "\(Int(value)) s" : "\(value) s"
    }
}

/// The mapped image a guest is received into, owned by its session.
final class ReceivedImage {
    /// Where the pages are written.
    let region: MappedRegion
    /// A second mapping of the same file, for the guest, when the session may switch to
    /// post-copy: the session never writes through it, so that a page is mapped in it only once
    /// its final bytes are in the file (`MissingPages`' minor-fault mode).
    let guestView: ReceivedImage?

    init(_ region: consuming MappedRegion, guestView: ReceivedImage? = nil) {
        self.region = region
        self.guestView = guestView
    }

    /// Where the guest's memory starts.
    var guestBase: UnsafeMutableRawPointer { guestView?.region.base ?? region.base }
}

/// A flag several threads read, shared by reference.
final class AtomicFlag: Sendable {
    private let storage: Atomic<Bool>

    init(_ value: Bool) {
        storage = Atomic(value)
    }

    var value: Bool { storage.load(ordering: .acquiring) }
    func clear() { storage.store(false, ordering: .releasing) }
    func set() { storage.store(true, ordering: .sequentiallyConsistent) }
}
