import FerryProtocol
import FerryTransport
import Foundation
import Logging
import Synchronization

/// Accepts every connection on a destination's listener and routes it by its first frame:
///
/// - a valid `HELLO` starts a migration: `onHello` gets it if the registry admits one more
///   session, else the source is refused with reason `busy` (its guest keeps running). With a
///   key the session takes its slot now (`.established`); without one it takes only a
///   tentative place (`.tentative`) and claims a slot once its GUEST_CONFIG and first frame
///   arrive (`DestinationSession`), so that a stranger's HELLO reserves nothing;
/// - a malformed `HELLO` is refused with reason `malformed`;
/// - `JOIN` is a page stream of a running migration and goes to the registry;
/// - `RESUME` brings a new control connection back to a migration that lost its connections
///   (`reattach`, the one place that routes a connection to a living session by its id);
/// - `STATUS_QUERY` is answered from the registry's `HandoffBook`; with the resolve flag and the
///   session's token, a connection naming a session that awaits its COMMIT is handed to that session;
/// - anything else is closed and logged.
///
/// `JOIN`, `RESUME` and a resolving `STATUS_QUERY` must present the session's token
/// (`ACCEPT.session_token`): one that names a session without it is closed (or, a status query,
/// answered as a plain one) and changes nothing in that session.
///
/// None of these stops the destination: a stranger cannot abort a migration in progress. Each
/// new connection's first frame is read on its own short-lived thread. Until it has arrived
/// (with a key: the first frame after authentication) the connection is pending, limited by
/// `PendingAdmission`: a total deadline (5 s) from accept that bytes trickling in do not extend
/// (`deadlines`), at most 64 pending and 16 per peer address, the longest-waiting evicted to
/// make room for a newcomer (Protocol.md section 9.5).
/// `@unchecked Sendable`: the pool of pending connections is guarded by a `Mutex` (`pool`);
/// `started` is touched only by the thread that calls `start` and `stop`.
final class ConnectionDispatcher: @unchecked Sendable {
    typealias HelloHandler = @Sendable (FramedConnection, Hello, HelloAdmission) -> Void

    let listener: TCPListener
    let registry: SessionRegistry
    /// With a key, every connection must authenticate before its HELLO or JOIN is read.
    let security: ConnectionSecurity
    /// How long a resolve `STATUS_QUERY` connection handed to a session waits for its next frame.
    let firstFrameTimeoutMs: Int
    let receiveTimeoutMs: Int
    private let log: Logger
    private let onHello: HelloHandler
    private struct Pool {
        var pending: PendingAdmission
        /// The pending connections, to close the one `pending` evicts.
        var streams: [UInt64: TCPStream] = [:]
    }
    private let pool: Mutex<Pool>
    /// `PendingAdmission.deadline`, which never changes: seconds from accept to the first frame.
    private let pendingDeadline: Double
    /// Total deadlines: for pending connections and for tentative sessions.
    let deadlines = ConnectionDeadlines()
    private let finished = DispatchSemaphore(value: 0)
    private var started = false

    init(
        listener: TCPListener, registry: SessionRegistry, security: ConnectionSecurity = .none,
        firstFrameTimeoutMs: Int = 10_000,
        pending: PendingAdmission = PendingAdmission(), receiveTimeoutMs: Int, log: Logger,
        onHello: @escaping HelloHandler
    ) {
        pool = Mutex(Pool(pending: pending))
        pendingDeadline = pending.deadline
        self.listener = listener
        self.registry = registry
        self.security = security
        self.firstFrameTimeoutMs = firstFrameTimeoutMs
        self.receiveTimeoutMs = receiveTimeoutMs
        self.log = log
        self.onHello = onHello
    }

    /// Starts accepting on a thread of its own.
    func start() {
        started = true
        let thread = Thread { [self] in
            acceptLoop()
            finished.signal()
        }
        thread.name = "ferry-accept"
        thread.start()
    }

    /// Closes the listener and waits for the accept thread; closes the connections still
    /// pending and those of tentative sessions. Idempotent.
    func stop() {
        listener.close()
        if started {
            started = false
            finished.wait()
        }
        deadlines.stop()
    }

