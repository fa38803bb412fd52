import FerryCodec
import FerryGuest
import FerryProtocol
import FerrySystem
import FerryTransport
import Foundation
import Logging

/// How the source migrates.
public struct SourceOptions: Sendable {
    public var destination: Endpoint
    public var settings: ConvergenceSettings
    public var compression: CompressionChoice
    public var tracker: TrackerChoice
    /// Bytes per PAGE_BATCH payload.
    public var batchBytes: Int
    /// Sent in HELLO: a destination that serves several guests stores this one as `<name>.img`.
    public var guestName: String
    public var connectTimeoutMs: Int
    /// Longest wait for any reply from the destination.
    public var replyTimeoutMs: Int
    public var guestMAC: MACAddress
    public var guestIPv4: UInt32
    public var name: String
    /// Most bytes per second the page streams may put on the wire together; nil: no limit.
    public var maxBandwidth: Double?
    /// TCP connections carrying pages (1…16), each with its own encoding thread.
    public var streams: Int
    /// true: the tracker starts with nothing protected and round 0's stream threads
    /// write-protect the region chunk by chunk just ahead of reading it (the cost overlaps the
    /// network instead of delaying round 0). false: the whole region is protected during setup.
    public var protectDuringRoundZero: Bool
    /// Round 0 sends holes of the image file (`imagePath`, which must be the file `memory` maps)
    /// as zero markers without reading them. Needs `protectDuringRoundZero`.
    public var skipImageHoles: Bool
    /// The image file's holes as `faultIn` left them (nil: round 0 searches the file itself).
    public var imageHoles: ImageHoles?
    /// When the connections fail during pre-copy (not an ABORT, not a refusal), reconnect to the
    /// same destination and resume with the pages it does not hold (Protocol.md, "Resuming after
    /// a connection loss"). false: give up at once, as during the blackout.
    public var resume: Bool
    /// Connection attempts per loss before giving up.
    public var reconnectAttempts: Int
    /// Wait before the second attempt (the first is immediate); doubles after each failed
    /// attempt, up to `reconnectBackoffMax`. Seconds.
    public var reconnectBackoff: Double
    public var reconnectBackoffMax: Double
    /// How long the source keeps asking the destination where the guest is when the
    /// destination's `RESUMED` does not arrive after `COMMIT` (Protocol.md section 6). Shorter
    /// than the destination's wait for a returning source (`DestinationOptions.handoffTimeoutMs`).
    public var handoffTimeoutMs: Int = 60_000
    /// A write to the destination that makes no progress for this long fails (a silent network
    /// partition: no FIN, no RST), which during pre-copy starts a resume.
    public var stallTimeoutMs: Int = 10_000
    /// The hard limit on the blackout, from pausing the vCPUs to reading `VERIFIED`, page
    /// streams included: when it passes, the source closes its connections, resumes its guest
    /// (no `COMMIT` is written) and tells the destination to discard. nil: 20 × the downtime
    /// target, at least 1 s (`BlackoutDeadline.defaultLimitMs`).
    public var blackoutTimeoutMs: Int?
    /// `blackoutTimeoutMs`, or its default for the downtime target.
    public var effectiveBlackoutTimeoutMs: Int {
        blackoutTimeoutMs ?? BlackoutDeadline.defaultLimitMs(downtimeTargetSeconds: settings.downtimeTarget)
    }
    /// Key, and whether to encrypt, for every connection (Protocol.md section 9); `.none`: plain.
    public var security: ConnectionSecurity = .none

    public init(destination: Endpoint, settings: ConvergenceSettings = ConvergenceSettings(),
                compression: CompressionChoice = .auto, tracker: TrackerChoice = .auto,
                batchBytes: Int = 1 << 20, guestName: String = "", connectTimeoutMs: Int = 10_000, replyTimeoutMs: Int = 60_000,
                guestMAC: MACAddress = .none, guestIPv4: UInt32 = 0, name: String = "ferry-source",
                maxBandwidth: Double? = nil, streams: Int = SourceOptions.defaultStreams,
                protectDuringRoundZero: Bool = true, skipImageHoles: Bool = true,
                resume: Bool = true, reconnectAttempts: Int = 6, reconnectBackoff: Double = 0.25, reconnectBackoffMax: Double = 4) {
        self.resume = resume
        self.reconnectAttempts = reconnectAttempts
        self.reconnectBackoff = reconnectBackoff
        self.reconnectBackoffMax = reconnectBackoffMax
        self.protectDuringRoundZero = protectDuringRoundZero
        self.skipImageHoles = skipImageHoles
        self.maxBandwidth = maxBandwidth
        self.streams = streams
        self.destination = destination
        self.settings = settings
        self.compression = compression
        self.tracker = tracker
        self.batchBytes = batchBytes
        self.guestName = guestName
        self.connectTimeoutMs = connectTimeoutMs
        self.replyTimeoutMs = replyTimeoutMs
        self.guestMAC = guestMAC
        self.guestIPv4 = guestIPv4
        self.name = name
    }

    /// One stream per core, at most 4: on a 2-core host two streams keep both cores busy
    /// (one encodes while the other's socket write blocks).
    public static var defaultStreams: Int { min(max(ProcessInfo.processInfo.activeProcessorCount, 1), 4) }
}

