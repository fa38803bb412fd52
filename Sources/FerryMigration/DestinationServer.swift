import FerryProtocol
import FerrySystem
import FerryTransport
import Foundation
import Logging

/// A destination that receives several guests, up to `maxSessions` at a time, each into
/// `directory/<guest_name>.img` (the name from the source's `HELLO`, whose alphabet keeps it
/// inside the directory). A source beyond the limit is refused with reason `busy`; one without a
/// guest name, or with the name of a guest being received, with reason `other`. Without a key a
/// source claims its slot and name only once established (`HelloAdmission`). Each migration
/// runs on its own thread with its own image, hash table and streams: nothing is shared between
/// them but the listener.
///
/// `@unchecked Sendable`: the mutable state (`receiving`, `outcomes`) is guarded by `condition`.
public final class DestinationServer: @unchecked Sendable {
    /// The outcome of one migration.
    public struct Outcome: Sendable {
        public var guestName: String
        public var imagePath: String
        public var result: Result<DestinationResult, MigrationError>
        /// The migration's report: the result's, or, after a failure, as far as it got with the
        /// error recorded in it.
        public var report: MigrationReport
    }

    /// Settings per migration; `imagePath` and `preallocateBytes` are ignored (each guest gets
    /// `directory/<name>.img`).
    public let options: DestinationOptions
    public let directory: String
    public let maxSessions: Int
    let logger: Logger
    private var listener: TCPListener?
    private let condition = MonotonicCondition()
    private var receiving: Set<String> = []
    /// The outcomes `run(count:)` returns; kept only when it was given a count (a server that runs
    /// forever would otherwise keep every report and guest setup it ever received).
    private var outcomes: [Outcome] = []
    private var keepOutcomes = true
    private var ended = 0
    private var running = 0
    private var cancelled = false

    public init(options: DestinationOptions, directory: String, maxSessions: Int, logger: Logger) {
        precondition(maxSessions >= 1, "a destination receives at least one migration at a time")
        self.options = options
        self.directory = directory
        self.maxSessions = maxSessions
        self.logger = logger
    }

    /// Checks the directory and starts listening; returns the bound port.
    public func bind() throws -> UInt16 {
        var info = stat()
        guard stat(directory, &info) == 0, info.st_mode & S_IFMT == S_IFDIR else {
            throw MigrationError(
                .configuration, "--serve \(directory): not a directory; create it first", guest: .notHere)
        }
        do {
            let listener = try TCPListener(options.listen, backlog: 64)
            self.listener = listener
            return listener.port
        } catch {
            throw MigrationError.wrap(error, during: "listen on \(options.listen)", guest: .notHere)
        }
    }

    /// Migrations running now.
    public var activeCount: Int {
        condition.withLock { running }
    }

    /// The image a guest of this name is stored in.
    public func imagePath(guestName: String) -> String {
        (directory.hasSuffix("/") ? directory : directory + "/") + guestName + ".img"
    }

    /// Receives migrations until `count` have ended (nil: forever), calling `finished` after each
    /// (on the migration's thread), and returns the outcomes in the order they ended.
    public func run(count: Int? = nil, finished: (@Sendable (Outcome) -> Void)? = nil) throws -> [Outcome] {
        if listener == nil { _ = try bind() }
        guard let listener else { preconditionFailure("bind() sets the listener") }
        let registry = SessionRegistry(maxSessions: maxSessions)
        let dispatcher = ConnectionDispatcher(
            listener: listener, registry: registry, security: options.security,
            receiveTimeoutMs: options.receiveTimeoutMs, log: logger
        ) { [self] connection, hello, admission in
            start(connection, hello, admission: admission, registry: registry, finished: finished)
        }
        condition.withLock { keepOutcomes = count != nil }
        dispatcher.start()
        defer { dispatcher.stop() }
        // A cancel ends every migration that has not read COMMIT (each session sees it); the
        // server then waits for those still running (a guest's --run-for) and throws the cancel.
        let cancelHandler = options.cancellation?.onCancel { [self] in
            condition.withLock {
                cancelled = true
                condition.broadcast()
            }
        }
        defer { if let cancelHandler { options.cancellation?.removeHandler(cancelHandler) } }
        let result = condition.withLock {
            while count.map({ self.ended < $0 }) ?? true {
                if cancelled && running == 0 { break }
                condition.wait()
            }
            // Migrations admitted after the last counted one are not waited for; none is running
            // when `count` were admitted one after another, as in tests.
            return outcomes
        }
        if let cancel = options.cancellation?.error(during: "--serve \(directory)", guest: .notHere),
            condition.withLock({ cancelled })
        {
            throw cancel
        }
        return result
    }

