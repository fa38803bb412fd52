import FerryCodec
import FerryGuest
import FerryProtocol
import FerrySystem
import FerryTransport
import Glibc
import Logging

/// How the destination receives.
public struct DestinationOptions: Sendable {
    public var listen: Endpoint
    public var imagePath: String
    /// Overwrite an existing image file.
    public var force: Bool
    /// Seconds the guest runs on after resume before the agent stops it and flushes the image.
    public var runFor: Double
    /// Interface to announce the guest on (gratuitous ARP); nil: no announce.
    public var announceInterface: String?
    /// Override the guest MAC/IP that came with the guest.
    public var guestMAC: MACAddress?
    public var guestIPv4: IPv4Address?
    public var acceptTimeoutMs: Int?
    /// Longest silence from the source before the migration is abandoned.
    public var receiveTimeoutMs: Int
    public var name: String
    /// Create and fault in an image of this many bytes before listening, as a host reserves memory
    /// for a guest it expects (QEMU's `prealloc=on`). Fresh memory costs about 1 s per GiB on
    /// these hosts; done here, it is not on the migration's path. A guest of another size still
    /// migrates, into a new image.
    public var preallocateBytes: Int?

    public init(listen: Endpoint, imagePath: String, force: Bool = false, runFor: Double = 0,
                announceInterface: String? = nil, guestMAC: MACAddress? = nil, guestIPv4: IPv4Address? = nil,
                acceptTimeoutMs: Int? = nil, receiveTimeoutMs: Int = 60_000, name: String = "ferry-destination",
                preallocateBytes: Int? = nil) {
        self.preallocateBytes = preallocateBytes
        self.listen = listen
        self.imagePath = imagePath
        self.force = force
        self.runFor = runFor
        self.announceInterface = announceInterface
        self.guestMAC = guestMAC
        self.guestIPv4 = guestIPv4
        self.acceptTimeoutMs = acceptTimeoutMs
        self.receiveTimeoutMs = receiveTimeoutMs
        self.name = name
    }
}

/// What the destination knows after a migration: its report, and the final vCPU states of the
/// guest it ran (for the transparency check).
public struct DestinationResult: Sendable {
    public var report: MigrationReport
    public var finalStates: [VCPUState]
    public var setup: GuestSetup
}

/// Receives one live migration: checks the source's guest fits, receives and verifies pages into
/// `PATH.partial`, and on COMMIT renames it to `PATH` and resumes the guest (Protocol.md section 5).
/// On any failure before COMMIT the partial image is removed and no guest runs here.
/// `@unchecked Sendable`: it may be handed to another thread to run, but is used by one thread at a time.
public final class DestinationAgent: @unchecked Sendable {
    public let options: DestinationOptions
    let logger: Logger
    let progress: ProgressHandler?
    private var listener: TCPListener?
    /// The image made by `--prealloc`, mapped and faulted in, waiting for a guest of its size.
    private var prepared: MappedRegion?
    /// Seconds `bind()` spent preparing it.
    public private(set) var prepareSeconds: Double = 0

    public init(options: DestinationOptions, logger: Logger, progress: ProgressHandler? = nil) {
        self.options = options
        self.logger = logger
        self.progress = progress
    }

    var partialPath: String { options.imagePath + ".partial" }

    /// Checks the image path and starts listening; returns the bound port (useful with port 0).
    public func bind() throws -> UInt16 {
        if ImageFile.exists(path: options.imagePath) && !options.force {
            throw MigrationError(.configuration, "destination image \(options.imagePath) exists; pass --force to overwrite it", guest: .notHere)
        }
        if let bytes = options.preallocateBytes {
            guard bytes > 0, bytes % systemPageSize == 0 else {
                throw MigrationError(.configuration, "--prealloc \(bytes): must be a positive multiple of the page size \(systemPageSize)", guest: .notHere)
            }
            let start = MonotonicClock.now()
            do {
                try ImageFile.create(path: partialPath, size: bytes, overwrite: true)
                let region = try MappedRegion.mapFile(path: partialPath, writable: true)
                try region.populate(writable: true)
                prepared = consume region
            } catch {
                try? ImageFile.remove(path: partialPath)
                throw MigrationError.wrap(error, during: "preallocating \(bytes) bytes at \(partialPath)", guest: .notHere)
            }
            prepareSeconds = MonotonicClock.seconds(since: start)
        }
        do {
            let listener = try TCPListener(options.listen)
            self.listener = listener
            return listener.port
        } catch {
            throw MigrationError.wrap(error, during: "listen on \(options.listen)", guest: .notHere)
        }
    }