/// Live-migrates a running guest to a destination agent: handshake, pre-copy rounds driven by
/// `ConvergencePolicy`, blackout, verified handoff (Protocol.md section 5).
///
/// The caller owns the guest and its memory. On failure before COMMIT the guest is left running
/// (resumed if it was paused, throttle removed) and `migrate()` throws a `MigrationError` whose
/// `guest` is `.source`. After a successful `migrate()` the guest's vCPUs are stopped: it runs on
/// the destination now.
public final class SourceAgent {
    let memory: UnsafeMutableRawPointer
    let size: Int
    let pageSize: Int
    let guest: any MigratableGuest
    let options: SourceOptions
    let logger: Logger
    let progress: ProgressHandler?
    let imagePath: String
    /// Absorbs SIGBUS if the image file is truncated under the guest (see `imageShrank`); held
    /// from the first `migrate()` for as long as the agent lives, i.e. while its caller stops the guest.
    var busGuard: BusErrorGuard?

    /// The built-in guest.
    public convenience init(memory: UnsafeMutableRawPointer, size: Int, imagePath: String, guest: Guest, guestSetup: GuestSetup,
                            options: SourceOptions, logger: Logger, progress: ProgressHandler? = nil) {
        self.init(memory: memory, size: size, imagePath: imagePath, pageSize: guestSetup.configuration.pageSize,
                  guest: BuiltinMigratableGuest(guest, setup: guestSetup), options: options, logger: logger, progress: progress)
    }

    /// Any guest kind (`BuiltinMigratableGuest`, `KVMMigratableGuest`) over `memory`, the shared
    /// mapping of `imagePath`.
    public init(memory: UnsafeMutableRawPointer, size: Int, imagePath: String, pageSize: Int, guest: any MigratableGuest,
                options: SourceOptions, logger: Logger, progress: ProgressHandler? = nil) {
        self.memory = memory
        self.size = size
        self.pageSize = pageSize
        self.guest = guest
        self.options = options
        self.logger = logger
        self.progress = progress
        self.imagePath = imagePath
    }

