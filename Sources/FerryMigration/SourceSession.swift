import FerryCodec
import FerryProtocol
import FerrySystem
import FerryTransport
import Logging

/// One migration of a source's guest, as a state machine over `Phase` (Protocol.md section 6's
/// source states, with the handshake before them): one method per phase — `handshake()` and
/// `prepare()` here, `precopy()` (SourcePrecopy.swift), `blackout()` and `handoff()`
/// (SourceBlackout.swift) — and the report built as they go.
final class SourceSession {
    enum Phase: String {
        case handshake
        case precopy
        case blackout
        /// `COMMIT` written, `RESUMED` not read.
        case committed
        case handedOver = "handed-over"
        /// Post-copy: the destination runs the guest; the source sends the pages it lacks.
        case postcopy
        case aborted
    }

    let agent: SourceAgent
    var guest: any MigratableGuest { agent.guest }
    var options: SourceOptions { agent.options }
    var progress: ProgressHandler? { agent.progress }
    let log: Logger
    let pageSize: Int
    let pageCount: Int
    let start = MonotonicClock.now()
    let cpuStart = ProcessCPU.now()
    private(set) var phase = Phase.handshake
    var report: MigrationReport

    // The handshake's results.
    var connection: FramedConnection!
    /// Round trip to the destination: the smallest of the handshake and every ROUND_END →
    /// ROUND_ACK wait (less the destination's digest time). The handshake alone can be far off
    /// (a shaped link's queue, the destination's admission checks).
    var rtt = 0.0
    var sessionID: UInt64 = 0
    /// `ACCEPT.session_token`: presented in JOIN, RESUME and the handoff's STATUS_QUERYs.
    var sessionToken: SessionToken!
    /// The codecs the destination decodes (its ACCEPT): the streams use no other.
    var peerCodecs: CodecSet = []
    var configPayload: [UInt8] = []

    // Set up before pre-copy.
    var tracker: (any DirtyTracker)?
    var holes: ImageHoles?
    /// What a blackout costs besides the pages: one pause of the vCPUs, measured.
    var pauseCost = 0.0
    /// And the device state: its encoded size and the time to take it (`deviceStateProbe`).
    var stateProbe = (bytes: 0, seconds: 0.0)
    var streamer: SourceStreams!
    /// The live figures of the round being sent (progress and send rate).
    let meter: RoundMeter
    let stallWatch: StallWatch
    var precopyState: PrecopyState
    /// When the vCPUs were paused for the blackout.
    var blackoutStart: UInt64 = 0
    /// Pages the final round sent (held against the forecast's).
    var finalRoundPages = 0
    /// The guest's progress when the migration started and when its vCPUs paused for good.
    lazy var progressAtStart = GuestProgressSample.now(guest.progressSteps)
    var progressAtPause: GuestProgressSample?
    var parts = DowntimeParts()

    init(agent: SourceAgent) {
        self.agent = agent
        pageSize = agent.pageSize
        pageCount = agent.size / agent.pageSize
        var log = agent.logger
        log[metadataKey: "migration.role"] = "source"
        log[metadataKey: "migration.destination"] = "\(agent.options.destination)"
        self.log = log
        report = MigrationReport(
            role: "source", image: agent.imagePath ?? "", imageBytes: UInt64(agent.size), pageSize: agent.pageSize,
            vcpus: agent.guest.vcpus, workload: agent.guest.configuration.parameters)
        report.compression = agent.options.compression.rawValue
        report.downtimeTargetMs = agent.options.settings.downtimeTargetSeconds * 1000
        stallWatch = StallWatch(limitMs: agent.options.stallTimeoutMs)
        precopyState = PrecopyState(pageCount: pageCount, settings: agent.options.settings)
        meter = RoundMeter(
            handler: agent.progress, migrationStart: start, pageCount: pageCount, pageSize: agent.pageSize)
    }

    func run() throws -> MigrationReport {
        defer { cleanUp() }
        _ = progressAtStart
        agent.guardImage(log: log)
        try options.cancellation.check(during: "the handshake", guest: .source)
        try handshake()
        try prepare()
        enter(.precopy)
        try precopy()
        try cancelBeforeBlackout()
        enter(.blackout)
        if precopyState.switchToPostcopy {
            let switched = try postcopySwitch()
            enter(.committed)
            try postcopyHandoff(switched)
            enter(.postcopy)
            return try postcopyPush(switched)
        }
        let digest = try blackout()
        enter(.committed)
        return try handoff(digest: digest)
    }

    /// A cancel that came as pre-copy decided to switch over: the destination is told, the
    /// vCPUs are never paused.
    private func cancelBeforeBlackout() throws {
        guard let failure = options.cancellation?.error(during: "the switch-over", guest: .source) else { return }
        agent.abort(connection, failure)
        report.rounds = precopyState.round
        throw failure
    }

    /// The report as far as the migration got, ended by `error`.
    func reportAfterFailure(_ error: MigrationError) -> MigrationReport {
        var partial = report
        if let streamer {
            partial.wireBytes = streamer.wireBytes
            partial.pages = streamer.counts
            partial.holePages = streamer.holePages
        }
        partial.totalMs = MonotonicClock.seconds(since: start).milliseconds
        partial.recordFailure(error)
        return partial
    }

    func enter(_ next: Phase) {
        log.debug("phase", metadata: ["migration.from": "\(phase.rawValue)", "migration.to": "\(next.rawValue)"])
        phase = next
    }

