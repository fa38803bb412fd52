import FerryTransport
import Foundation

/// The connections of a migration's current attempt, so that another thread (a failing page
/// stream, a source that came back with `RESUME`) can close them all and wake the threads blocked
/// on them. `@unchecked Sendable`: the list is guarded by `lock`; closing is a `shutdown`, safe
/// while other threads use the connection.
final class LiveConnections: @unchecked Sendable {
    private let lock = NSLock()
    private var connections: [FramedConnection] = []

    func add(_ connection: FramedConnection) {
        lock.lock()
        connections.append(connection)
        lock.unlock()
    }

    /// Forgets the connections (after their owner has closed them).
    func removeAll() {
        lock.lock()
        connections.removeAll()
        lock.unlock()
    }

    func closeAll() {
        lock.lock()
        let current = connections
        lock.unlock()
        for connection in current { connection.close() }
    }
}