    public func migrate() throws -> MigrationReport {
        let start = MonotonicClock.now()
        let cpuStart = ProcessCPU.now()
        let pageCount = size / pageSize
        var report = MigrationReport(role: "source", image: imagePath, imageBytes: UInt64(size), pageSize: pageSize,
                                     vcpus: guest.vcpus, workload: guest.workloadText)
        report.compression = options.compression.rawValue
        report.downtimeTargetMs = options.settings.downtimeTarget * 1000
        var log = logger
        log[metadataKey: "migration.role"] = "source"
        log[metadataKey: "migration.destination"] = "\(options.destination)"
        guardImage(log: log)

        // Connect and handshake.
        guard (1...ProtocolLimits.maxStreams).contains(options.streams) else {
            throw MigrationError(.configuration, "--streams \(options.streams): must be between 1 and \(ProtocolLimits.maxStreams)", guest: .source)
        }
        var connection: FramedConnection
        // Round trip to the destination: the smallest of the handshake and every ROUND_END →
        // ROUND_ACK wait (less the destination's digest time). The handshake alone can be far off
        // (a shaped link's queue, the destination's admission checks).
        var rtt: Double
        let sessionID: UInt64
        /// `ACCEPT.session_token`: presented in JOIN, RESUME and the handoff's STATUS_QUERYs.
        let sessionToken: SessionToken
        /// The codecs the destination decodes (its ACCEPT): the streams use no other.
        let peerCodecs: CodecSet
        var configPayload: [UInt8] = []
        do {
            let opened = try openSession(pageCount: pageCount, log: log)
            connection = opened.connection
            rtt = opened.rtt
            sessionID = opened.accept.sessionID
            sessionToken = opened.accept.sessionToken
            peerCodecs = opened.accept.codecs
            report.authenticated = connection.security.authenticated
            report.encryption = connection.security.cipher.description
            report.session = hex(sessionID)
            report.sessionToken = sessionToken.hex
            if opened.attempts > 1 { report.handshakeAttempts = opened.attempts }
            log.info("destination accepted the guest", metadata: [
                "migration.version": "\(opened.accept.version)", "migration.peer": "\(opened.accept.destinationName)",
                "migration.attempts": "\(opened.attempts)"])
            let config = GuestConfig(seed: guest.seed, guestMAC: options.guestMAC,
                                     guestIPv4: options.guestIPv4, workload: guest.workloadText,
                                     trace: guest.traceBytes)
            configPayload = config.encodedPayload()
            try connection.send(config)
        } catch {
            throw MigrationError.wrap(error, during: "handshake", guest: .source)
        }
        defer { connection.close() }

        // Start tracking before round 0 reads a page. Whole-region start: every write from here
        // on is caught. Deferred start: a page's writes are caught from its protection on, which
        // round 0's streams do chunk by chunk ahead of reading (see RoundZeroProtection), so a
        // write is either read by round 0 or caught; at the end of round 0 all is protected.
        let tracker: any DirtyTracker
        do {
            let made = try guest.makeDirtyTracker(options.tracker, memory: memory, size: size, pageSize: pageSize)
            tracker = made.tracker
            report.tracker = made.tracker.kind.rawValue
            report.trackerReason = made.why
            log.info("dirty tracker ready", metadata: ["migration.tracker": "\(made.tracker.kind)", "migration.tracker_why": "\(made.why)",
                "migration.tracker_protects": "\(options.protectDuringRoundZero ? "chunk by chunk in round 0" : "whole region at setup")"])
            if options.protectDuringRoundZero {
                try tracker.startDeferred()
            } else {
                try tracker.start()
            }
        } catch {
            abort(connection, MigrationError.wrap(error, during: "tracker setup", guest: .source))
            throw MigrationError.wrap(error, during: "tracker setup", guest: .source)
        }
        defer { tracker.stop() }
        defer { guest.throttlePercent = 0 }
        // Round 0 sends the image file's holes as zero markers without reading them; only when
        // the memory is that file's mapping (same size) and protection happens in round 0.
        var holes: ImageHoles?
        if options.protectDuringRoundZero && options.skipImageHoles, (try? ImageFile.size(path: imagePath)) == size {
            holes = options.imageHoles.flatMap { $0.path == imagePath ? $0 : nil } ?? (try? ImageHoles(path: imagePath, pageSize: pageSize))
        }

        // Measure what a blackout will cost besides the pages: one pause of the vCPUs and one
        // harvest of the whole region (which also absorbs what was written before round 0).
        let pauseCost = Double(guest.pause()) / 1e9
        guest.resume()

        let streamer: SourceStreams
        do {
            streamer = try SourceStreams(control: connection, count: options.streams, endpoint: options.destination,
                                         sessionID: sessionID, token: sessionToken, options: options, memory: memory, pageSize: pageSize,
                                         pageCount: pageCount, peerCodecs: peerCodecs)
        } catch {
            let failure = MigrationError.wrap(error, during: "opening page streams", guest: .source)
            abort(connection, failure)
            throw failure
        }
        defer { streamer.closeExtraStreams() }
        // Pre-copy's stall detection (the blackout has its deadline instead).
        let stallWatch = StallWatch(limitMs: options.stallTimeoutMs)
        defer { stallWatch.stop() }
        stallWatch.watch(streamer.connections)
        var policy = ConvergencePolicy(settings: options.settings)
        var pending = DirtyBitmap(count: pageCount)
        pending.setAll()
        // The pages of the round being sent.
        var toSend = DirtyBitmap(count: pageCount)
        var inRound = 0
        var roundStartedAt = MonotonicClock.now()
        var roundWireStart: UInt64 = 0
        var round = 0
        // The resume whose first round has not been recorded yet.
        var resumeAwaitingRound: Int?
        var lastHarvest = MonotonicClock.now()
        var lastDecision: ConvergenceDecision?
        var dirtyRate = 0.0
        report.setupMs = MonotonicClock.seconds(since: start).milliseconds
        log.info("pre-copy starts", metadata: ["migration.pages": "\(pageCount)", "migration.setup_ms": "\(report.setupMs)"])

        /// After the connections were lost during pre-copy: reconnects (bounded attempts with
        /// backoff), learns from RESUME_STATE which pages the destination holds intact, re-opens
        /// the page streams, and makes `pending` what the next round must send: the pages not
        /// held, those of the lost round whose copy did not arrive, and those dirtied since the
        /// last harvest (the outage included: the tracker stayed armed).
        func resume(after failure: MigrationError) throws {
            let lostAt = MonotonicClock.now()
            let lostRound = round
            let percent = inRound > 0 ? min(100, 100 * streamer.pagesSentInRound / inRound) : 100
            report.perRound.append(RoundRecord(
                round: lostRound, pages: streamer.pagesSentInRound, wireBytes: streamer.wireBytes - roundWireStart,
                durationMs: MonotonicClock.seconds(since: roundStartedAt).milliseconds, sendRateMBps: 0, dirtyPages: 0,
                dirtyRateMBps: 0, predictedDowntimeMs: -1, throttlePercent: guest.throttlePercent,
                decision: "connection lost at \(percent)% of the round; resuming"))
            streamer.closeAll()
            connection.close()
            let back = try reconnect(sessionID: sessionID, token: sessionToken, pageCount: pageCount, lostRound: lostRound, streamer: streamer,
                                     lost: failure) { attempt, why in
                let event = "connection lost during round \(lostRound) at \(percent)%; reconnecting (attempt \(attempt)/\(options.reconnectAttempts))"
                log.warning("\(event)", metadata: ["migration.error": "\(why.message)"])
                progress?(MigrationProgress(role: "source", phase: "pre-copy", round: lostRound, pagesSent: 0, pagesInRound: inRound,
                                            wireBytes: streamer.wireBytes, dirtyRate: dirtyRate, sendRate: 0,
                                            predictedDowntime: .infinity, pageSize: pageSize, event: event))
            }
            connection = back.connection
            stallWatch.watch(streamer.connections)
            let held = back.held
            // Everything dirtied since the last harvest, the outage included.
            try tracker.harvest(into: &pending)
            lastHarvest = MonotonicClock.now()
            let dirtied = pending.popcount()
            Self.addPagesToResend(to: &pending, held: held, lostRound: toSend)
            let resend = pending.popcount()
            let outage = MonotonicClock.seconds(since: lostAt)
            report.resumes += 1
            report.resumeRecords.append(ResumeRecord(round: lostRound, attempts: back.attempts, outageMs: outage.milliseconds,
                                                     pagesHeld: held.heldCount, pagesHeldFromRound: held.currentCount,
                                                     pagesDirtied: dirtied, pagesResent: resend))
            resumeAwaitingRound = report.resumeRecords.count - 1
            let event = "resumed: destination holds \(held.heldCount) of \(pageCount) pages; resending \(resend)"
            log.notice("\(event)", metadata: ["migration.round": "\(lostRound)", "migration.outage_ms": "\(outage.milliseconds)",
                                              "migration.attempts": "\(back.attempts)"])
            progress?(MigrationProgress(role: "source", phase: "pre-copy", round: lostRound + 1, pagesSent: 0, pagesInRound: resend,
                                        wireBytes: streamer.wireBytes, dirtyRate: dirtyRate, sendRate: 0,
                                        predictedDowntime: .infinity, pageSize: pageSize, event: event))
            // The lost round is never acknowledged; its number is not used again (the destination
            // tells copies of the lost round from those of the next by it).
            round += 1
        }

        // Pre-copy rounds.
        precopy: while true {
            do {
                while true {
                    let roundStart = MonotonicClock.now()
                    toSend = pending
                    pending.clearAll()
                    inRound = toSend.popcount()
                    let wireBefore = streamer.wireBytes
                    roundStartedAt = roundStart
                    roundWireStart = wireBefore
                    let snapshot = MigrationProgress(role: "source", phase: "pre-copy", round: round, pagesSent: 0,
                                                     pagesInRound: inRound, wireBytes: wireBefore, dirtyRate: dirtyRate,
                                                     sendRate: lastDecision?.transferRate ?? 0,
                                                     predictedDowntime: lastDecision?.predictedDowntime ?? .infinity, pageSize: pageSize)
                    let sent = try streamer.send(pages: toSend, round: UInt32(round),
                                                 protecting: round == 0 && options.protectDuringRoundZero ? tracker : nil,
                                                 holes: round == 0 ? holes : nil) { [progress, inRound] done in
                        var update = snapshot
                        update.pagesSent = min(done, inRound)
                        progress?(update)
                    }
                    let harvestStart = MonotonicClock.now()
                    let dirty = try tracker.harvest(into: &pending)
                    let harvestSeconds = MonotonicClock.seconds(since: harvestStart)
                    if let shrunk = imageShrank() { throw shrunk }
                    let dirtySeconds = Double(harvestStart &- lastHarvest) / 1e9
                    lastHarvest = harvestStart
                    dirtyRate = dirtySeconds > 0 ? Double(dirty) / dirtySeconds : 0

                    let roundEndSent = MonotonicClock.now()
                    try connection.send(RoundEnd(
                        round: UInt32(round), pagesSent: UInt64(sent.pages), wireBytes: sent.wireBytes,
                        durationMicroseconds: UInt64(MonotonicClock.seconds(since: roundStart) * 1e6), dirtyPages: UInt64(dirty),
                        dirtyRate: UInt64(dirtyRate), throttlePercent: UInt32(guest.throttlePercent)))
                    let ack = try awaitRoundAck(round: round, on: connection, streams: streamer)
                    guard ack.round == UInt32(round) else {
                        throw MigrationError(.protocolViolation, "ROUND_ACK for round \(ack.round), expected \(round)", guest: .source)
                    }
                    rtt = min(rtt, max(0, MonotonicClock.seconds(since: roundEndSent) - Double(ack.digestMicroseconds) / 1e6))
                    let transferSeconds = MonotonicClock.seconds(since: roundStart) - harvestSeconds
                    // Fixed blackout costs, each measured: pause, final harvest, the destination's digest,
                    // and two round trips (COMPLETE→VERIFIED, COMMIT→RESUMED).
                    let fixed = pauseCost + harvestSeconds + Double(ack.digestMicroseconds) / 1e6 + 2 * rtt
                    let observation = RoundObservation(
                        // Only pages with data count for the rate: zero pages cost almost nothing, and the
                        // pages a guest dirties are almost never zero, so counting them would make the
                        // link look faster than it is for the final round.
                        round: round, pagesSent: sent.counts.lz4 + sent.counts.raw, transferSeconds: transferSeconds,
                        dirtyPages: pending.popcount(),
                        dirtySeconds: dirtySeconds, elapsed: MonotonicClock.seconds(since: start),
                        fixedCostSeconds: fixed, throttlePercent: guest.throttlePercent,
                        dirtiedSinceHarvest: Int(dirtyRate * MonotonicClock.seconds(since: harvestStart)))
                    let decision = policy.decide(observation)
                    lastDecision = decision
                    report.perRound.append(RoundRecord(
                        round: round, pages: sent.pages, wireBytes: streamer.wireBytes - wireBefore,
                        durationMs: transferSeconds.milliseconds,
                        sendRateMBps: transferSeconds > 0 ? Double(sent.pages * pageSize) / transferSeconds / 1e6 : 0,
                        dirtyPages: observation.dirtyPages,
                        dirtyRateMBps: observation.dirtyRate * Double(pageSize) / 1e6,
                        predictedDowntimeMs: decision.predictedDowntime.isFinite ? decision.predictedDowntime.milliseconds : -1,
                        throttlePercent: guest.throttlePercent, decision: "\(decision.action)"))
                    if let index = resumeAwaitingRound {
                        report.resumeRecords[index].pagesResent = sent.pages
                        report.resumeRecords[index].wireBytesResent = streamer.wireBytes - wireBefore
                        resumeAwaitingRound = nil
                    }
                    log.info("round done", metadata: [
                        "migration.round": "\(round)", "migration.pages": "\(sent.pages)",
                        "migration.dirty_pages": "\(observation.dirtyPages)",
                        "migration.predicted_ms": "\(decision.predictedDowntime.milliseconds)",
                        "migration.decision": "\(decision.action)", "migration.reason": "\(decision.reason)"])
                    progress?(MigrationProgress(role: "source", phase: "pre-copy", round: round, pagesSent: sent.pages,
                                                pagesInRound: inRound, wireBytes: streamer.wireBytes, dirtyRate: dirtyRate,
                                                sendRate: decision.transferRate, predictedDowntime: decision.predictedDowntime,
                                                pageSize: pageSize))
                    round += 1
                    switch decision.action {
                    case .nextRound:
                        continue
                    case .throttle(let percent):
                        guest.throttlePercent = percent
                        report.maxThrottlePercent = max(report.maxThrottlePercent, percent)
                        continue
                    case .switchover:
                        report.predictedDowntimeMs = decision.predictedDowntime.milliseconds
                    case .giveUp:
                        throw MigrationError(.notConverged, decision.reason, guest: .source)
                    }
                    break
                }
                break precopy
            } catch {
                var failure = imageShrank() ?? MigrationError.wrap(error, during: "pre-copy round \(round)", guest: .source)
                if let stall = stallWatch.stallReason, failure.code == .transport {
                    failure = MigrationError(.transport, "pre-copy round \(round): \(stall)", guest: .source)
                } else if failure.code == .transport, let aborted = abortWaiting(on: connection, during: "pre-copy round \(round)") {
                    // The destination said why it closed: an ABORT is final, not a loss to resume.
                    failure = aborted
                }
                // A lost connection (not an ABORT, not a protocol violation): resume where it was.
                if options.resume && failure.code == .transport {
                    do {
                        try resume(after: failure)
                        continue precopy
                    } catch {
                        failure = MigrationError.wrap(error, during: "pre-copy round \(round)", guest: .source)
                    }
                }
                abort(connection, failure)
                report.rounds = round
                throw failure
            }
        }

        // Blackout: from pausing the vCPUs to the destination's RESUMED. Until VERIFIED it is
        // bounded by the deadline, which closes every connection when it passes.
        let blackoutStart = MonotonicClock.now()
        stallWatch.watch([])
        let deadline = BlackoutDeadline(limitMs: options.effectiveBlackoutTimeoutMs, connections: streamer.connections)
        let pauseNanos = guest.pause()
        let verifyStart: UInt64
        let parts0 = MonotonicClock.now()
        var parts = DowntimeParts()
        parts.pauseVcpusMs = (Double(pauseNanos) / 1e9).milliseconds
        let digest: UInt64
        do {
            try tracker.harvest(into: &pending)
            let harvestDone = MonotonicClock.now()
            parts.finalHarvestMs = (Double(harvestDone &- parts0) / 1e9).milliseconds
            let final = try streamer.send(pages: pending, round: UInt32(round))
            let cpuStateStart = MonotonicClock.now()
            let cpuState = try guest.cpuState()
            try connection.send(cpuState)
            parts.cpuStateMs = (Double(MonotonicClock.now() &- cpuStateStart) / 1e9).milliseconds
            digest = streamer.digest()
            try connection.send(Complete(finalRound: UInt32(round), pageCount: UInt64(pageCount), digest: digest,
                                         stateDigest: StateDigest.of(config: configPayload, cpuState: cpuState.encodedPayload())))
            verifyStart = MonotonicClock.now()
            parts.finalSendMs = (Double(verifyStart &- harvestDone) / 1e9).milliseconds
            report.perRound.append(RoundRecord(
                round: round, pages: final.pages, wireBytes: final.wireBytes, durationMs: parts.finalSendMs,
                sendRateMBps: 0, dirtyPages: 0, dirtyRateMBps: 0, predictedDowntimeMs: report.predictedDowntimeMs,
                throttlePercent: guest.throttlePercent, decision: "final (vCPUs paused)"))
            let verified = try connection.receive(Verified.self)
            parts.verifyMs = MonotonicClock.seconds(since: verifyStart).milliseconds
            parts.destinationVerifyMs = (Double(verified.verifyMicroseconds) / 1000)
            guard verified.ok, verified.digest == digest else {
                throw MigrationError(.verification,
                    "destination did not verify the image: \(verified.message.isEmpty ? "digest \(hex(verified.digest)) ≠ \(hex(digest)), \(verified.pagesMissing) pages missing" : verified.message)",
                    guest: .source)
            }
            // The pages sent are what the guest had, unless the file was cut under it: never commit that.
            if let shrunk = imageShrank() { throw shrunk }
            // VERIFIED in time, or the deadline passed as it arrived: then the connections are
            // closed and the COMMIT could not be sent anyway.
            guard deadline.disarm() else { throw deadline.failure(during: "as VERIFIED arrived") }
        } catch {
            deadline.disarm()
            guest.resume()
            var failure = imageShrank()
                ?? (deadline.hasExpired ? deadline.failure(during: "while \(blackoutPhase(parts))")
                                        : MigrationError.wrap(error, during: "blackout", guest: .source))
            if failure.code == .transport && !deadline.hasExpired, let aborted = abortWaiting(on: connection, during: "blackout") {
                failure = aborted
            }
            abort(connection, failure)
            log.error("migration failed during blackout; guest resumed on the source", metadata: ["migration.error": "\(failure.message)"])
            if failure.code == .transport {
                // The destination may wait for a RESUME (no CPU_STATE arrived) or hold a verified
                // image waiting for a COMMIT, neither of which will come: tell it now rather than
                // after its grace period.
                if let splitBrain = releaseDestination(session: sessionID, token: sessionToken, because: failure.message, log: log) {
                    throw splitBrain
                }
            }
            throw failure
        }

        // Handoff. Once COMMIT is written the guest belongs to the destination, which resumes it
        // in milliseconds: RESUMED is awaited briefly, and its absence is resolved by asking.
        try? connection.stream.setReceiveTimeout(ms: min(options.replyTimeoutMs, Self.resumedWaitMs))
        let commitStart = MonotonicClock.now()
        do {
            try connection.send(Commit())
        } catch {
            // The 16-byte COMMIT frame was not accepted by the kernel: the destination cannot have it.
            guest.resume()
            throw MigrationError.wrap(error, during: "commit", guest: .source)
        }
        report.guestLocation = .handedOverUnconfirmed
        // The vCPUs stay paused, not stopped, until the destination confirms: should it turn out
        // that the COMMIT never reached it and it discarded the guest, the guest resumes here.
        report.verified = true
        report.digest = hex(digest)
        report.rounds = round + 1
        report.wireBytes = streamer.wireBytes
        report.pages = streamer.counts
        report.holePages = streamer.holePages
        do {
            let resumed = try connection.receive(Resumed.self)
            let end = MonotonicClock.now()
            try? connection.send(Done())
            parts.commitResumeMs = (Double(end &- commitStart) / 1e9).milliseconds
            parts.destinationResumeMs = Double(resumed.resumeMicroseconds) / 1000
            report.downtimeMs = (Double(end &- blackoutStart) / 1e9).milliseconds
            report.guestLocation = .destination
            report.outcome = "migrated"
        } catch {
            log.warning("no RESUMED after COMMIT; asking the destination where the guest is", metadata: [
                "migration.error": "\(error)", "migration.session": "\(hex(sessionID))",
                "migration.handoff_timeout_ms": "\(options.handoffTimeoutMs)"])
            switch resolveHandoff(session: sessionID, token: sessionToken, digest: digest, after: error, log: log) {
            case .resumedThere(let how):
                let end = MonotonicClock.now()
                parts.commitResumeMs = (Double(end &- commitStart) / 1e9).milliseconds
                report.downtimeMs = (Double(end &- blackoutStart) / 1e9).milliseconds
                report.guestLocation = .destination
                report.outcome = "migrated"
                report.handoff = how
            case .discardedThere(let why):
                guest.resume()
                report.guestLocation = .source
                throw MigrationError(.transport, "the COMMIT did not reach the destination, which discarded the guest (\(why)); the guest resumed on the source", guest: .source)
            case .unresolved(let why):
                report.outcome = "handed over; the destination did not confirm its resume: \(why). The guest is paused here and runs nowhere until that is resolved: ask the destination with `ferry status --connect \(options.destination) --session \(hex(sessionID)) --token \(sessionToken.hex)`"
                report.error = why
            }
        }
        report.vcpuSteps = guest.stopForHandover()
        report.downtimeParts = parts
        report.downtimeClock = "source CLOCK_MONOTONIC, from pausing the vCPUs to reading RESUMED (includes the last one-way trip)"
        report.totalMs = MonotonicClock.seconds(since: start).milliseconds
        report.cpuMs = (Double(ProcessCPU.now() &- cpuStart) / 1e9).milliseconds
        log.info("migration complete", metadata: [
            "migration.downtime_ms": "\(report.downtimeMs)", "migration.total_ms": "\(report.totalMs)",
            "migration.rounds": "\(report.rounds)"])
        if report.guestLocation != .destination {
            throw MigrationError(.transport, report.outcome, guest: .handedOverUnconfirmed)
        }
        return report
    }