    /// Claims guest `name` for a session: nil, or why it cannot be received now.
    private func claim(_ name: String) -> String? {
        condition.withLock {
            if receiving.contains(name) { return "guest \(name) is being received here already" }
            receiving.insert(name)
            running += 1
            return nil
        }
    }

    private func release(_ name: String) {
        condition.withLock {
            receiving.remove(name)
            running -= 1
            condition.broadcast()
        }
    }

    /// Starts the session of an admitted HELLO on its own thread. An authenticated one claims its
    /// guest's name now; a tentative one (no key) is refused now only when an established session
    /// holds the name, and claims it once established (Protocol.md section 9.5). A tentative
    /// session that never is established leaves no outcome.
    private func start(
        _ connection: FramedConnection, _ hello: Hello, admission: HelloAdmission, registry: SessionRegistry,
        finished: (@Sendable (Outcome) -> Void)?
    ) {
        let name = hello.guestName
        let tentative: Bool
        if case .established = admission { tentative = false } else { tentative = true }
        var refusal: String?
        if name.isEmpty {
            refusal = "this destination serves several guests and needs the guest's name; pass --name to ferry send"
        } else if tentative {
            if condition.withLock({ receiving.contains(name) }) {
                refusal = "guest \(name) is being received here already"
            }
        } else {
            refusal = claim(name)
        }
        if let refusal {
            logger.warning(
                "refused a source", metadata: ["migration.guest": "\(name)", "migration.reason": "\(refusal)"])
            try? connection.send(Refuse(reason: .other, message: refusal))
            connection.close()
            if tentative { registry.endTentative() } else { registry.release() }
            return
        }
        var settings = options
        settings.imagePath = imagePath(guestName: name)
        settings.preallocateBytes = nil
        let perGuest = settings
        let hostClaim = HostClaim(claim: { [self] in claim(name) }, release: { [self] in release(name) })
        let thread = Thread { [self] in
            let session = DestinationSession(
                options: perGuest, connection: connection, hello: hello, registry: registry,
                admission: admission, hostClaim: hostClaim, prepared: nil,
                logger: logger, progress: nil)
            let result: Result<DestinationResult, MigrationError>
            let report: MigrationReport
            do {
                let received = try session.run()
                result = .success(received)
                report = received.report
            } catch {
                let failure =
                    (error as? MigrationError)
                    ?? MigrationError.wrap(error, during: "receiving \(name)", guest: .notHere)
                result = .failure(failure)
                report = session.reportAfterFailure(failure)
            }
            guard !tentative || session.established else {
                if case .failure(let failure) = result {
                    logger.warning(
                        "a source that never established a migration here went away",
                        metadata: [
                            "migration.guest": "\(name)", "migration.peer": "\(connection.peerDescription)",
                            "migration.error": "\(failure.message)",
                        ])
                }
                return
            }
            registry.release()
            let outcome = Outcome(guestName: name, imagePath: perGuest.imagePath, result: result, report: report)
            finished?(outcome)
            condition.withLock {
                receiving.remove(name)
                running -= 1
                ended += 1
                if keepOutcomes { outcomes.append(outcome) }
                condition.broadcast()
            }
        }
        thread.name = "ferry-session"
        thread.start()
    }
}
