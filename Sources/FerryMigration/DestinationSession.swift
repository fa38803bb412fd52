import FerryCodec
import FerryGuest
import FerryKVM
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
    /// Seconds from ACCEPT in which a tentative session (a HELLO without a key) must send its
    /// GUEST_CONFIG and the first frame after it to be established (Protocol.md section 9.5).
    static let establishTimeout = 10.0

    let options: DestinationOptions
    let connection: FramedConnection
    let hello: Hello
    let registry: SessionRegistry
    let progress: ProgressHandler?
    private var log: Logger
    /// A preallocated, faulted-in image waiting for a guest of its size, if any.
    private let prepared: PreparedImage?
    private var prepareSeconds: Double { prepared?.seconds ?? 0 }
    private var guestIdentity: (mac: MACAddress, ip: IPv4Address)?
    let admission: HelloAdmission
    /// What the host gives an established tentative session (an established one has it already).
    let hostClaim: HostClaim
    /// The session was established: it holds a slot and its host's claim (its host releases
    /// both when `run` returns) and its guest's disk space. From the start with a key; without
    /// one, once its GUEST_CONFIG and first frame arrived in time and the claims succeeded.
    private(set) var established = false

    init(options: DestinationOptions, connection: FramedConnection, hello: Hello, registry: SessionRegistry,
         admission: HelloAdmission = .established, hostClaim: HostClaim = .none,
         prepared: PreparedImage?, logger: Logger, progress: ProgressHandler?) {
        self.options = options
        self.connection = connection
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
    }

    var partialPath: String { options.imagePath + ".partial" }

    func run() throws -> DestinationResult {
        defer { connection.close() }
        let start = MonotonicClock.now()
        let cpuStart = ProcessCPU.now()
        log.info("source connected", metadata: ["migration.source_name": "\(hello.sourceName)"])

        // Handshake: decide whether this guest fits here. A tentative session promises nothing yet.
        var deadlines: ConnectionDeadlines?
        if case .tentative(let reaper) = admission { deadlines = reaper }
        defer { if deadlines != nil && !established { registry.endTentative() } }
        var promisedDisk: UInt64 = 0
        defer { registry.releaseDisk(promisedDisk) }
        if let refusal = check(hello, promisedDisk: &promisedDisk, promise: deadlines == nil) {
            try? connection.send(Refuse(reason: refusal.reason, message: refusal.message))
            log.warning("refused the guest", metadata: ["migration.reason": "\(refusal.reason)", "migration.message": "\(refusal.message)"])
            throw MigrationError(.refused, "refused the source's guest: \(refusal.message)", guest: .notHere)
        }
        if deadlines == nil { established = true }
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
        // The payloads COMPLETE.state_digest covers, as received.
        var configPayload: [UInt8] = []
        var cpuStatePayload: [UInt8] = []
        // The built-in guest's setup, or the KVM guest, built before the blackout (`.incoming`)
        // so that the blackout pays only for loading its vCPU state.
        let setup: GuestSetup?
        var kvmGuest: KVMGuest?
        defer { kvmGuest?.stop() }
        var kvmParameters: KVMGuestParameters?
        let sink: PageSink
        // The first frame after GUEST_CONFIG, read before the image exists (a PAGE_BATCH's
        // header only); the receiving loop takes it first.
        var firstIncoming: IncomingFrame?
        // A tentative session's deadline (`establishTimeout` from ACCEPT), while armed.
        var deadlineToken: UInt64?
        defer { if let deadlineToken { deadlines?.disarm(deadlineToken) } }
        let streamCount = Int(hello.streamCount)
        let sessionID = UInt64.random(in: 1...UInt64.max)
        // The secret that binds this migration to its source (CSPRNG): JOIN, RESUME and a
        // resolving STATUS_QUERY must present it; only ACCEPT carries it.
        let sessionToken = SessionToken.random()
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
        registry.open(session: sessionID, token: sessionToken, extraStreams: streamCount - 1, onReattach: { type in
            // A RESUME only during pre-copy. A source that gave up during its blackout (its
            // STATUS_QUERY then carries its ABORT) is taken at any time before VERIFIED: the
            // connections it abandoned may hang without an error (a wedged page stream, a silent
            // network), and closing them ends the session's wait at once. Past CPU_STATE that
            // discards (no resume then); before it, the session reads the ABORT.
            guard type == .statusQuery || resumable.load(ordering: .acquiring) else { return false }
            live.closeAll()
            return true
        })
        defer { registry.close(session: sessionID) }
        let handoffs = registry.handoffs
        report.session = hex(sessionID)
        handoffs.begin(session: sessionID, token: sessionToken, guestName: hello.guestName, pageCount: hello.pageCount, control: connection)
        // Last of all (after the state is final): the record lets go of the connections.
        defer { handoffs.end(session: sessionID, forget: !established) }
        // Whatever ends this session before the guest resumes here discards it.
        var discardReason = "the migration ended before COMMIT"
        defer {
            if !owned { handoffs.set(session: sessionID, .discarded, message: "discarded before COMMIT: \(discardReason)") }
        }
        do {
            try connection.send(Accept(version: ProtocolLimits.version, codecs: .all,
                                       memoryAvailable: (try? availableMemoryBytes()) ?? 0,
                                       diskAvailable: (try? ImageFile.freeBytes(directoryOf: options.imagePath)) ?? 0,
                                       sessionID: sessionID, sessionToken: sessionToken, destinationName: options.name))
            deadlineToken = deadlines.map { $0.arm(connection.stream, seconds: Self.establishTimeout) }
            let configFrame = try connection.receive()
            guard configFrame.type == .guestConfig else {
                throw MigrationError(.protocolViolation, "expected GUEST_CONFIG after ACCEPT, got \(configFrame.type)", guest: .notHere)
            }
            let config = try GuestConfig(payload: configFrame.payload)
            configPayload = [UInt8](configFrame.payload)
            if hello.guestKind == GuestKind.kvm {
                kvmParameters = try KVMGuestParameters(workload: config.workload, seed: config.seed, vcpus: Int(hello.vcpuCount))
                setup = nil
            } else {
                setup = try GuestSetup.make(from: config, vcpus: Int(hello.vcpuCount), pageSize: pageSize, pageCount: pageCount)
            }
            report.workload = config.workload
            guestIdentity = (options.guestMAC ?? config.guestMAC, options.guestIPv4 ?? IPv4Address(config.guestIPv4))
            firstIncoming = try connection.receive(direct: .pageBatch)
            if let token = deadlineToken {
                deadlineToken = nil
                guard deadlines?.disarm(token) == true else { throw Self.missedDeadline() }
                try establish(size: UInt64(size), promisedDisk: &promisedDisk)
            }
            if let ready = prepared?.take(), ready.size == size {
                region = ready
                log.info("using the preallocated image", metadata: ["migration.prepare_ms": "\(prepareSeconds.milliseconds)"])
            } else {
                if options.preallocateBytes != nil {
                    log.warning("the guest's size differs from --prealloc; making a new image", metadata: [
                        "migration.guest_bytes": "\(size)", "migration.prealloc_bytes": "\(options.preallocateBytes ?? 0)"])
                }
                // Allocated now, so that a full disk is this clean error and not a SIGBUS later.
                try ImageFile.create(path: partialPath, size: size, overwrite: true, reserve: true)
                region = try MappedRegion.mapFile(path: partialPath, writable: true)
            }
            // The image holds its space now (or never needed new space: --prealloc).
            registry.releaseDisk(promisedDisk)
            promisedDisk = 0
            createdPartial = true
            sink = PageSink(memory: region.base, pageSize: pageSize, pageCount: pageCount, hashTable: hashTable,
                            roundTable: roundTable, stripes: stripes, stream: 0)
        } catch {
            var failure = MigrationError.wrap(error, during: "handshake", guest: .notHere)
            if let token = deadlineToken, deadlines?.disarm(token) == false { failure = Self.missedDeadline() }
            try? connection.send(Abort(reason: failure.abortReason, message: String(failure.message.prefix(1000))))
            discardReason = failure.message
            throw failure
        }
        if let kvmParameters {
            do {
                kvmGuest = try KVMGuest(memory: region.base, size: size, parameters: kvmParameters, origin: .incoming,
                                        logger: log, onConsoleLine: options.kvmConsoleLine)
            } catch {
                let failure = MigrationError.wrap(error, during: "building the KVM guest's VM", guest: .notHere)
                try? connection.send(Abort(reason: failure.abortReason, message: String(failure.message.prefix(1000))))
                discardReason = failure.message
                throw failure
            }
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
        // A connection lost while the streams join (a cut right at the start, or a source that
        // came back already) is a loss like any in pre-copy: the session waits for the RESUME.
        var lostWhileJoining: MigrationError?
        do {
            try attachStreams()
        } catch {
            let failure = MigrationError.wrap(error, during: "joining page streams", guest: .notHere)
            if failure.code == .transport && options.resumeTimeout > 0 {
                lostWhileJoining = failure
                firstIncoming = nil
            } else {
                try? connection.send(Abort(reason: failure.abortReason, message: String(failure.message.prefix(1000))))
                discardReason = failure.message
                throw failure
            }
        }
        report.setupMs = MonotonicClock.seconds(since: start).milliseconds
        report.preallocMs = prepareSeconds.milliseconds
        log.info("receiving guest", metadata: ["migration.pages": "\(pageCount)", "migration.vcpus": "\(hello.vcpuCount)",
                                               "migration.workload": "\(report.workload)"])

        // Pre-copy rounds and blackout, until the image verifies.
        var states: [VCPUState]?
        var verified = false
        var finalPhaseStart: UInt64 = 0
        var roundStart = MonotonicClock.now()
        var parts = DowntimeParts()
        var digest: UInt64 = 0
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
            handoffs.replaceControl(session: sessionID, with: control)
            if back.type == .statusQuery {
                // The source gave up (its blackout failed before CPU_STATE arrived) and says so.
                let frame = try control.receive()
                throw MigrationError(.protocolViolation, "after its STATUS_QUERY the source sent \(frame.type), not ABORT", guest: .notHere)
            }
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
        var lost: MigrationError? = lostWhileJoining
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
                    let incoming = try firstIncoming.take() ?? control.receive(direct: .pageBatch)
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
                        cpuStatePayload = [UInt8](frame.payload)
                        guard message.format == hello.cpuStateFormat, UInt32(message.vcpuCount) == hello.vcpuCount else {
                            throw MigrationError(.protocolViolation, "CPU_STATE of format \(message.format) for \(message.vcpuCount) vCPUs does not match the HELLO (format \(hello.cpuStateFormat), \(hello.vcpuCount) vCPUs)", guest: .notHere)
                        }
                        resumable.store(false, ordering: .releasing)
                        if let kvmGuest {
                            // Loaded now, before VERIFIED: a state this KVM refuses fails the
                            // migration while the source still owns the guest.
                            let restoreStart = MonotonicClock.now()
                            try kvmGuest.restore(try message.kvmStates())
                            parts.restoreVcpusMs = MonotonicClock.seconds(since: restoreStart).milliseconds
                            states = []
                        } else {
                            states = try message.builtinRecords().map(VCPUState.init)
                        }
                    case .complete:
                        let verifyStart = MonotonicClock.now()
                        parts.finalSendMs = (Double(verifyStart &- finalPhaseStart) / 1e9).milliseconds
                        let complete = try Complete(payload: frame.payload)
                        try rounds.wait(round: complete.finalRound, timeout: streamTimeout)
                        let roundPages = pagesApplied() - appliedBefore
                        let roundWire = bytesReceived() - wireBefore
                        digest = hashTable.digest()
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
                        if states == nil {
                            problems.append("no CPU state arrived")
                        } else if StateDigest.of(config: configPayload, cpuState: cpuStatePayload) != complete.stateDigest {
                            problems.append("the guest configuration or CPU state differs from what the source sent (state digest mismatch)")
                        }
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
                        // The state changes before VERIFIED leaves: a source that asks right after
                        // losing it must find `awaiting-commit`.
                        if verified { handoffs.set(session: sessionID, .awaitingCommit, digest: digest) }
                        try control.send(Verified(ok: verified, digest: digest, pagesMissing: UInt64(missing),
                                                     verifyMicroseconds: verifyMicros, message: problems.joined(separator: "; ")))
                        guard verified else {
                            throw MigrationError(.verification, "image did not verify: \(problems.joined(separator: "; "))", guest: .notHere)
                        }
                        break session
                    case .commit:
                        throw MigrationError(.protocolViolation, "COMMIT before a verified COMPLETE", guest: .notHere)
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
                discardReason = failure.message
                throw failure
            }
        }

        // Handoff: the image is verified; the guest runs here once COMMIT arrives (section 6).
        guard let states else { preconditionFailure("verification requires the CPU state") }
        let handoff: FramedConnection
        do {
            handoff = try awaitCommit(session: sessionID, on: control)
        } catch {
            let failure = MigrationError.wrap(error, during: "handoff", guest: .notHere)
            log.error("no COMMIT; the verified image was discarded", metadata: ["migration.error": "\(failure.message)"])
            discardReason = failure.message
            throw failure
        }
        defer { if handoff !== control { handoff.close() } }
        let commitAt = MonotonicClock.now()
        var guest: Guest?
        do {
            try ImageFile.rename(from: partialPath, to: options.imagePath)
            owned = true
            handoffs.set(session: sessionID, .resumed, digest: digest)
            // With --run-for 0 the guest is resumed and stopped at once: its vCPUs are held at
            // their current step so the image stays exactly what the source handed over.
            if let setup {
                guest = try Guest(memory: region.base, size: size, configuration: setup.configuration,
                                  initialStates: states,
                                  stepLimits: options.runFor > 0 ? nil : states.map(\.step), logger: log)
            }
        } catch {
            let failure = MigrationError.wrap(error, during: "resuming the guest", guest: owned ? .destination : .notHere)
            try? handoff.send(Abort(reason: failure.abortReason, message: String(failure.message.prefix(1000))))
            discardReason = failure.message
            throw failure
        }
        guest?.start()
        // A KVM guest has no step limit to hold it with --run-for 0: it is not started then,
        // so the image stays what the source handed over, as with the built-in guest.
        if let kvmGuest, options.runFor > 0 { kvmGuest.start() }
        let resumedAt = MonotonicClock.now()
        report.cpuMs = (Double(ProcessCPU.now() &- cpuStart) / 1e9).milliseconds
        let resumeMicros = (resumedAt &- commitAt) / 1000
        parts.destinationResumeMs = Double(resumeMicros) / 1000
        try? handoff.send(Resumed(resumeMicroseconds: resumeMicros))
        report.downtimeMs = (Double(resumedAt &- finalPhaseStart) / 1e9).milliseconds

        // The guest runs here now.
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
        if let kvmGuest {
            // A KVM guest with a step limit ends earlier when every vCPU halted.
            if options.runFor > ranFor { _ = try? kvmGuest.waitUntilHalted(timeoutSeconds: options.runFor - ranFor) }
        } else if options.runFor > ranFor {
            MonotonicClock.sleep(seconds: options.runFor - ranFor)
        }
        awaitHangUp(handoff, session: sessionID)
        let finalStates = guest?.stop() ?? []
        report.runForMs = MonotonicClock.seconds(since: resumedAt).milliseconds
        report.vcpuSteps = finalStates.map(\.step)
        var kvmConsole: [KVMConsoleLine] = []
        if let kvmGuest {
            kvmGuest.stop()
            report.vcpuSteps = kvmGuest.stepsPerVCPU
            kvmConsole = kvmGuest.consoleLines
            if let failure = kvmGuest.failure {
                report.error = "the KVM guest failed after it resumed here: \(failure)"
                log.error("the KVM guest failed after resume", metadata: ["migration.error": "\(failure)"])
            }
        }
        do {
            try region.sync()
        } catch {
            throw MigrationError.wrap(error, during: "flushing the image", guest: .destination)
        }
        report.totalMs = MonotonicClock.seconds(since: start).milliseconds
        return DestinationResult(report: report, finalStates: finalStates, setup: setup, kvmConsole: kvmConsole)
    }

    static func missedDeadline() -> MigrationError {
        MigrationError(.transport, "the source did not send its GUEST_CONFIG and first page frame within \(seconds(establishTimeout)) of ACCEPT; a source without a key must (Protocol.md section 9.5)", guest: .notHere)
    }

    /// Makes a tentative session established: takes a slot, its host's claim and its disk, in
    /// that order, giving back what it took when one fails (then it throws, naming which).
    private func establish(size: UInt64, promisedDisk: inout UInt64) throws {
        guard registry.establish() else {
            throw MigrationError(.refused, "busy: this destination is receiving \(registry.maxSessions == 1 ? "another guest" : "\(registry.maxSessions) guests, its limit") that arrived first; try again when it is done, or use another destination", guest: .notHere)
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

    /// Waits for the source's `COMMIT` after a verified image and returns the connection it came
    /// on. When the control connection fails first (the source's `COMMIT` or this side's
    /// `VERIFIED` may be lost), the session keeps the verified image and waits up to
    /// `handoffTimeoutMs` for the source to come back with `STATUS_QUERY` (resolve) on a new
    /// connection, which then carries `COMMIT` or `ABORT`. Throws when the source aborts, breaks
    /// the protocol, or does not come back in time: the guest then never runs here.
    private func awaitCommit(session: UInt64, on first: FramedConnection) throws -> FramedConnection {
        let deadline = MonotonicClock.now() &+ UInt64(max(options.handoffTimeoutMs, 0)) * 1_000_000
        var control = first
        while true {
            do {
                let frame = try control.receive()
                guard frame.type == .commit else {
                    throw MigrationError(.protocolViolation, "expected COMMIT after VERIFIED, got \(frame.type)", guest: .notHere)
                }
                _ = try Commit(payload: frame.payload)
                return control
            } catch let error as TransportError where error.code == .peerAborted {
                throw error
            } catch {
                // Lost, timed out, or damaged on the way (a garbled COMMIT may have been one): the
                // source decides, so close this connection and wait for it to come back and say.
                control.close()
                log.warning("lost the source after VERIFIED; keeping the verified image until it comes back to resolve the handoff", metadata: [
                    "migration.error": "\(error)", "migration.handoff_timeout_ms": "\(options.handoffTimeoutMs)"])
                guard let next = registry.handoffs.awaitResolver(session: session, deadline: deadline) else {
                    throw MigrationError(.transport, "the source did not come back within \(options.handoffTimeoutMs / 1000) s after VERIFIED to commit or abort (last error: \(error))", guest: .notHere)
                }
                log.info("the source came back to resolve the handoff", metadata: ["migration.peer": "\(next.peerDescription)"])
                control = next
            }
        }
    }

    /// Waits (at most `hangUpWaitMs`) for the source's `DONE`, which it sends as soon as it has
    /// read `RESUMED`, or for a resolve `STATUS_QUERY` that told it the guest runs here. Until
    /// then this agent still answers `STATUS`: a source whose `RESUMED` was damaged or lost asks,
    /// and learns that the guest runs here, instead of finding nobody to ask once a single-guest
    /// destination has exited. A connection that ends without `DONE` (it may have been cut, or
    /// closed by the confirming query) ends the wait only once the source is known to know.
    private func awaitHangUp(_ connection: FramedConnection, session: UInt64) {
        let deadline = MonotonicClock.now() &+ UInt64(Self.hangUpWaitMs) * 1_000_000
        try? connection.stream.setReceiveTimeout(ms: Self.hangUpWaitMs)
        if let frame = try? connection.receive(), frame.type == .done { return }
        registry.handoffs.awaitConfirmation(session: session, deadline: deadline)
    }

    static let hangUpWaitMs = 5_000
}
