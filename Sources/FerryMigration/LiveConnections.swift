import FerryTransport
import Synchronization

/// The connections of a migration's current attempt, so that another thread (a failing page
/// stream, a source that came back with `RESUME`) can close them all and wake the threads blocked
/// on them. The list is guarded by a `Mutex`; closing is a `shutdown`, safe while other threads
/// use the connection.
final class LiveConnections: Sendable {
    private let connections = Mutex<[FramedConnection]>([])

    func add(_ connection: FramedConnection) {
        connections.withLock { $0.append(connection) }
    }

    /// Forgets the connections (after their owner has closed them).
    func removeAll() {
        connections.withLock { $0.removeAll() }
    }

    /// Wakes every thread blocked reading one of them; writes still go out (a cancel's `ABORT`).
    func stopReading() {
        let current = connections.withLock { $0 }
        for connection in current { connection.stream.shutdownRead() }
    }

    func closeAll() {
        let current = connections.withLock { $0 }
        for connection in current { connection.close() }
    }
}
