import FerryCodec
import FerryProtocol
import FerrySystem
import FerryTransport
import Foundation
import Glibc
import Logging
import Synchronization

/// How the destination receives.
public struct DestinationOptions: Sendable {
    public var listen: Endpoint
    public var imagePath: String
    /// Overwrite an existing image file.
    public var force: Bool
    /// How long the guest runs on after resume before the agent stops it and flushes the image
    /// (zero: it is resumed and held as it arrived).
    public var runFor: Duration
    /// Interface to announce the guest on (gratuitous ARP); nil: no announce.
    public var announceInterface: String?
    /// Override the guest MAC/IP that came with the guest.
    public var guestMAC: MACAddress?
    public var guestIPv4: IPv4Address?
    /// How long `run()` waits for a source; nil: for ever.
    public var acceptTimeout: Duration?
    /// Longest silence from the source before the migration is abandoned.
    public var receiveTimeout: Duration
    public var name: String
    /// Create and fault in an image of this many bytes before listening, as a host reserves memory
    /// for a guest it expects (QEMU's `prealloc=on`). Fresh memory costs about 1 s per GiB on
    /// these hosts; done here, it is not on the migration's path. A guest of another size still
    /// migrates, into a new image.
    public var preallocateBytes: Int?
    /// How long a migration that lost its connections during pre-copy waits for its source to
    /// come back (`RESUME`) before it is discarded; zero: discard at once.
    public var resumeTimeout: Duration
    /// How long a verified image waits for the source to come back with its COMMIT (or ABORT)
    /// after the control connection failed during the handoff; then it is discarded. Longer than
    /// the source's own retry window (`SourceOptions.handoffTimeout`), so that a source that
    /// keeps trying always finds it.
    public var handoffTimeout: Duration = DestinationOptions.defaultHandoffTimeout
    public static let defaultHandoffTimeout = Duration.seconds(300)
    // The durations as the engine counts them.
    var runForSeconds: Double { runFor.inSeconds }
    var acceptTimeoutMs: Int? { acceptTimeout?.inMilliseconds }
    var receiveTimeoutMs: Int { receiveTimeout.inMilliseconds }
    var resumeTimeoutSeconds: Double { resumeTimeout.inSeconds }
    var handoffTimeoutMs: Int { handoffTimeout.inMilliseconds }
    /// Key, and whether to insist on encryption, for every connection (Protocol.md section 9);
    /// `.none`: plain, and sources that want to authenticate are refused.
    public var security: ConnectionSecurity = .none
    /// An operator's cancel (a signal): every migration that has not read `COMMIT` sends the
    /// source `ABORT` (reason `cancelled`) and removes its partial image; one that has runs its
    /// guest as usual. New sources are refused. nil: not cancellable.
    public var cancellation: MigrationCancellation?
    /// Called on a vCPU thread for each line a received guest prints after its resume here.
    public var consoleLine: (@Sendable (GuestConsoleLine) -> Void)?
    /// The kinds of guest this destination receives (`HELLO.guest_kind`); a guest of another
    /// kind is refused with reason `unsupported`.
    public var guestKinds: GuestKindRegistry
    /// Tests only: runs before post-copy's background mapper maps each run of present pages
    /// into the guest's view; an error it throws is that mapping's failure.
    var beforePostcopyMapping: (@Sendable (Range<Int>) throws -> Void)?

    public init(
        listen: Endpoint, imagePath: String, force: Bool = false, runFor: Duration = .zero,
        announceInterface: String? = nil, guestMAC: MACAddress? = nil, guestIPv4: IPv4Address? = nil,
        acceptTimeout: Duration? = nil, receiveTimeout: Duration = .seconds(60), name: String = "ferry-destination",
        preallocateBytes: Int? = nil, resumeTimeout: Duration = .seconds(30), guestKinds: GuestKindRegistry
    ) {
        self.guestKinds = guestKinds
        self.preallocateBytes = preallocateBytes
        self.resumeTimeout = resumeTimeout
        self.listen = listen
        self.imagePath = imagePath
        self.force = force
        self.runFor = runFor
        self.announceInterface = announceInterface
        self.guestMAC = guestMAC
        self.guestIPv4 = guestIPv4
        self.acceptTimeout = acceptTimeout
        self.receiveTimeout = receiveTimeout
        self.name = name
    }
}

