import FerryProtocol
import FerrySystem
import FerryTransport
import Logging
import Synchronization

/// The destination's block streams 1 … N − 1 of a move with several streams (Protocol.md 10.7):
/// each joins with `DISK_JOIN` right after `DISK_ACCEPT` and is read by a thread of its own into
/// its own `DiskBlockWriter`, until its `DISK_STREAM_END`.
final class DiskJoinedStreams {
    private(set) var writers: [DiskBlockWriter] = []
    private var connections: [FramedConnection] = []
    private var threads: [BackgroundThread<Void>] = []
    /// The first stream's failure; `onFailure` (wakes the control connection's reader) runs once.
    /// A lost connection is kept apart: it does not wake stream 0, whose blocks in flight still
    /// count (the source ends every stream when one fails), and the move may resume.
    private let failure = FirstFailure()
    private let lost = FirstFailure()
    private let onFailure: @Sendable () -> Void

    /// Accepts `count - 1` joining streams on `listener`; connections that do not join this move
    /// (another key, another frame, a wrong token or index) are closed and do not count.
    init(
        count: Int, joinTimeoutMs: Int, listener: TCPListener, security: ConnectionSecurity, moveID: UInt64,
        moveToken: SessionToken,
        idleTimeoutMs: Int, makeWriter: (Int) -> DiskBlockWriter, onFailure: @escaping @Sendable () -> Void,
        logger: Logger
    ) throws {
        self.onFailure = onFailure
        let deadline = MonotonicClock.milliseconds() + joinTimeoutMs
        var joined = Set<Int>()
        while joined.count < count - 1 {
            let remaining = deadline - MonotonicClock.milliseconds()
            guard remaining > 0 else {
                stop()
                throw DiskMoveError(
                    .transport,
                    "only \(joined.count + 1) of the source's \(count) streams joined within \(joinTimeoutMs) ms: retry the move"
                )
            }
            let accepted: Result<TCPStream, TransportError>
            do throws(TransportError) {
                accepted = .success(try listener.accept(timeoutMs: remaining))
            } catch {
                accepted = .failure(error)
            }
            guard case .success(let stream) = accepted else {
                if case .failure(let error) = accepted, error.code != .timeout {
                    stop()  // the streams joined so far
                    throw error
                }
                continue  // the deadline check above says how many joined
            }
            let connection = FramedConnection(stream)
            do {
                try stream.setReceiveTimeout(ms: min(remaining, DiskReceiver.greetingTimeoutMs))
                let frame = try connection.authenticate(asServer: security, firstFrame: try connection.receive())
                let join = try DiskJoin(payload: frame.payload)
                let index = Int(join.streamIndex)
                guard frame.type == .diskJoin, join.moveID == moveID, join.moveToken.matches(moveToken), index < count,
                    joined.insert(index).inserted
                else {
                    throw ProtocolError(.unexpectedFrame, "not a DISK_JOIN for a free stream of this move")
                }
                try stream.setReceiveTimeout(ms: idleTimeoutMs)
                start(connection, writer: makeWriter(index))
            } catch {
                logger.warning(
                    "closed a connection that did not join the move",
                    metadata: ["disk.peer": "\(connection.peerDescription)", "disk.error": "\(error)"])
                connection.close()
            }
        }
    }

    private func start(_ connection: FramedConnection, writer: DiskBlockWriter) {
        connections.append(connection)
        writers.append(writer)
        let (failure, lost, onFailure) = (self.failure, self.lost, self.onFailure)
        threads.append(
            BackgroundThread {
                do {
                    try Self.receive(connection, into: writer)
                } catch {
                    connection.stream.shutdownRead()
                    // A lost connection may resume (version 2, Protocol.md 10.7); the rest fail the move.
                    if let transport = error as? TransportError, [.peerClosed, .timeout, .io].contains(transport.code) {
                        _ = lost.record(ConnectionLost(error: transport))
                    } else if failure.record(error) {
                        onFailure()
                    }
                    throw error
                }
            })
    }

    /// One stream's frames: its blocks, then `DISK_STREAM_END` with their number.
    private static func receive(_ connection: FramedConnection, into writer: DiskBlockWriter) throws {
        while true {
            let frame = try connection.receive()
            switch frame.type {
            case .diskBlock:
                try writer.apply(frame.payload)
            case .diskStreamEnd:
                let end = try DiskStreamEnd(payload: frame.payload)
                guard end.blocksSent == UInt64(writer.blocksReceived) else {
                    throw DiskMoveError(
                        .verification,
                        "DISK_STREAM_END of stream \(writer.stream) says \(end.blocksSent) blocks were sent, \(writer.blocksReceived) arrived: retry the move"
                    )
                }
                return
            default:
                throw ProtocolError(
                    .unexpectedFrame,
                    "expected DISK_BLOCK or DISK_STREAM_END on stream \(writer.stream), got \(frame.type.wireName)")
            }
        }
    }

    /// Waits for every stream's end; throws the first failure, else the first lost connection.
    func wait() throws {
        for thread in threads { _ = thread.result() }
        if let error = failure.error { throw error }
        if let error = lost.error { throw error }
    }

    /// After a lost connection: waits for every stream to end by itself (the source ends them
    /// all, and what they carried until then is kept; a silent one ends at its idle timeout),
    /// then closes them.
    func end() {
        for thread in threads { _ = thread.result() }
        for connection in connections { connection.close() }
    }

    /// The first stream's failure so far, if any.
    var firstFailure: (any Error)? { failure.error }

    /// Wakes and ends every stream's thread (after a failure elsewhere) and closes the connections.
    func stop() {
        for connection in connections { connection.stream.shutdownRead() }
        for thread in threads { _ = thread.result() }
        for connection in connections { connection.close() }
    }

    var blocksReceived: Int { writers.reduce(0) { $0 + $1.blocksReceived } }
    var bytesReceived: UInt64 { connections.reduce(0) { $0 + $1.bytesReceived } }
}

/// The first of several threads' failures.
final class FirstFailure: Sendable {
    private let held = Mutex<(any Error)?>(nil)

    /// Keeps `error` if it is the first; returns whether it was.
    func record(_ error: any Error) -> Bool {
        held.withLock { held in
            guard held == nil else { return false }
            held = error
            return true
        }
    }

    var error: (any Error)? { held.withLock { $0 } }
}
