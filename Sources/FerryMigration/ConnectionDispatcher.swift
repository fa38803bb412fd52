import FerryProtocol
import FerryTransport
import Foundation
import Logging

/// Accepts every connection on a destination's listener and routes it by its first frame:
///
/// - a valid `HELLO` starts a migration: `onHello` gets it if the registry admits one more
///   session, else the source is refused with reason `busy` (its guest keeps running);
/// - a malformed `HELLO` is refused with reason `malformed`;
/// - `JOIN` is a page stream of a running migration and goes to the registry;
/// - anything else, or silence for `firstFrameTimeoutMs`, is closed and logged.
///
/// None of these stops the destination: a stranger cannot abort a migration in progress. Each
/// new connection's first frame is read on its own short-lived thread (at most `maxPending` at a
/// time; more are closed at once), so a silent peer cannot hold up the others.
/// `@unchecked Sendable`: the mutable state is `pending`, guarded by `lock`.
final class ConnectionDispatcher: @unchecked Sendable {
    typealias HelloHandler = @Sendable (FramedConnection, Hello) -> Void

    let listener: TCPListener
    let registry: SessionRegistry
    /// With a key, every connection must authenticate before its HELLO or JOIN is read.
    let security: ConnectionSecurity
    let firstFrameTimeoutMs: Int
    let receiveTimeoutMs: Int
    let maxPending = 32
    private let log: Logger
    private let onHello: HelloHandler
    private let lock = NSLock()
    private var pending = 0
    private let finished = DispatchSemaphore(value: 0)
    private var started = false

    init(listener: TCPListener, registry: SessionRegistry, security: ConnectionSecurity = .none, firstFrameTimeoutMs: Int = 10_000,
         receiveTimeoutMs: Int, log: Logger, onHello: @escaping HelloHandler) {
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

    /// Closes the listener and waits for the accept thread. Idempotent.
    func stop() {
        listener.close()
        if started {
            started = false
            finished.wait()
        }
    }

    private func acceptLoop() {
        while true {
            let stream: TCPStream
            do {
                stream = try listener.accept(timeoutMs: nil)
            } catch {
                if error.code != .accept || !error.message.contains("was closed") {
                    log.error("accept failed; no more connections are taken", metadata: ["migration.error": "\(error.message)"])
                }
                return
            }
            lock.lock()
            let admitted = pending < maxPending
            if admitted { pending += 1 }
            lock.unlock()
            guard admitted else {
                log.warning("too many connections waiting for their first frame; closed one",
                            metadata: ["migration.peer": "\(stream.peerDescription)"])
                stream.close()
                continue
            }
            let thread = Thread { [self] in
                route(stream)
                lock.lock()
                pending -= 1
                lock.unlock()
            }
            thread.name = "ferry-route"
            thread.start()
        }
    }

    private func route(_ stream: TCPStream) {
        let peer = stream.peerDescription
        let connection = FramedConnection(stream)
        let frame: ReceivedFrame
        do {
            try stream.setReceiveTimeout(ms: firstFrameTimeoutMs)
            // Nothing large is allocated for a peer that has not authenticated (first frames are small).
            connection.receiveLimit = 4096
            frame = try connection.authenticate(asServer: security, firstFrame: connection.receive())
            connection.receiveLimit = connection.maxPayload
        } catch {
            log.warning(error.code == .unauthenticated ? "refused a connection that did not authenticate" : "closed a connection that sent no valid first frame",
                        metadata: ["migration.peer": "\(peer)", "migration.error": "\(error.message)"])
            connection.close()
            return
        }
        switch frame.type {
        case .hello:
            let hello: Hello
            do {
                hello = try Hello(payload: frame.payload)
            } catch {
                log.warning("refused a malformed HELLO", metadata: ["migration.peer": "\(peer)", "migration.error": "\(error.message)"])
                if error.code != .badMagic {
                    try? connection.send(Refuse(reason: .malformed, message: "HELLO rejected: \(error.message)"))
                }
                connection.close()
                return
            }
            guard registry.admit() else {
                let running = registry.maxSessions
                log.warning("refused a source: busy", metadata: ["migration.peer": "\(peer)", "migration.sessions": "\(running)"])
                try? connection.send(Refuse(reason: .busy,
                    message: "destination is already receiving \(running == 1 ? "a guest" : "\(running) guests, its limit"); try again when it is done, or use another destination"))
                connection.close()
                return
            }
            do {
                try stream.setReceiveTimeout(ms: receiveTimeoutMs)
            } catch {
                registry.release()
                connection.close()
                return
            }
            onHello(connection, hello)
        case .join:
            guard let join = try? Join(payload: frame.payload), registry.deliver(join, connection: connection) else {
                log.warning("closed a connection whose JOIN names no migration waiting for that stream",
                            metadata: ["migration.peer": "\(peer)"])
                connection.close()
                return
            }
            try? stream.setReceiveTimeout(ms: receiveTimeoutMs)
        default:
            log.warning("closed a connection that opened with \(frame.type.rawValue) instead of HELLO or JOIN",
                        metadata: ["migration.peer": "\(peer)"])
            connection.close()
        }
    }
}
