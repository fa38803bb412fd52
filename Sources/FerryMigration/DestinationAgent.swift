import FerryCodec
import FerryGuest
import FerryKVM
import FerryProtocol
import FerrySystem
import FerryTransport
import Foundation
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
    /// Seconds a migration that lost its connections during pre-copy waits for its source to
    /// come back (`RESUME`) before it is discarded; 0: discard at once.
    public var resumeTimeout: Double
    /// How long a verified image waits for the source to come back with its COMMIT (or ABORT)
    /// after the control connection failed during the handoff; then it is discarded. Longer than
    /// the source's own retry window (`SourceOptions.handoffTimeoutMs`), so that a source that
    /// keeps trying always finds it.
    public var handoffTimeoutMs: Int = DestinationOptions.defaultHandoffTimeoutMs
    public static let defaultHandoffTimeoutMs = 300_000
    /// Key, and whether to insist on encryption, for every connection (Protocol.md section 9);
    /// `.none`: plain, and sources that want to authenticate are refused.
    public var security: ConnectionSecurity = .none
    /// Called on a vCPU thread for each line a received KVM guest prints after its resume here.
    public var kvmConsoleLine: (@Sendable (KVMConsoleLine) -> Void)?

    public init(listen: Endpoint, imagePath: String, force: Bool = false, runFor: Double = 0,
                announceInterface: String? = nil, guestMAC: MACAddress? = nil, guestIPv4: IPv4Address? = nil,
                acceptTimeoutMs: Int? = nil, receiveTimeoutMs: Int = 60_000, name: String = "ferry-destination",
                preallocateBytes: Int? = nil, resumeTimeout: Double = 30) {
        self.preallocateBytes = preallocateBytes
        self.resumeTimeout = resumeTimeout
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
    /// The built-in guest's final registers (empty for a KVM guest: its steps are in `report.vcpuSteps`).
    public var finalStates: [VCPUState]
    /// The built-in guest's setup; nil for a KVM guest.
    public var setup: GuestSetup!
    /// The lines a KVM guest printed here, from its resume on (empty for the built-in guest).
    public var kvmConsole: [KVMConsoleLine] = []
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
                try ImageFile.create(path: partialPath, size: bytes, overwrite: true, reserve: true)
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

    /// Waits for a source (up to `acceptTimeoutMs`), receives its guest and returns once the guest
    /// has run here for `runFor` seconds.
    public func run() throws -> DestinationResult {
        if listener == nil { _ = try bind() }
        guard let listener else { preconditionFailure("bind() sets the listener") }
        let registry = SessionRegistry(maxSessions: 1)
        let arrivals = Arrivals()
        let dispatcher = ConnectionDispatcher(listener: listener, registry: registry, security: options.security,
                                              receiveTimeoutMs: options.receiveTimeoutMs, log: logger) { connection, hello in
            arrivals.put(connection, hello)
        }
        dispatcher.start()
        defer { dispatcher.stop() }
        guard let (connection, hello) = arrivals.take(timeoutMs: options.acceptTimeoutMs) else {
            throw MigrationError(.transport, "no source connected to \(listener.localDescription) within \(options.acceptTimeoutMs ?? 0) ms", guest: .notHere)
        }
        defer { registry.release() }
        let session = DestinationSession(options: options, connection: connection, hello: hello, registry: registry,
                                         prepared: prepared.take(), prepareSeconds: prepareSeconds,
                                         logger: logger, progress: progress)
        return try session.run()
    }
}

/// The sources a dispatcher admitted, in arrival order, for a thread that waits for them.
/// `@unchecked Sendable`: guarded by `condition`.
final class Arrivals: @unchecked Sendable {
    private let condition = NSCondition()
    private var waiting: [(FramedConnection, Hello)] = []

    func put(_ connection: FramedConnection, _ hello: Hello) {
        condition.lock()
        waiting.append((connection, hello))
        condition.signal()
        condition.unlock()
    }

    /// The next arrival, or nil after `timeoutMs` (nil: wait forever).
    func take(timeoutMs: Int?) -> (FramedConnection, Hello)? {
        // No `.distantFuture` deadline: NSCondition traps converting it to a timespec.
        let deadline = timeoutMs.map { Date(timeIntervalSinceNow: Double($0) / 1000) }
        condition.lock()
        defer { condition.unlock() }
        while waiting.isEmpty {
            if let deadline {
                if !condition.wait(until: deadline) && waiting.isEmpty { return nil }
            } else {
                condition.wait()
            }
        }
        return waiting.removeFirst()
    }
}