    private func acceptLoop() {
        while true {
            let stream: TCPStream
            do {
                stream = try listener.accept(timeoutMs: nil)
            } catch {
                if error.code != .accept || !error.message.contains("was closed") {
                    log.error(
                        "accept failed; no more connections are taken",
                        metadata: ["migration.error": "\(error.message)"])
                }
                return
            }
            let peer = PendingAdmission.peerAddress(stream.peerDescription)
            let (id, victim, waiting) = pool.withLock { pool in
                let streams = pool.streams
                let (id, evicted) = pool.pending.arrive(peer: peer) { id in
                    streams[id].map(Self.holdsWholeFrame) ?? false
                }
                pool.streams[id] = stream
                let victim = evicted.flatMap { pool.streams.removeValue(forKey: $0) }
                return (id, victim, pool.pending.count)
            }
            if let victim {
                log.warning(
                    "too many connections waiting for their first frame; closed the longest-waiting one of the busiest peer",
                    metadata: [
                        "migration.peer": "\(victim.peerDescription)", "migration.pending": "\(waiting)",
                    ])
                victim.close()
            }
            let token = deadlines.arm(stream, seconds: pendingDeadline)
            let thread = Thread { [self] in
                route(stream, pending: id, deadline: token)
            }
            thread.name = "ferry-route"
            thread.start()
        }
    }

    /// Whether a whole frame (header and payload, a first frame's size at most) waits unread in
    /// `stream`'s socket.
    static func holdsWholeFrame(_ stream: TCPStream) -> Bool {
        withUnsafeTemporaryAllocation(byteCount: FrameHeader.size, alignment: 8) { header in
            guard stream.peek(into: header) == FrameHeader.size else { return false }
            let length = Int(
                UInt32(littleEndian: UnsafeRawBufferPointer(header).loadUnaligned(fromByteOffset: 4, as: UInt32.self)))
            return length <= 4096 && stream.unreadBytes >= FrameHeader.size + length
        }
    }

    /// Ends connection `id`'s wait in the pool; false when it was evicted.
    private func leavePending(_ id: UInt64) -> Bool {
        pool.withLock { pool in
            pool.streams.removeValue(forKey: id)
            return pool.pending.leave(id)
        }
    }

    private func route(_ stream: TCPStream, pending id: UInt64, deadline token: UInt64) {
        let peer = stream.peerDescription
        let connection = FramedConnection(stream)
        var waiting = true
        defer { if waiting { _ = leavePending(id) } }
        let frame: ReceivedFrame
        do {
            // The deadline closes the connection; this timeout only keeps a read from outliving it.
            try stream.setReceiveTimeout(ms: Int(pendingDeadline * 1000) + 1000)
            // Nothing large is allocated for a peer that has not authenticated (first frames are small).
            connection.receiveLimit = 4096
            let opening = try connection.receive()
            if security.key != nil && opening.type == .authHello {
                pool.withLock { $0.pending.progress(id) }
            }
            frame = try connection.authenticate(asServer: security, firstFrame: opening)
            connection.receiveLimit = connection.maxPayload
        } catch {
            let evicted = waiting && !leavePending(id)
            waiting = false
            let expired = !deadlines.disarm(token) && !evicted
            let why =
                evicted
                ? "closed a connection evicted from the full pool of connections waiting for their first frame"
                : expired
                    ? "closed a connection that did not send its first frame within \(pendingDeadline) s of its accept"
                    : error.code == .unauthenticated
                        ? "refused a connection that did not authenticate"
                        : "closed a connection that sent no valid first frame"
            log.warning("\(why)", metadata: ["migration.peer": "\(peer)", "migration.error": "\(error.message)"])
            connection.close()
            return
        }
        let evicted = waiting && !leavePending(id)
        waiting = false
        guard deadlines.disarm(token), !evicted else {
            log.warning(
                "closed a connection whose first frame came after its deadline or eviction",
                metadata: ["migration.peer": "\(peer)"])
            connection.close()
            return
        }
        switch frame.type {
        case .hello:
            admitHello(frame, connection: connection, stream: stream, peer: peer)
        case .join:
            let join = try? Join(payload: frame.payload)
            guard let join, registry.deliver(join, connection: connection) else {
                log.warning(
                    join.map { namesWithoutToken(session: $0.sessionID, $0.sessionToken) } == true
                        ? "closed a connection that named a migration without its token"
                        : "closed a connection whose JOIN names no migration waiting for that stream",
                    metadata: ["migration.peer": "\(peer)"])
                connection.close()
                return
            }
            try? stream.setReceiveTimeout(ms: receiveTimeoutMs)
        case .resume:
            reattach(connection, frame, peer: peer) {
                let resume = try Resume(payload: $0)
                return (resume.sessionID, resume.sessionToken)
            }
        case .statusQuery:
            answerStatus(frame, connection: connection, stream: stream, peer: peer)
        default:
            log.warning(
                "closed a connection that opened with \(frame.type.rawValue) instead of HELLO, JOIN, RESUME or STATUS_QUERY",
                metadata: ["migration.peer": "\(peer)"])
            connection.close()
        }
    }