    /// What the blackout was doing when it failed, from the parts it had finished.
    private func blackoutPhase(_ parts: DowntimeParts) -> String {
        if parts.finalHarvestMs == 0 { return "harvesting the last dirty pages" }
        if parts.finalSendMs == 0 { return "sending the last pages, the CPU state and COMPLETE" }
        return "waiting for VERIFIED"
    }

    /// Waits for the destination's `ROUND_ACK` of `round`. The destination answers once it has
    /// read the round's last bytes on every stream; while its kernel still acknowledges bytes (a
    /// slow link draining this side's send queues) the wait goes on, up to `replyTimeoutMs`. When
    /// neither an answer nor any acknowledgement comes for `stallTimeoutMs`, the destination has
    /// stopped reading (stopped, wedged, or a silent partition that began after the round's last
    /// write was queued): that is a lost connection, which pre-copy resumes.
    func awaitRoundAck(round: Int, on connection: FramedConnection, streams: SourceStreams) throws -> RoundAck {
        let slice = max(1, min(250, options.stallTimeoutMs, options.replyTimeoutMs))
        try connection.stream.setReceiveTimeout(ms: slice)
        defer { try? connection.stream.setReceiveTimeout(ms: options.replyTimeoutMs) }
        let start = MonotonicClock.now()
        var acknowledged = streams.acknowledgedBytes
        var advancedAt = start
        while true {
            let failure: TransportError
            do {
                return try connection.receive(RoundAck.self)
            } catch {
                failure = error
            }
            // A timeout between frames leaves the connection usable; anything else ends the wait.
            if failure.code != .timeout || connection.hasFailedReceiving { throw failure }
            let now = MonotonicClock.now()
            let latest = streams.acknowledgedBytes
            if latest != acknowledged {
                acknowledged = latest
                advancedAt = now
            }
            let waitedMs = Int((now &- start) / 1_000_000)
            let stillMs = Int((now &- advancedAt) / 1_000_000)
            if waitedMs >= options.replyTimeoutMs {
                throw TransportError(.timeout, "no ROUND_ACK for round \(round) within \(waitedMs) ms (the reply timeout)")
            }
            if stillMs >= options.stallTimeoutMs {
                throw TransportError(.timeout, "no ROUND_ACK for round \(round) within \(waitedMs) ms, and the destination acknowledged nothing for the last \(stillMs) ms (--stall-timeout \(options.stallTimeoutMs) ms; \(streams.unacknowledgedBytes) bytes still queued): it stopped reading, or the network between the hosts is down")
            }
        }
    }

