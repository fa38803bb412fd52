import FerryCodec
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
    public var connectTimeout: Duration
    /// Longest wait for any reply from the destination.
    public var replyTimeout: Duration
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
    /// attempt, up to `reconnectBackoffMax`.
    public var reconnectBackoff: Duration
    public var reconnectBackoffMax: Duration
    /// How long the source keeps asking the destination where the guest is when the
    /// destination's `RESUMED` does not arrive after `COMMIT` (Protocol.md section 6). Shorter
    /// than the destination's wait for a returning source (`DestinationOptions.handoffTimeout`).
    public var handoffTimeout: Duration = .seconds(60)
    /// A write to the destination that makes no progress for this long fails (a silent network
    /// partition: no FIN, no RST), which during pre-copy starts a resume.
    public var stallTimeout: Duration = .seconds(10)
    /// The hard limit on the blackout, from pausing the vCPUs to reading `VERIFIED`, page
    /// streams included: when it passes, the source closes its connections, resumes its guest
    /// (no `COMMIT` is written) and tells the destination to discard. nil: 20 × the downtime
    /// target, at least 1 s (`BlackoutDeadline.defaultLimitMs`).
    public var blackoutTimeout: Duration?
    /// `blackoutTimeout`, or its default for the downtime target.
    public var effectiveBlackoutTimeout: Duration {
        blackoutTimeout
            ?? .milliseconds(BlackoutDeadline.defaultLimitMs(downtimeTargetSeconds: settings.downtimeTargetSeconds))
    }
    // The durations as the engine counts them.
    var connectTimeoutMs: Int { connectTimeout.inMilliseconds }
    var replyTimeoutMs: Int { replyTimeout.inMilliseconds }
    var handoffTimeoutMs: Int { handoffTimeout.inMilliseconds }
    var stallTimeoutMs: Int { stallTimeout.inMilliseconds }
    var effectiveBlackoutTimeoutMs: Int { effectiveBlackoutTimeout.inMilliseconds }
    var reconnectBackoffSeconds: Double { reconnectBackoff.inSeconds }
    var reconnectBackoffMaxSeconds: Double { reconnectBackoffMax.inSeconds }
    /// Key, and whether to encrypt, for every connection (Protocol.md section 9); `.none`: plain.
    public var security: ConnectionSecurity = .none
    /// An operator's cancel (a signal): checked at phase boundaries and between page batches,
    /// honoured until `COMMIT` is written (see `MigrationCancellation`). nil: not cancellable.
    public var cancellation: MigrationCancellation?
    /// A reading of the guest's progress taken a while before `migrate()` (e.g. when the guest
    /// started): the report's rate before the migration is measured from it.
    public var progressBefore: GuestProgressSample?

    public init(
        destination: Endpoint, settings: ConvergenceSettings = ConvergenceSettings(),
        compression: CompressionChoice = .auto, tracker: TrackerChoice = .auto,
        batchBytes: Int = 1 << 20, guestName: String = "", connectTimeout: Duration = .seconds(10),
        replyTimeout: Duration = .seconds(60),
        guestMAC: MACAddress = .none, guestIPv4: UInt32 = 0, name: String = "ferry-source",
        maxBandwidth: Double? = nil, streams: Int = SourceOptions.defaultStreams,
        protectDuringRoundZero: Bool = true, skipImageHoles: Bool = true,
        resume: Bool = true, reconnectAttempts: Int = 6, reconnectBackoff: Duration = .milliseconds(250),
        reconnectBackoffMax: Duration = .seconds(4)
    ) {
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
        self.connectTimeout = connectTimeout
        self.replyTimeout = replyTimeout
        self.guestMAC = guestMAC
        self.guestIPv4 = guestIPv4
        self.name = name
    }

    /// One stream per core, at most 4: on a 2-core host two streams keep both cores busy
    /// (one encodes while the other's socket write blocks).
    public static var defaultStreams: Int { min(max(ProcessInfo.processInfo.activeProcessorCount, 1), 4) }
}

/// Live-migrates a running guest to a destination agent: handshake, pre-copy rounds driven by
/// `ConvergencePolicy`, blackout, verified handoff (Protocol.md section 5). Each `migrate()` runs
/// one `SourceSession`, the phase state machine.
///
/// The caller owns the guest and its memory. On failure before COMMIT the guest is left running
/// (resumed if it was paused, throttle removed) and `migrate()` throws a `MigrationError` whose
/// `guest` is `.source`. After a successful `migrate()` the guest's vCPUs are stopped: it runs on
/// the destination now.
public final class SourceAgent {
    let memory: GuestMemory
    var size: Int { memory.size }
    var pageSize: Int { memory.pageSize }
    let guest: any MigratableGuest
    let options: SourceOptions
    let logger: Logger
    let progress: ProgressHandler?
    /// The file the guest's memory maps, one region of it, if it is such a file (nil: the guest's
    /// memory is not an image file, or not one mapping): round 0 skips its holes, and a file cut
    /// under the guest aborts the migration.
    let imagePath: String?
    /// Absorbs SIGBUS if the image file is truncated under the guest (see `imageShrank`); held
    /// from the first `migrate()` for as long as the agent lives, i.e. while its caller stops the guest.
    var busGuard: BusErrorGuard?
    /// The report of the last `migrate()`: what it returned, or, when it threw, as far as the
    /// migration got (rounds, bytes, where the guest is) with the error recorded in it. Nil before.
    public private(set) var lastReport: MigrationReport?

