import FerryCodec
import FerryGuest
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
        let roundTable = PageRoundTable(pageCount: pageCount)
        let stripes = PageStripes(streamCount: streamCount)
        // The control connection and page streams of the current attempt: a RESUME closes them,
        // so that this thread learns at once that the source gave up on them. (A failed page
        // stream does not: the source closes all its connections when one fails, and closing the
        // control connection here could hide an ABORT the source sent on it.)
        let live = LiveConnections()
        live.add(connection)
        var control = connection
        defer { control.close() }
        var rounds = StreamRounds(streams: streamCount - 1)
        var receivers: [StreamReceiver] = []
        defer { for receiver in receivers { receiver.stop() } }
        // Cleared once the final round starts (CPU_STATE): from then on a loss is not resumed.
        let resumable = Atomic<Bool>(options.resumeTimeout > 0)
        registry.open(session: sessionID, extraStreams: streamCount - 1, onReattach: {
            guard resumable.load(ordering: .acquiring) else { return false }
            live.closeAll()
            return true
        })
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
                            roundTable: roundTable, stripes: stripes, stream: 0)
        } catch {
            let failure = MigrationError.wrap(error, during: "handshake", guest: .notHere)
            try? connection.send(Abort(reason: failure.abortReason, message: String(failure.message.prefix(1000))))
            throw failure
        }
        // One sink per stream for the whole migration: after a resume the new streams feed the
        // same sinks, which remember what arrived intact.
        let base = region.base
        let sinks = [sink] + (1..<max(streamCount, 1)).map { index in
            PageSink(memory: base, pageSize: pageSize, pageCount: pageCount, hashTable: hashTable,
                     roundTable: roundTable, stripes: stripes, stream: index)
        }
        /// Takes the session's page streams and starts a receiver on each.
        func attachStreams() throws {
            rounds = StreamRounds(streams: streamCount - 1)
            for (index, stream) in try registry.waitForStreams(session: sessionID, timeout: Self.joinTimeout) {
                let receiver = StreamReceiver(stream: index, connection: stream, sink: sinks[index], rounds: rounds)
                receivers.append(receiver)
                live.add(stream)
                receiver.start()
            }
        }
        do {
            try attachStreams()
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
        // Bytes read by the connections of earlier attempts (before a resume).
        var retiredBytes: UInt64 = 0
        // Totals over all streams; read only after `rounds.wait` (the streams' writes happen before).
        func pagesApplied() -> Int { sinks.reduce(0) { $0 + $1.pagesApplied } }
        func applyNanos() -> UInt64 { sinks.reduce(0) { $0 + $1.applyNanos } }
        func pagesHeld() -> Int { sinks.reduce(0) { $0 + $1.pagesHeld } }
        func bytesReceived() -> UInt64 {
            receivers.reduce(retiredBytes + control.bytesReceived) { $0 + $1.connection.bytesReceived }
        }
        /// Closes the connections of this attempt and waits for the streams' threads (after which
        /// the sinks' state is final: a batch cut off has marked its torn pages stale).
        func dropConnections() {
            for receiver in receivers {
                receiver.stop()
                retiredBytes += receiver.connection.bytesReceived
            }
            receivers = []
            control.close()
            retiredBytes += control.bytesReceived
            live.removeAll()
        }
        /// After a loss during pre-copy: waits up to `resumeTimeout` for the source to come back,
        /// answers its RESUME with the pages held intact, and takes its new page streams.
        /// False when the grace period ended first.
        func resume(after failure: MigrationError) throws -> Bool {
            let lostAt = MonotonicClock.now()
            dropConnections()
            log.warning("connection lost during pre-copy; waiting for the source to resume", metadata: [
                "migration.resume_timeout_s": "\(options.resumeTimeout)", "migration.error": "\(failure.message)"])
            guard let back = registry.waitForReattachment(session: sessionID, timeout: options.resumeTimeout) else {
                return false
            }
            control = back.connection
            live.add(control)
            guard back.type == .resume else {
                throw MigrationError(.protocolViolation, "a \(back.type) connection came back instead of RESUME", guest: .notHere)
            }
            let request = try back.payload.withUnsafeBytes { bytes throws(ProtocolError) in try Resume(payload: bytes) }
            guard request.pageCount == UInt64(pageCount) else {
                throw MigrationError(.protocolViolation, "RESUME names \(request.pageCount) pages, HELLO \(pageCount)", guest: .notHere)
            }
            registry.reopenStreams(session: sessionID)
            let state = HeldPages(sinks: sinks, roundTable: roundTable, pageCount: pageCount, round: request.round)
            for frame in state.frames() { try control.send(frame) }
            try attachStreams()
            let outage = MonotonicClock.seconds(since: lostAt)
            report.resumes += 1
            report.resumeRecords.append(ResumeRecord(round: Int(request.round), outageMs: outage.milliseconds,
                                                     pagesHeld: state.heldCount, pagesHeldFromRound: state.currentCount))
            log.notice("source resumed the migration", metadata: [
                "migration.round": "\(request.round)", "migration.pages_held": "\(state.heldCount)",
                "migration.pages": "\(pageCount)", "migration.outage_ms": "\(outage.milliseconds)"])
            roundStart = MonotonicClock.now()
            return true
        }
        var appliedBefore = 0
        var applyNanosBefore: UInt64 = 0
        var wireBefore: UInt64 = 0
        let streamTimeout = Double(options.receiveTimeoutMs) / 1000
        // A loss of the connections during pre-copy that the source may resume (nil: none).
        var lost: MigrationError?
        var resumeExpired = false
        session: while true {
            do {
                if let failure = lost {
                    lost = nil
                    guard try resume(after: failure) else {
                        resumeExpired = true
                        throw MigrationError(.transport, "\(failure.message); the source did not resume within \(Self.seconds(options.resumeTimeout))", guest: .notHere)
                    }
                }
                receiving: while true {
                    let incoming = try control.receive(direct: .pageBatch)
                    if finalPhaseStart == 0 { finalPhaseStart = MonotonicClock.now() }
                    let frame: ReceivedFrame
                    switch incoming {
                    case .direct(_, _, let length):
                        _ = try sink.receive(batchLength: length, from: control)
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
                        try control.send(RoundAck(round: end.round, pagesReceived: UInt64(roundPages),
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
                        resumable.store(false, ordering: .releasing)
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
                        try control.send(Verified(ok: verified, digest: digest, pagesMissing: UInt64(missing),
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
                        try? control.send(Resumed(resumeMicroseconds: resumeMicros))
                        report.downtimeMs = (Double(resumedAt &- finalPhaseStart) / 1e9).milliseconds
                        break session
                    default:
                        throw MigrationError(.protocolViolation, "unexpected \(frame.type) frame", guest: .notHere)
                    }
                }
            } catch {
                var failure = MigrationError.wrap(error, during: verified ? "handoff" : "pre-copy", guest: .notHere)
                // A page stream that failed first (say, with a protocol violation) names the cause.
                if failure.code == .transport && !resumeExpired, let streamFailure = rounds.firstFailure { failure = streamFailure }
                // Only a lost connection during pre-copy (no CPU state yet) can be resumed: not an
                // ABORT, not a protocol violation, not the blackout.
                if failure.code == .transport && states == nil && !verified && options.resumeTimeout > 0 && !resumeExpired {
                    lost = failure
                    continue session
                }
                if failure.code != .peerAborted {
                    try? control.send(Abort(reason: failure.abortReason, message: String(failure.message.prefix(1000))))
                }
                log.error("migration failed; partial image removed", metadata: ["migration.error": "\(failure.message)"])
                throw failure
            }
        }

        // The guest runs here now.
        guard let guest else { preconditionFailure("the loop ends only after resuming the guest") }
        report.wireBytes = bytesReceived()
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

    static func seconds(_ value: Double) -> String {
        value == value.rounded() ? "\(Int(value)) s" : "\(value) s"
    }
}
