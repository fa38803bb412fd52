import FerryCodec
import FerryGuest
import FerryProtocol
import FerrySystem
import FerryTransport
import Glibc
import Logging

/// One live migration into this host, from the source's `HELLO` to the guest running here
/// (Protocol.md section 5): checks the guest fits, receives and verifies pages into
/// `PATH.partial` on the control connection and the page streams that join it, and on COMMIT
/// renames the image to `PATH` and resumes the guest. On any failure before COMMIT the partial
/// image is removed and no guest runs here.
///
/// Not `Sendable`: one thread runs it.
final class DestinationSession {
    /// How long the page streams have to join after ACCEPT.
    static let joinTimeout = 10.0

    let options: DestinationOptions
    let connection: FramedConnection
    let hello: Hello
    let registry: SessionRegistry
    let progress: ProgressHandler?
    private var log: Logger
    /// A preallocated, faulted-in image waiting for a guest of its size, if any.
    private var prepared: MappedRegion?
    private let prepareSeconds: Double
    private var guestIdentity: (mac: MACAddress, ip: IPv4Address)?

    init(options: DestinationOptions, connection: FramedConnection, hello: Hello, registry: SessionRegistry,
         prepared: consuming MappedRegion?, prepareSeconds: Double, logger: Logger, progress: ProgressHandler?) {
        self.options = options
        self.connection = connection
        self.hello = hello
        self.registry = registry
        self.prepared = prepared
        self.prepareSeconds = prepareSeconds
        self.progress = progress
        var log = logger
        log[metadataKey: "migration.role"] = "destination"
        log[metadataKey: "migration.source"] = "\(connection.peerDescription)"
        if !hello.guestName.isEmpty { log[metadataKey: "migration.guest"] = "\(hello.guestName)" }
        self.log = log
    }

    var partialPath: String { options.imagePath + ".partial" }

    func run() throws -> DestinationResult {
        defer { connection.close() }
        let start = MonotonicClock.now()
        let cpuStart = ProcessCPU.now()
        log.info("source connected", metadata: ["migration.source_name": "\(hello.sourceName)"])

        // Handshake: decide whether this guest fits here.
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
        report.authenticated = connection.security.authenticated
        report.encryption = connection.security.cipher.description

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
        registry.open(session: sessionID, extraStreams: streamCount - 1)
        defer { registry.close(session: sessionID) }
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
            for (index, stream) in try registry.waitForStreams(session: sessionID, timeout: Self.joinTimeout) {
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
                    report.cpuMs = (Double(ProcessCPU.now() &- cpuStart) / 1e9).milliseconds
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
}