    /// Migrates `guest`, whose memory (`guest.memory`) is, when `imagePath` is given, the shared
    /// mapping of that file.
    public init(
        guest: any MigratableGuest, imagePath: String? = nil, options: SourceOptions, logger: Logger,
        progress: ProgressHandler? = nil
    ) {
        self.memory = guest.memory
        self.guest = guest
        self.options = options
        self.logger = logger
        self.progress = progress
        self.imagePath = guest.memory.regions.count == 1 ? imagePath : nil
    }

    public func migrate() throws -> MigrationReport {
        let session = SourceSession(agent: self)
        do {
            let report = try session.run()
            lastReport = report
            return report
        } catch {
            let failure = (error as? MigrationError) ?? MigrationError.wrap(error, during: "migration", guest: .source)
            lastReport = session.reportAfterFailure(failure)
            throw error
        }
    }

    /// What the blackout was doing when it failed, from the parts it had finished.
    func blackoutPhase(_ parts: DowntimeParts) -> String {
        if parts.finalHarvestMs == 0 { return "harvesting the last dirty pages" }
        if parts.finalSendMs == 0 { return "sending the last pages, the device state and COMPLETE" }
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
            try options.cancellation.check(during: "pre-copy round \(round)", guest: .source)
            let now = MonotonicClock.now()
            let latest = streams.acknowledgedBytes
            if latest != acknowledged {
                acknowledged = latest
                advancedAt = now
            }
            let waitedMs = Int((now &- start) / 1_000_000)
            let stillMs = Int((now &- advancedAt) / 1_000_000)
            if waitedMs >= options.replyTimeoutMs {
                throw TransportError(
                    .timeout, "no ROUND_ACK for round \(round) within \(waitedMs) ms (the reply timeout)")
            }
            if stillMs >= options.stallTimeoutMs {
                throw TransportError(
                    .timeout,
                    "no ROUND_ACK for round \(round) within \(waitedMs) ms, and the destination acknowledged nothing for the last \(stillMs) ms (--stall-timeout \(options.stallTimeoutMs) ms; \(streams.unacknowledgedBytes) bytes still queued): it stopped reading, or the network between the hosts is down"
                )
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
            try options.cancellation.check(during: "the handshake (attempt \(attempt))", guest: .source)
            var opened: FramedConnection?
            do {
                let stream = try TCPStream.connect(options.destination, timeoutMs: options.connectTimeoutMs)
                try stream.setReceiveTimeout(ms: options.replyTimeoutMs)
                try stream.setSendTimeout(ms: options.stallTimeoutMs)
                let connection = FramedConnection(stream)
                opened = connection
                try connection.authenticate(asClient: options.security)
                let helloSent = MonotonicClock.now()
                try connection.send(
                    Hello(
                        versionMin: ProtocolLimits.version, versionMax: ProtocolLimits.version,
                        pageSize: UInt32(pageSize), pageCount: UInt64(pageCount),
                        codecs: options.settings.postcopy == nil ? .all : CodecSet.all.union(.postcopy),
                        cpuStateFormat: guest.cpuStateFormat, guestKind: guest.guestKind,
                        vcpuCount: UInt32(guest.vcpus),
                        streamCount: UInt16(options.streams), sourceName: options.name, guestName: options.guestName))
                let reply = try connection.receive()
                let rtt = MonotonicClock.seconds(since: helloSent)
                switch reply.type {
                case .accept:
                    return OpenedSession(
                        connection: connection, accept: try Accept(payload: reply.payload), rtt: rtt, attempts: attempt)
                case .refuse:
                    let refuse = try Refuse(payload: reply.payload)
                    throw MigrationError(
                        .refused, "destination refused the guest (\(refuse.reason)): \(refuse.message)", guest: .source)
                default:
                    throw MigrationError(
                        .protocolViolation, "expected ACCEPT or REFUSE, got \(reply.type)", guest: .source)
                }
            } catch let error as TransportError
                where (error.code == .peerClosed || error.code == .timeout) && opened != nil
            {
                opened?.close()
                guard attempt < max(1, options.reconnectAttempts) else {
                    throw TransportError(
                        error.code,
                        "\(error.message) (\(attempt) attempt(s): the destination accepted each connection and closed it, or said nothing, before answering HELLO)"
                    )
                }
                log.warning(
                    "the destination closed the connection before answering HELLO; trying again",
                    metadata: [
                        "migration.attempt": "\(attempt)", "migration.error": "\(error.message)",
                    ])
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
        /// Post-copy: COMMIT was sent again on this connection and RESUMED read on it; the push
        /// goes on there.
        case committedOn(FramedConnection, String)
        case discardedThere(String)
        case unresolved(String)
    }

    /// After `COMMIT` without `RESUMED`: asks the destination, on new connections with backoff
    /// for up to `handoffTimeoutMs`, where the guest is (`STATUS_QUERY` with the resolve flag).
    /// `resumed` settles it; `awaiting-commit` means the COMMIT was lost, so it is sent again on
    /// that connection; `discarded` means the guest never ran there and may resume here. No
    /// answer, or `unknown` (a destination that restarted cannot say whether it ran the guest),
    /// leaves it unresolved: the guest must not run here, since it may run there.
    /// With `keepConnection` (post-copy) the connection that carried the second COMMIT is
    /// kept (`committedOn`) and no DONE is sent: the push goes on there.
    func resolveHandoff(
        session: UInt64, token: SessionToken, digest: UInt64, after firstError: any Error, log: Logger,
        keepConnection: Bool = false
    ) -> HandoffResolution {
        let deadline = MonotonicClock.now() &+ UInt64(max(options.handoffTimeoutMs, 0)) * 1_000_000
        var delay = 0.1
        var attempt = 0
        var last = "\(firstError)"
        while true {
            attempt += 1
            do {
                let left = Int((Double(deadline &- min(deadline, MonotonicClock.now())) / 1e6))
                let (asking, answers) = try StatusClient.ask(
                    options.destination, StatusQuery(sessionID: session, sessionToken: token, resolve: true),
                    security: options.security, connectTimeout: .milliseconds(max(100, min(2_000, left))))
                var kept = false
                defer { if !kept { asking.close() } }
                let status = answers[0]
                log.info(
                    "destination answered where the guest is",
                    metadata: [
                        "migration.attempt": "\(attempt)", "migration.state": "\(status.state)",
                        "migration.message": "\(status.message)",
                    ])
                switch status.state {
                case .resumed where status.digest == digest:
                    return .resumedThere(
                        "RESUMED was lost; the destination's STATUS (attempt \(attempt)) says the guest runs there")
                case .resumed:
                    last =
                        "the destination says it resumed session \(hex(session)) with digest \(hex(status.digest)), not \(hex(digest))"
                case .awaitingCommit:
                    try asking.send(Commit())
                    _ = try asking.receive(Resumed.self)
                    if keepConnection {
                        kept = true
                        return .committedOn(
                            asking,
                            "the first COMMIT was lost; sent again on a new connection (attempt \(attempt)) and confirmed"
                        )
                    }
                    try? asking.send(Done())
                    return .resumedThere(
                        "the first COMMIT was lost; sent again on a new connection (attempt \(attempt)) and confirmed")
                case .discarded:
                    return .discardedThere(status.message)
                case .unknown, .receiving:
                    last = "the destination answered \(status.state): \(status.message)"
                }
            } catch {
                last = "\(error)"
            }
            if MonotonicClock.now() &+ UInt64(delay * 1e9) >= deadline {
                return .unresolved(
                    "no answer settled it within \(options.handoffTimeoutMs / 1000) s after COMMIT (\(attempt) attempts; last: \(last))"
                )
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
    func releaseDestination(session: UInt64, token: SessionToken, because reason: String, log: Logger)
        -> MigrationError?
    {
        do {
            let (asking, answers) = try StatusClient.ask(
                options.destination, StatusQuery(sessionID: session, sessionToken: token, resolve: true),
                security: options.security, connectTimeout: .milliseconds(1_000), replyTimeout: .milliseconds(2_000))
            defer { asking.close() }
            if answers[0].state == .awaitingCommit || answers[0].state == .receiving {
                try asking.send(
                    Abort(
                        reason: .cancelled,
                        message: String(
                            "the source did not commit and resumed the guest itself: \(reason)".prefix(1000))))
                log.info(
                    "told the destination to discard its verified image",
                    metadata: ["migration.session": "\(hex(session))"])
            } else if answers[0].state == .resumed {
                _ = guest.stopForHandover()
                let failure = MigrationError(
                    .protocolViolation,
                    "split brain: the destination resumed the guest although this source did not commit; the source's copy was stopped (session \(hex(session)) at \(options.destination); this source had resumed it after: \(reason))",
                    guest: .destination)
                log.error(
                    "split brain: the destination resumed a guest this source did not commit; stopped the source's copy",
                    metadata: [
                        "migration.session": "\(hex(session))", "migration.error": "\(failure.message)",
                    ])
                return failure
            }
        } catch {
            log.info(
                "could not tell the destination to discard; it does so after its handoff timeout",
                metadata: ["migration.error": "\(error)"])
        }
        return nil
    }

    func abort(_ connection: FramedConnection, _ failure: MigrationError) {
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