    /// A connection that opened with `HELLO`: refused when malformed or when no place is free;
    /// otherwise handed to `onHello` with how it was admitted. With a key the HELLO is
    /// authenticated and takes its slot now; without one it is tentative and reserves nothing
    /// until its GUEST_CONFIG and first frame arrive (Protocol.md 9.5).
    private func admitHello(_ frame: ReceivedFrame, connection: FramedConnection, stream: TCPStream, peer: String) {
        let hello: Hello
        do {
            hello = try Hello(payload: frame.payload)
        } catch {
            log.warning(
                "refused a malformed HELLO",
                metadata: ["migration.peer": "\(peer)", "migration.error": "\(error.message)"])
            if error.code != .badMagic {
                try? connection.send(Refuse(reason: .malformed, message: "HELLO rejected: \(error.message)"))
            }
            connection.close()
            return
        }
        let admission: HelloAdmission
        let running = registry.maxSessions
        let busy =
            "destination is already receiving \(running == 1 ? "a guest" : "\(running) guests, its limit"); try again when it is done, or use another destination"
        if security.key != nil {
            guard registry.admit() else {
                refuseBusy(connection, peer: peer, message: busy)
                return
            }
            admission = .established
        } else {
            switch registry.admitTentative() {
            case .admitted:
                admission = .tentative(deadlines)
            case .busy:
                refuseBusy(connection, peer: peer, message: busy)
                return
            case .crowded:
                refuseBusy(
                    connection, peer: peer,
                    message:
                        "destination has \(registry.maxTentative) sources in their handshake already; try again in a few seconds"
                )
                return
            }
        }
        do {
            try stream.setReceiveTimeout(ms: receiveTimeoutMs)
        } catch {
            if case .established = admission { registry.release() } else { registry.endTentative() }
            connection.close()
            return
        }
        onHello(connection, hello, admission)
    }

    private func refuseBusy(_ connection: FramedConnection, peer: String, message: String) {
        log.warning(
            "refused a source: busy",
            metadata: [
                "migration.peer": "\(peer)", "migration.sessions": "\(registry.maxSessions)",
                "migration.message": "\(message)",
            ])
        try? connection.send(Refuse(reason: .busy, message: message))
        connection.close()
    }