    /// After a connection failed while this side was sending: a destination that gives up sends
    /// `ABORT` with its reason on the control connection and closes, and a source busy writing
    /// sees only the close (EPIPE or a reset). The kernel still holds what arrived before the
    /// close; this reads it briefly and returns the destination's `ABORT`, if that is there.
    func abortWaiting(on connection: FramedConnection, during phase: String) -> MigrationError? {
        guard !connection.hasFailedReceiving else { return nil }
        try? connection.stream.setReceiveTimeout(ms: 200)
        for _ in 0..<8 {
            do {
                _ = try connection.receive()
            } catch {
                return error.code == .peerAborted ? MigrationError.wrap(error, during: phase, guest: .source) : nil
            }
        }
        return nil
    }

    /// A control connection the destination answered with `ACCEPT`.
    struct OpenedSession {
        var connection: FramedConnection
        var accept: Accept
        /// From sending `HELLO` to reading `ACCEPT`.
        var rtt: Double
        var attempts: Int
    }

    /// Connects, authenticates and sends `HELLO` until the destination answers. A destination
    /// that accepts the TCP connection and then closes it, or says nothing, before its answer
    /// (it limits connections that have not shown who they are, Protocol.md 9.5, and a flood may
    /// have pushed this one out) is tried again with the resume backoff, up to
    /// `reconnectAttempts` times: nothing was agreed yet, so nothing is lost. A refusal, a
    /// protocol error or a connection that cannot be made at all ends it at once.
    func openSession(pageCount: Int, log: Logger) throws -> OpenedSession {
        var attempt = 0
        while true {
            attempt += 1
            if attempt > 1 { MonotonicClock.sleep(seconds: Self.backoff(attempt: attempt, options: options)) }
            var opened: FramedConnection?
            do {
                let stream = try TCPStream.connect(options.destination, timeoutMs: options.connectTimeoutMs)
                try stream.setReceiveTimeout(ms: options.replyTimeoutMs)
                try stream.setSendTimeout(ms: options.stallTimeoutMs)
                let connection = FramedConnection(stream)
                opened = connection
                try connection.authenticate(asClient: options.security)
                let helloSent = MonotonicClock.now()
                try connection.send(Hello(
                    versionMin: ProtocolLimits.version, versionMax: ProtocolLimits.version,
                    pageSize: UInt32(pageSize), pageCount: UInt64(pageCount), codecs: .all,
                    cpuStateFormat: guest.cpuStateFormat, guestKind: guest.guestKind, vcpuCount: UInt32(guest.vcpus),
                    streamCount: UInt16(options.streams), sourceName: options.name, guestName: options.guestName))
                let reply = try connection.receive()
                let rtt = MonotonicClock.seconds(since: helloSent)
                switch reply.type {
                case .accept:
                    return OpenedSession(connection: connection, accept: try Accept(payload: reply.payload), rtt: rtt, attempts: attempt)
                case .refuse:
                    let refuse = try Refuse(payload: reply.payload)
                    throw MigrationError(.refused, "destination refused the guest (\(refuse.reason)): \(refuse.message)", guest: .source)
                default:
                    throw MigrationError(.protocolViolation, "expected ACCEPT or REFUSE, got \(reply.type)", guest: .source)
                }
            } catch let error as TransportError where (error.code == .peerClosed || error.code == .timeout) && opened != nil {
                opened?.close()
                guard attempt < max(1, options.reconnectAttempts) else {
                    throw TransportError(error.code, "\(error.message) (\(attempt) attempt(s): the destination accepted each connection and closed it, or said nothing, before answering HELLO)")
                }
                log.warning("the destination closed the connection before answering HELLO; trying again", metadata: [
                    "migration.attempt": "\(attempt)", "migration.error": "\(error.message)"])
            } catch {
                opened?.close()
                throw error
            }
        }
    }