    private func cleanUp() {
        stallWatch.stop()
        streamer?.closeExtraStreams()
        if tracker != nil { guest.throttlePercent = 0 }
        tracker?.stop()
        connection?.close()
        if phase != .handedOver && phase != .committed && phase != .postcopy { phase = .aborted }
    }

    /// Connects, is accepted, sends GUEST_CONFIG.
    private func handshake() throws {
        guard (1...ProtocolLimits.maxStreams).contains(options.streams) else {
            throw MigrationError(
                .configuration, "--streams \(options.streams): must be between 1 and \(ProtocolLimits.maxStreams)",
                guest: .source)
        }
        do {
            let opened = try agent.openSession(pageCount: pageCount, log: log)
            connection = opened.connection
            rtt = opened.rtt
            sessionID = opened.accept.sessionID
            sessionToken = opened.accept.sessionToken
            report.authenticated = connection.security.authenticated
            report.encryption = connection.security.cipher.description
            report.session = hex(sessionID)
            report.sessionToken = sessionToken.hex
            if opened.attempts > 1 { report.handshakeAttempts = opened.attempts }
            log.info(
                "destination accepted the guest",
                metadata: [
                    "migration.version": "\(opened.accept.version)",
                    "migration.peer": "\(opened.accept.destinationName)",
                    "migration.attempts": "\(opened.attempts)",
                ])
            let description = guest.configuration
            let config = GuestConfig(
                seed: description.seed, guestMAC: options.guestMAC, guestIPv4: options.guestIPv4,
                workload: description.parameters, attachmentLength: description.attachment?.length ?? 0,
                attachmentHash: description.attachment?.hash ?? 0, regions: agent.memory.layout)
            configPayload = config.encodedPayload()
            peerCodecs = opened.accept.codecs
            precopyState.policy.postcopyOffered = peerCodecs.contains(.postcopy)
            try connection.send(config)
            if let attachment = description.attachment, attachment.length > 0 {
                try AttachmentTransfer.send(attachment, over: connection)
            }
        } catch {
            throw MigrationError.wrap(error, during: "handshake", guest: .source)
        }
    }

    /// Starts tracking before round 0 reads a page. Whole-region start: every write from here on
    /// is caught. Deferred start: a page's writes are caught from its protection on, which round
    /// 0's streams do chunk by chunk ahead of reading (see RoundZeroProtection), so a write is
    /// either read by round 0 or caught; at the end of round 0 all is protected. Then measures a
    /// pause and opens the page streams.
    private func prepare() throws {
        do {
            let made = try guest.makeDirtyTracker(options.tracker)
            tracker = made.tracker
            report.tracker = made.tracker.kind.rawValue
            report.trackerReason = made.why
            log.info(
                "dirty tracker ready",
                metadata: [
                    "migration.tracker": "\(made.tracker.kind)", "migration.tracker_why": "\(made.why)",
                    "migration.tracker_protects":
                        "\(options.protectDuringRoundZero ? "chunk by chunk in round 0" : "whole region at setup")",
                ])
            if options.protectDuringRoundZero {
                try made.tracker.startDeferred()
            } else {
                try made.tracker.start()
            }
        } catch {
            let failure = MigrationError.wrap(error, during: "tracker setup", guest: .source)
            agent.abort(connection, failure)
            throw failure
        }
        holes = findHoles()
        // Measure what a blackout will cost besides the pages: one pause of the vCPUs and one
        // harvest of the whole region (which also absorbs what was written before round 0).
        pauseCost = Double(guest.pause()) / 1e9
        let probeStart = MonotonicClock.now()
        if let sections = try? guest.deviceStateProbe() {
            let bytes = DeviceState(sections: sections).encodedPayload().count
            stateProbe = (bytes, MonotonicClock.seconds(since: probeStart))
        }
        guest.resume()
        do {
            streamer = try SourceStreams(
                control: connection, count: options.streams, endpoint: options.destination,
                sessionID: sessionID, token: sessionToken, options: options, memory: agent.memory,
                pageSize: pageSize, pageCount: pageCount, peerCodecs: peerCodecs, meter: meter)
        } catch {
            let failure = MigrationError.wrap(error, during: "opening page streams", guest: .source)
            agent.abort(connection, failure)
            throw failure
        }
        // Pre-copy's stall detection (the blackout has its deadline instead).
        stallWatch.watch(streamer.connections)
        report.setupMs = MonotonicClock.seconds(since: start).milliseconds
        log.info(
            "pre-copy starts", metadata: ["migration.pages": "\(pageCount)", "migration.setup_ms": "\(report.setupMs)"])
    }

    /// Round 0 sends the image file's holes as zero markers without reading them; only when the
    /// memory is that file's mapping (same size) and protection happens in round 0.
    private func findHoles() -> ImageHoles? {
        guard options.protectDuringRoundZero && options.skipImageHoles, let imagePath = agent.imagePath,
            (try? ImageFile.size(path: imagePath)) == agent.size
        else { return nil }
        return options.imageHoles.flatMap { $0.path == imagePath ? $0 : nil }
            ?? (try? ImageHoles(path: imagePath, pageSize: pageSize))
    }
}

extension SourceSession {
    /// The vCPUs are about to pause for good (the blackout, or the post-copy switch).
    func notePausing() {
        progressAtPause = GuestProgressSample.now(guest.progressSteps)
    }

    /// The destination resumed the guest at `end`: the source's part of the progress report.
    func noteResumedThere(at end: UInt64) {
        report.progress = GuestProgressReport.source(
            before: options.progressBefore, start: progressAtStart, paused: progressAtPause, resumedAt: end)
    }
}
