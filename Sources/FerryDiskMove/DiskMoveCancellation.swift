import FerryTransport
import Synchronization

/// An operator's cancel of a disk move (a signal, an API call), from any thread: the move stops
/// at its next block or wakes from the read it is blocked in, tells the peer (`ABORT cancelled`),
/// and the destination removes `PATH.partial`.
public final class DiskMoveCancellation: Sendable {
    private struct State {
        var reason: String?
        /// The stream a side is blocked reading, woken by a cancel (`shutdownRead`).
        var stream: TCPStream?
    }

    private let state = Mutex(State())

    public init() {}

    /// Stops the move, saying why (e.g. "SIGINT"). A second cancel changes nothing.
    public func cancel(_ reason: String) {
        let stream = state.withLock { state -> TCPStream? in
            guard state.reason == nil else { return nil }
            state.reason = reason
            return state.stream
        }
        stream?.shutdownRead()
    }

    public var reason: String? { state.withLock { $0.reason } }

    /// The stream a cancel must wake; shut at once if the move was cancelled already.
    func watch(_ stream: TCPStream?) {
        let cancelled = state.withLock { state -> Bool in
            state.stream = stream
            return state.reason != nil
        }
        if cancelled { stream?.shutdownRead() }
    }

    /// The cancel as an error, if there was one.
    func error(during phase: String) -> DiskMoveError? {
        reason.map { DiskMoveError(.cancelled, "cancelled (\($0)) during \(phase)") }
    }
}