    /// Hands a connection whose first frame names a session (`named` reads its id and token from
    /// the payload) to that session; closes it when the frame is malformed or names no session
    /// that takes it, or names one without its token (then nothing in that session changes). A
    /// new kind of reattaching frame adds a case in `route` that calls this.
    private func reattach(
        _ connection: FramedConnection, _ frame: ReceivedFrame, peer: String,
        named: (UnsafeRawBufferPointer) throws -> (UInt64, SessionToken)
    ) {
        let name = frame.type.rawValue
        guard let (id, token) = try? named(frame.payload) else {
            log.warning(
                "closed a connection with a malformed first frame",
                metadata: ["migration.peer": "\(peer)", "migration.frame": "\(name)"])
            connection.close()
            return
        }
        try? connection.stream.setReceiveTimeout(ms: receiveTimeoutMs)
        let reattachment = Reattachment(connection: connection, type: frame.type, payload: [UInt8](frame.payload))
        guard registry.reattach(session: id, token: token, reattachment) else {
            log.warning(
                namesWithoutToken(session: id, token)
                    ? "closed a connection that named a migration without its token"
                    : "closed a connection that names no migration here",
                metadata: [
                    "migration.peer": "\(peer)", "migration.frame": "\(name)", "migration.session": "\(id)",
                ])
            connection.close()
            return
        }
        log.info(
            "a connection came back for a migration",
            metadata: ["migration.peer": "\(peer)", "migration.frame": "\(name)"])
    }

    /// Whether a first frame that named session `id` with `token` named a migration this
    /// destination knows, with a token that is not that migration's: a stranger (or a guess),
    /// logged apart from a connection that names nothing known.
    private func namesWithoutToken(session id: UInt64, _ token: SessionToken) -> Bool {
        registry.handoffs.state(of: id) != .unknown && !registry.handoffs.holds(token, session: id)
    }

    /// Answers a `STATUS_QUERY`. A source resolving a session that awaits its COMMIT keeps the
    /// connection open: it belongs to that session from here on (`HandoffBook.offerResolver`).
    /// Resolving needs the session's token: a resolve query without it is answered as a plain
    /// query and closed, and never confirms, takes or interrupts anything of the session.
    private func answerStatus(_ frame: ReceivedFrame, connection: FramedConnection, stream: TCPStream, peer: String) {
        let query: StatusQuery
        do {
            query = try StatusQuery(payload: frame.payload)
        } catch {
            log.warning(
                "closed a connection with a malformed STATUS_QUERY",
                metadata: ["migration.peer": "\(peer)", "migration.error": "\(error.message)"])
            connection.close()
            return
        }
        let handoffs = registry.handoffs
        let resolving = query.resolve && handoffs.holds(query.sessionToken, session: query.sessionID)
        if query.resolve && !resolving && handoffs.state(of: query.sessionID) != .unknown {
            log.warning(
                "a connection named a migration without its token to resolve it; answered as a plain status query",
                metadata: [
                    "migration.peer": "\(peer)", "migration.session": "\(query.sessionID)",
                ])
        }
        let answers = handoffs.statuses(for: query, authenticated: connection.security.authenticated)
        log.info(
            "answered a status query",
            metadata: [
                "migration.peer": "\(peer)", "migration.session": "\(query.sessionID)",
                "migration.resolve": "\(resolving)",
                "migration.state": "\(answers.first.map { "\($0.state)" } ?? "-")",
                "migration.matches": "\(answers.count)",
            ])
        for answer in answers {
            do {
                try connection.send(answer)
            } catch {
                connection.close()
                return
            }
        }
        // Answered before the session may take the connection, so that only one thread ever
        // sends on it. Should the session give up in between, the source finds the connection
        // closed, asks again and learns that the guest was discarded.
        var handedOver = false
        if resolving, answers.count == 1, answers[0].state == .resumed {
            handoffs.confirm(session: query.sessionID, token: query.sessionToken)
        } else if resolving, answers.count == 1, answers[0].state == .awaitingCommit {
            try? stream.setReceiveTimeout(ms: firstFrameTimeoutMs)
            handedOver = handoffs.offerResolver(
                session: query.sessionID, token: query.sessionToken, connection: connection)
        } else if resolving, answers.count == 1, answers[0].state == .receiving {
            // A source that gave up during its blackout (no DEVICE_STATE arrived here yet) says so
            // with ABORT on this connection, instead of leaving the session to wait for a RESUME.
            try? stream.setReceiveTimeout(ms: firstFrameTimeoutMs)
            handedOver = registry.reattach(
                session: query.sessionID, token: query.sessionToken,
                Reattachment(connection: connection, type: .statusQuery, payload: [UInt8](frame.payload)))
        }
        if !handedOver { connection.close() }
    }
}