    /// Longest wait for `RESUMED` after `COMMIT` before asking the destination with `STATUS_QUERY`.
    static let resumedWaitMs = 2_000

    enum HandoffResolution {
        case resumedThere(String)
        case discardedThere(String)
        case unresolved(String)
    }

    /// After `COMMIT` without `RESUMED`: asks the destination, on new connections with backoff
    /// for up to `handoffTimeoutMs`, where the guest is (`STATUS_QUERY` with the resolve flag).
    /// `resumed` settles it; `awaiting-commit` means the COMMIT was lost, so it is sent again on
    /// that connection; `discarded` means the guest never ran there and may resume here. No
    /// answer, or `unknown` (a destination that restarted cannot say whether it ran the guest),
    /// leaves it unresolved: the guest must not run here, since it may run there.
    func resolveHandoff(session: UInt64, token: SessionToken, digest: UInt64, after firstError: any Error, log: Logger) -> HandoffResolution {
        let deadline = MonotonicClock.now() &+ UInt64(max(options.handoffTimeoutMs, 0)) * 1_000_000
        var delay = 0.1
        var attempt = 0
        var last = "\(firstError)"
        while true {
            attempt += 1
            do {
                let left = Int((Double(deadline &- min(deadline, MonotonicClock.now())) / 1e6))
                let (asking, answers) = try StatusClient.ask(options.destination, StatusQuery(sessionID: session, sessionToken: token, resolve: true),
                                                              security: options.security, connectTimeoutMs: max(100, min(2_000, left)))
                defer { asking.close() }
                let status = answers[0]
                log.info("destination answered where the guest is", metadata: [
                    "migration.attempt": "\(attempt)", "migration.state": "\(status.state)", "migration.message": "\(status.message)"])
                switch status.state {
                case .resumed where status.digest == digest:
                    return .resumedThere("RESUMED was lost; the destination's STATUS (attempt \(attempt)) says the guest runs there")
                case .resumed:
                    last = "the destination says it resumed session \(hex(session)) with digest \(hex(status.digest)), not \(hex(digest))"
                case .awaitingCommit:
                    try asking.send(Commit())
                    _ = try asking.receive(Resumed.self)
                    try? asking.send(Done())
                    return .resumedThere("the first COMMIT was lost; sent again on a new connection (attempt \(attempt)) and confirmed")
                case .discarded:
                    return .discardedThere(status.message)
                case .unknown, .receiving:
                    last = "the destination answered \(status.state): \(status.message)"
                }
            } catch {
                last = "\(error)"
            }
            if MonotonicClock.now() &+ UInt64(delay * 1e9) >= deadline {
                return .unresolved("no answer settled it within \(options.handoffTimeoutMs / 1000) s after COMMIT (\(attempt) attempts; last: \(last))")
            }
            MonotonicClock.sleep(seconds: delay)
            delay = min(delay * 2, 2)
        }
    }