/// What the destination knows after a migration: its report, and what the guest did here.
public struct DestinationResult: @unchecked Sendable {
    public var report: MigrationReport
    /// The receiving end of the guest, stopped: its kind's own type (cast it) tells more.
    public var guest: any IncomingGuest
    /// What the guest did here (its steps are also in `report.vcpuSteps`).
    public var outcome: IncomingGuestOutcome
    /// The lines the guest printed here, from its resume on.
    public var console: [GuestConsoleLine] { outcome.console }
}

/// Receives one live migration into `imagePath` (a `DestinationSession`). While it runs, other
/// sources are refused with reason `busy` and connections that are neither the source nor its
/// page streams are closed (`ConnectionDispatcher`); neither disturbs the migration.
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
    /// `PATH.partial` and `PATH`, locked from `bind()` to the end of `run()`.
    private var locks: DestinationImageLocks?
    /// The report of the migration the last `run()` received: what it returned, or, when it threw
    /// after a source established a migration, as far as that got, with the error recorded in it.
    /// Nil before, and when no source established one.
    public private(set) var lastReport: MigrationReport?
    /// The migration `run()` waits for, while it runs (read from other threads by `established`).
    private let waiting = Mutex<SingleMigration?>(nil)

    public init(options: DestinationOptions, logger: Logger, progress: ProgressHandler? = nil) {
        self.options = options
        self.logger = logger
        self.progress = progress
    }

    var partialPath: String { options.imagePath + ".partial" }

    /// Whether a source established its migration here (its `HELLO` accepted, the guest's room
    /// taken): from then on the destination holds bytes of that migration, only its own end
    /// (the guest runs here, or the run fails and returns) may stop it. Before, a source that
    /// connected and was refused leaves the destination waiting as it was. Safe from any thread.
    public var established: Bool { waiting.withLock { $0 }?.isHeld ?? false }

    deinit { locks?.release() }

    /// Checks the image path, locks it (another agent that uses `PATH` or `PATH.partial` is
    /// named in the error) and starts listening; returns the bound port (useful with port 0).
    public func bind() throws -> UInt16 {
        if ImageFile.exists(path: options.imagePath) && !options.force {
            throw MigrationError(
                .configuration, "destination image \(options.imagePath) exists; pass --force to overwrite it",
                guest: .notHere)
        }
        if locks == nil { locks = try DestinationImageLocks.acquire(imagePath: options.imagePath) }
        if let bytes = options.preallocateBytes {
            guard bytes > 0, bytes % systemPageSize == 0 else {
                throw MigrationError(
                    .configuration,
                    "--prealloc \(bytes): must be a positive multiple of the page size \(systemPageSize)",
                    guest: .notHere)
            }
            let start = MonotonicClock.now()
            do {
                try ImageFile.create(path: partialPath, size: bytes, overwrite: true, reserve: true)
                let region = try MappedRegion.mapFile(path: partialPath, writable: true)
                try region.populate(writable: true)
                prepared = consume region
            } catch {
                try? ImageFile.remove(path: partialPath)
                throw MigrationError.wrap(
                    error, during: "preallocating \(bytes) bytes at \(partialPath)", guest: .notHere)
            }
            prepareSeconds = MonotonicClock.seconds(since: start)
        }
        do {
            let listener = try TCPListener(options.listen, backlog: 128)
            self.listener = listener
            return listener.port
        } catch {
            throw MigrationError.wrap(error, during: "listen on \(options.listen)", guest: .notHere)
        }
    }

    /// The listener, `bind()` first if it was not called.
    private func boundListener() throws -> TCPListener {
        if listener == nil { _ = try bind() }
        guard let listener else { preconditionFailure("bind() sets the listener") }
        return listener
    }

    /// Waits for a source to establish a migration (up to `acceptTimeoutMs`), receives its guest
    /// and returns once the guest has run here for `runFor` seconds. Each session runs on its own
    /// thread; one that is refused, stalls or vanishes before it is established (a stranger, or a
    /// source whose guest does not fit) is logged and the agent keeps listening: only the first
    /// established session's result is the run's result (Protocol.md section 9.5).
    public func run() throws -> DestinationResult {
        let listener = try boundListener()
        defer {
            locks?.release()
            locks = nil
        }
        let registry = SessionRegistry(maxSessions: 1)
        let image = PreparedImage(prepared.take(), seconds: prepareSeconds)
        let locks = self.locks
        let single = SingleMigration()
        waiting.withLock { $0 = single }
        let claim = HostClaim(claim: { single.claim() }, release: { single.release() })
        let (options, logger, progress) = (self.options, self.logger, self.progress)
        let dispatcher = ConnectionDispatcher(
            listener: listener, registry: registry, security: options.security,
            receiveTimeoutMs: options.receiveTimeoutMs, log: logger
        ) { connection, hello, admission in
            if case .established = admission, let refusal = single.claim() {
                registry.release()
                try? connection.send(Refuse(reason: .busy, message: refusal))
                connection.close()
                return
            }
            let thread = Thread {
                let session = DestinationSession(
                    options: options, connection: connection, hello: hello, registry: registry,
                    admission: admission, hostClaim: claim, prepared: image, imageLocks: locks,
                    logger: logger, progress: progress)
                let result: Result<DestinationResult, MigrationError>
                let report: MigrationReport
                do {
                    let received = try session.run()
                    result = .success(received)
                    report = received.report
                } catch {
                    // A MigrationError keeps where it says the guest is (the image failing to
                    // flush after the guest ran here: .destination).
                    let failure =
                        (error as? MigrationError) ?? MigrationError.wrap(error, during: "receiving", guest: .notHere)
                    result = .failure(failure)
                    report = session.reportAfterFailure(failure)
                }
                if case .established = admission {
                    registry.release()
                } else if session.established {
                    registry.release()
                }
                if session.established {
                    single.finish(result, report: report)
                } else {
                    if case .established = admission { single.release() }
                    if case .failure(let failure) = result {
                        logger.warning(
                            "a source that never established a migration here went away; still waiting for one",
                            metadata: [
                                "migration.peer": "\(connection.peerDescription)",
                                "migration.error": "\(failure.message)",
                            ])
                    }
                }
            }
            thread.name = "ferry-session"
            thread.start()
        }
        dispatcher.start()
        defer { dispatcher.stop() }
        lastReport = nil
        let cancelHandler = options.cancellation?.onCancel { [options] in
            options.cancellation?.error(during: "the wait for a source", guest: .notHere).map { single.cancel($0) }
        }
        defer { if let cancelHandler { options.cancellation?.removeHandler(cancelHandler) } }
        guard let result = single.wait(timeoutMs: options.acceptTimeoutMs) else {
            throw MigrationError(
                .transport,
                "no source connected to \(listener.localDescription) and established a migration within \(options.acceptTimeoutMs ?? 0) ms",
                guest: .notHere)
        }
        lastReport = single.report
        return try result.get()
    }
}