    public func run() throws -> DestinationResult {
        if listener == nil { _ = try bind() }
        guard let listener else { preconditionFailure("bind() sets the listener") }
        defer { listener.close() }
        var log = logger
        log[metadataKey: "migration.role"] = "destination"

        let stream: TCPStream
        do {
            stream = try listener.accept(timeoutMs: options.acceptTimeoutMs)
            try stream.setReceiveTimeout(ms: options.receiveTimeoutMs)
        } catch {
            throw MigrationError.wrap(error, during: "accept", guest: .notHere)
        }
        let start = MonotonicClock.now()
        let connection = FramedConnection(stream)
        defer { connection.close() }
        log[metadataKey: "migration.source"] = "\(stream.peerDescription)"
        log.info("source connected")

        // Handshake: decide whether this guest fits here.
        let hello: Hello
        do {
            hello = try connection.receive(Hello.self)
        } catch let error where error.code == .protocolViolation {
            try? connection.send(Refuse(reason: .malformed, message: "HELLO rejected: \(error.message)"))
            throw MigrationError(.protocolViolation, "source sent a malformed HELLO: \(error.message)", guest: .notHere)
        } catch {
            throw MigrationError.wrap(error, during: "handshake", guest: .notHere)
        }
        if let refusal = check(hello) {
            try? connection.send(Refuse(reason: refusal.reason, message: refusal.message))
            log.warning("refused the guest", metadata: ["migration.reason": "\(refusal.reason)", "migration.message": "\(refusal.message)"])
            throw MigrationError(.refused, "refused the source's guest: \(refusal.message)", guest: .notHere)
        }
        let pageSize = Int(hello.pageSize)
        let pageCount = Int(hello.pageCount)
        let size = pageSize * pageCount
        var report = MigrationReport(role: "destination", image: options.imagePath, imageBytes: UInt64(size),
                                     pageSize: pageSize, vcpus: Int(hello.vcpuCount), workload: "")

        var createdPartial = false
        var owned = false
        defer {
            if createdPartial && !owned { try? ImageFile.remove(path: partialPath) }
        }
        let region: MappedRegion
        let setup: GuestSetup
        let sink: PageSink
        let streamCount = Int(hello.streamCount)
        let sessionID = UInt64.random(in: 1...UInt64.max)
        let hashTable = PageHashTable(pageCount: pageCount)
        let stripes = PageStripes(streamCount: streamCount)
        let rounds = StreamRounds(streams: streamCount - 1)
        var receivers: [StreamReceiver] = []
        defer { for receiver in receivers { receiver.stop() } }
        do {
            try connection.send(Accept(version: ProtocolLimits.version, codecs: [.zero, .raw, .lz4],
                                       memoryAvailable: (try? availableMemoryBytes()) ?? 0,
                                       diskAvailable: (try? ImageFile.freeBytes(directoryOf: options.imagePath)) ?? 0,
                                       sessionID: sessionID, destinationName: options.name))
            let config = try connection.receive(GuestConfig.self)
            setup = try GuestSetup.make(from: config, vcpus: Int(hello.vcpuCount), pageSize: pageSize, pageCount: pageCount)
            report.workload = setup.workloadText
            guestIdentity = (options.guestMAC ?? config.guestMAC, options.guestIPv4 ?? IPv4Address(config.guestIPv4))
            if let ready = prepared.take(), ready.size == size {
                region = ready
                log.info("using the preallocated image", metadata: ["migration.prepare_ms": "\(prepareSeconds.milliseconds)"])
            } else {
                if options.preallocateBytes != nil {
                    log.warning("the guest's size differs from --prealloc; making a new image", metadata: [
                        "migration.guest_bytes": "\(size)", "migration.prealloc_bytes": "\(options.preallocateBytes ?? 0)"])
                }
                try ImageFile.create(path: partialPath, size: size, overwrite: true)
                region = try MappedRegion.mapFile(path: partialPath, writable: true)
            }
            createdPartial = true
            sink = PageSink(memory: region.base, pageSize: pageSize, pageCount: pageCount, hashTable: hashTable,
                            stripes: stripes, stream: 0)
        } catch {
            let failure = MigrationError.wrap(error, during: "handshake", guest: .notHere)
            try? connection.send(Abort(reason: failure.abortReason, message: String(failure.message.prefix(1000))))
            throw failure
        }
        do {
            for (index, stream) in try joinStreams(listener, count: streamCount - 1, sessionID: sessionID, log: log) {
                let receiver = StreamReceiver(
                    stream: index, connection: stream,
                    sink: PageSink(memory: region.base, pageSize: pageSize, pageCount: pageCount, hashTable: hashTable,
                                   stripes: stripes, stream: index),
                    rounds: rounds)
                receivers.append(receiver)
                receiver.start()
            }
        } catch {
            let failure = MigrationError.wrap(error, during: "joining page streams", guest: .notHere)
            try? connection.send(Abort(reason: failure.abortReason, message: String(failure.message.prefix(1000))))
            throw failure
        }
        report.setupMs = MonotonicClock.seconds(since: start).milliseconds
        report.preallocMs = prepareSeconds.milliseconds
        log.info("receiving guest", metadata: ["migration.pages": "\(pageCount)", "migration.vcpus": "\(hello.vcpuCount)",
                                               "migration.workload": "\(setup.workloadText)"])

        // Pre-copy rounds and blackout, until COMMIT.
        var states: [VCPUState]?
        var verified = false
        var finalPhaseStart: UInt64 = 0
        var roundStart = MonotonicClock.now()
        var parts = DowntimeParts()
        var guest: Guest?
        var resumedAt: UInt64 = 0
        let sinks = [sink] + receivers.map(\.sink)
        let connections = [connection] + receivers.map(\.connection)
        // Totals over all streams; read only after `rounds.wait` (the streams' writes happen before).
        func pagesApplied() -> Int { sinks.reduce(0) { $0 + $1.pagesApplied } }
        func applyNanos() -> UInt64 { sinks.reduce(0) { $0 + $1.applyNanos } }
        func pagesHeld() -> Int { sinks.reduce(0) { $0 + $1.pagesHeld } }
        func bytesReceived() -> UInt64 { connections.reduce(0) { $0 + $1.bytesReceived } }
        var appliedBefore = 0
        var applyNanosBefore: UInt64 = 0
        var wireBefore: UInt64 = 0
        let streamTimeout = Double(options.receiveTimeoutMs) / 1000
        do {
            receiving: while true {
                let incoming = try connection.receive(direct: .pageBatch)
                if finalPhaseStart == 0 { finalPhaseStart = MonotonicClock.now() }
                let frame: ReceivedFrame
                switch incoming {
                case .direct(_, _, let length):
                    _ = try sink.receive(batchLength: length, from: connection)
                    continue receiving
                case .frame(let whole):
                    frame = whole
                }
                switch frame.type {
                case .roundEnd:
                    let end = try RoundEnd(payload: frame.payload)
                    try rounds.wait(round: end.round, timeout: streamTimeout)
                    let roundPages = pagesApplied() - appliedBefore
                    let roundWire = bytesReceived() - wireBefore
                    // Summed over the streams' threads: CPU time spent applying, not wall time.
                    let roundApplyNanos = applyNanos() - applyNanosBefore
                    appliedBefore += roundPages
                    wireBefore += roundWire
                    applyNanosBefore += roundApplyNanos
                    let digestStart = MonotonicClock.now()
                    _ = hashTable.digest()
                    let digestMicros = (MonotonicClock.now() &- digestStart) / 1000
                    try connection.send(RoundAck(round: end.round, pagesReceived: UInt64(roundPages),
                                                 pagesHeld: UInt64(pagesHeld()), applyMicroseconds: roundApplyNanos / 1000,
                                                 digestMicroseconds: digestMicros))
                    let seconds = MonotonicClock.seconds(since: roundStart)
                    report.perRound.append(RoundRecord(
                        round: Int(end.round), pages: roundPages, wireBytes: roundWire, durationMs: seconds.milliseconds,
                        sendRateMBps: seconds > 0 ? Double(roundPages * pageSize) / seconds / 1e6 : 0,
                        dirtyPages: Int(end.dirtyPages), dirtyRateMBps: Double(end.dirtyRate) * Double(pageSize) / 1e6,
                        predictedDowntimeMs: 0, throttlePercent: Int(end.throttlePercent), decision: "acknowledged"))
                    progress?(MigrationProgress(role: "destination", phase: "pre-copy", round: Int(end.round),
                                                pagesSent: pagesHeld(), pagesInRound: pageCount, wireBytes: wireBefore,
                                                dirtyRate: Double(end.dirtyRate), sendRate: seconds > 0 ? Double(roundPages) / seconds : 0,
                                                predictedDowntime: .infinity, pageSize: pageSize))
                    roundStart = MonotonicClock.now()
                    finalPhaseStart = 0
                case .cpuState:
                    let message = try CPUState(payload: frame.payload)
                    guard message.format == hello.cpuStateFormat, UInt32(message.vcpuCount) == hello.vcpuCount else {
                        throw MigrationError(.protocolViolation, "CPU_STATE of format \(message.format) for \(message.vcpuCount) vCPUs does not match the HELLO (format \(hello.cpuStateFormat), \(hello.vcpuCount) vCPUs)", guest: .notHere)
                    }
                    states = try message.builtinRecords().map(VCPUState.init)
                case .complete:
                    let verifyStart = MonotonicClock.now()
                    parts.finalSendMs = (Double(verifyStart &- finalPhaseStart) / 1e9).milliseconds
                    let complete = try Complete(payload: frame.payload)
                    try rounds.wait(round: complete.finalRound, timeout: streamTimeout)
                    let roundPages = pagesApplied() - appliedBefore
                    let roundWire = bytesReceived() - wireBefore
                    let digest = hashTable.digest()
                    let missing = pageCount - pagesHeld()
                    var problems: [String] = []
                    if complete.pageCount != UInt64(pageCount) { problems.append("COMPLETE names \(complete.pageCount) pages, HELLO \(pageCount)") }
                    if missing > 0 { problems.append("\(missing) pages never arrived") }
                    let stale = sinks.reduce(0) { $0 + $1.staleCount }
                    if stale > 0 {
                        let first = sinks.compactMap(\.firstStalePage).min().map(String.init) ?? "?"
                        problems.append("\(stale) page(s) never arrived intact: their bytes do not match their hash (first: page \(first))")
                    }
                    if digest != complete.digest { problems.append("image digest \(hex(digest)) differs from the source's \(hex(complete.digest))") }
                    if states == nil { problems.append("no CPU state arrived") }
                    verified = problems.isEmpty
                    let verifyMicros = (MonotonicClock.now() &- verifyStart) / 1000
                    parts.destinationVerifyMs = Double(verifyMicros) / 1000
                    report.digest = hex(digest)
                    report.wireBytes = wireBefore + roundWire
                    report.perRound.append(RoundRecord(
                        round: Int(complete.finalRound), pages: roundPages, wireBytes: roundWire, durationMs: parts.finalSendMs,
                        sendRateMBps: 0, dirtyPages: 0, dirtyRateMBps: 0, predictedDowntimeMs: 0, throttlePercent: 0,
                        decision: "final"))
                    report.rounds = Int(complete.finalRound) + 1
                    try connection.send(Verified(ok: verified, digest: digest, pagesMissing: UInt64(missing),
                                                 verifyMicroseconds: verifyMicros, message: problems.joined(separator: "; ")))
                    guard verified else {
                        throw MigrationError(.verification, "image did not verify: \(problems.joined(separator: "; "))", guest: .notHere)
                    }
                case .commit:
                    guard verified, let states else {
                        throw MigrationError(.protocolViolation, "COMMIT before a verified COMPLETE", guest: .notHere)
                    }
                    let commitAt = MonotonicClock.now()
                    try ImageFile.rename(from: partialPath, to: options.imagePath)
                    owned = true
                    // With --run-for 0 the guest is resumed and stopped at once: its vCPUs are held at
                    // their current step so the image stays exactly what the source handed over.
                    let resumed = try Guest(memory: region.base, size: size, configuration: setup.configuration,
                                            initialStates: states,
                                            stepLimits: options.runFor > 0 ? nil : states.map(\.step), logger: log)
                    resumed.start()
                    guest = resumed
                    resumedAt = MonotonicClock.now()
                    let resumeMicros = (resumedAt &- commitAt) / 1000
                    parts.destinationResumeMs = Double(resumeMicros) / 1000
                    try? connection.send(Resumed(resumeMicroseconds: resumeMicros))
                    report.downtimeMs = (Double(resumedAt &- finalPhaseStart) / 1e9).milliseconds
                    break receiving
                default:
                    throw MigrationError(.protocolViolation, "unexpected \(frame.type) frame", guest: .notHere)
                }
            }
        } catch {
            let failure = MigrationError.wrap(error, during: verified ? "handoff" : "pre-copy", guest: .notHere)
            if failure.code != .peerAborted {
                try? connection.send(Abort(reason: failure.abortReason, message: String(failure.message.prefix(1000))))
            }
            log.error("migration failed; partial image removed", metadata: ["migration.error": "\(failure.message)"])
            throw failure
        }

        // The guest runs here now.
        guard let guest else { preconditionFailure("the loop ends only after resuming the guest") }
        report.guestLocation = .destination
        report.outcome = "migrated"
        report.verified = true
        for part in sinks { report.pages.add(part.counts) }
        for receiver in receivers { receiver.stop() }
        report.downtimeParts = parts
        report.downtimeClock = "destination CLOCK_MONOTONIC, from the first final-round frame to all vCPUs running; excludes the source's pause and final harvest (see the source report)"
        log.info("guest resumed", metadata: ["migration.resume_ms": "\(parts.destinationResumeMs)"])

        if let interface = options.announceInterface, let identity = guestIdentity, !identity.mac.isNone {
            do {
                let frames = try GratuitousARP.announce(interface: interface, mac: identity.mac, ip: identity.ip, logger: log)
                report.announce = "\(frames) gratuitous ARP frames for \(identity.mac) / \(identity.ip) on \(interface)"
            } catch {
                report.announce = "announce on \(interface) failed: \(error)"
                log.error("announce failed", metadata: ["migration.error": "\(error)"])
            }
        } else if options.announceInterface != nil {
            report.announce = "no announce: the guest has no MAC (pass --guest-mac to ferry send or ferry receive)"
        } else {
            report.announce = "no announce: no --announce-dev given"
        }

        let ranFor = MonotonicClock.seconds(since: resumedAt)
        if options.runFor > ranFor { MonotonicClock.sleep(seconds: options.runFor - ranFor) }
        let finalStates = guest.stop()
        report.runForMs = MonotonicClock.seconds(since: resumedAt).milliseconds
        report.vcpuSteps = finalStates.map(\.step)
        do {
            try region.sync()
        } catch {
            throw MigrationError.wrap(error, during: "flushing the image", guest: .destination)
        }
        report.totalMs = MonotonicClock.seconds(since: start).milliseconds
        return DestinationResult(report: report, finalStates: finalStates, setup: setup)
    }

    private var guestIdentity: (mac: MACAddress, ip: IPv4Address)?

}