    /// Best effort, one short attempt: tells a destination that may hold a verified image for
    /// `session`, or wait for this source to resume it, that this source kept the guest, so that
    /// it discards the image now. Called after this source resumed its own guest without writing
    /// COMMIT.
    ///
    /// Defence in depth: should the destination answer that it resumed this session (it must
    /// not, without this source's COMMIT; a destination that let someone else commit would),
    /// the guest now runs in two places. This stops the source's copy, so that it runs only on
    /// the destination, and returns the error that says so loudly; nil otherwise.
    func releaseDestination(session: UInt64, token: SessionToken, because reason: String, log: Logger) -> MigrationError? {
        do {
            let (asking, answers) = try StatusClient.ask(options.destination, StatusQuery(sessionID: session, sessionToken: token, resolve: true),
                                                          security: options.security, connectTimeoutMs: 1_000, replyTimeoutMs: 2_000)
            defer { asking.close() }
            if answers[0].state == .awaitingCommit || answers[0].state == .receiving {
                try asking.send(Abort(reason: .cancelled, message: String("the source did not commit and resumed the guest itself: \(reason)".prefix(1000))))
                log.info("told the destination to discard its verified image", metadata: ["migration.session": "\(hex(session))"])
            } else if answers[0].state == .resumed {
                _ = guest.stopForHandover()
                let failure = MigrationError(.protocolViolation,
                    "split brain: the destination resumed the guest although this source did not commit; the source's copy was stopped (session \(hex(session)) at \(options.destination); this source had resumed it after: \(reason))",
                    guest: .destination)
                log.error("split brain: the destination resumed a guest this source did not commit; stopped the source's copy", metadata: [
                    "migration.session": "\(hex(session))", "migration.error": "\(failure.message)"])
                return failure
            }
        } catch {
            log.info("could not tell the destination to discard; it does so after its handoff timeout", metadata: ["migration.error": "\(error)"])
        }
        return nil
    }

    private func abort(_ connection: FramedConnection, _ failure: MigrationError) {
        if failure.code == .peerAborted || failure.code == .refused { return }
        try? connection.send(Abort(reason: failure.abortReason, message: String(failure.message.prefix(1000))))
    }
}

func hex(_ value: UInt64) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: 16 - digits.count) + digits
}

extension SourceAgent {
    /// Faults in the guest image `region` (the shared mapping of `path`) before the guest runs,
    /// as a VMM's guest RAM is resident, except the large holes round 0 will send unread: the
    /// same search in the same chunks (`RoundZeroProtection`), so what is skipped here is what
    /// round 0 skips, unless the guest writes there first.
    /// Returns the image's holes as left: give them to the migration (`SourceOptions.imageHoles`)
    /// so that round 0 looks for holes only where this left them.
    @discardableResult
    public static func faultIn(_ region: borrowing MappedRegion, path: String, pageSize: Int) throws -> ImageHoles {
        let holes = try ImageHoles(path: path, pageSize: pageSize)
        try holes.populate(region, skippingLargeHolesIn: RoundZeroProtection.pagesPerChunk)
        return holes
    }
}