/// The one migration a one-shot destination receives: the first session to be established
/// claims it; its result ends the wait.
/// `@unchecked Sendable`: guarded by `condition`.
final class SingleMigration: @unchecked Sendable {
    private let condition = MonotonicCondition()
    private var held = false
    private var closed = false
    private var result: Result<DestinationResult, MigrationError>?
    private var endedReport: MigrationReport?
    private var cancelled: MigrationError?

    /// Claims the migration for a session; nil, or why it cannot.
    func claim() -> String? {
        condition.withLock {
            if closed { return "this destination has stopped waiting for a guest" }
            if held {
                return
                    "this destination is receiving another guest; try again when it is done, or use another destination"
            }
            held = true
            return nil
        }
    }

    /// Whether a session holds the migration.
    var isHeld: Bool { condition.withLock { held } }

    /// Gives the claim back: that session was not established after all.
    func release() {
        condition.withLock {
            held = false
            condition.broadcast()
        }
    }

    /// An operator's cancel: ends the wait unless a session holds the migration (that session
    /// ends with its own cancel, and its result is the run's).
    func cancel(_ failure: MigrationError) {
        condition.withLock {
            cancelled = failure
            condition.broadcast()
        }
    }

    /// The established session ended with `result`.
    func finish(_ result: Result<DestinationResult, MigrationError>, report: MigrationReport? = nil) {
        condition.withLock {
            self.result = result
            endedReport = report
            closed = true
            condition.broadcast()
        }
    }

    /// The result of the established session, once it ends; nil when no session was
    /// established within `timeoutMs` (nil: wait forever). Once one is, it is waited for
    /// without a limit (the session has its own timeouts).
    /// The established session's report, once it ended (as far as it got, when it failed).
    var report: MigrationReport? { condition.withLock { endedReport } }

    func wait(timeoutMs: Int?) -> Result<DestinationResult, MigrationError>? {
        let deadline = timeoutMs.map { MonotonicClock.deadline(afterMilliseconds: $0) }
        return condition.withLock {
            while result == nil {
                if !held, let cancelled {
                    closed = true
                    return .failure(cancelled)
                }
                if held || deadline == nil {
                    condition.wait()
                } else if let deadline, !condition.wait(untilNanoseconds: deadline), result == nil, !held {
                    closed = true
                    return nil
                }
            }
            return result
        }
    }
}
