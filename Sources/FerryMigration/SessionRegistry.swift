import FerryProtocol
import FerryTransport
import Foundation

/// The migrations a destination is receiving, and the page streams joining them.
///
/// The dispatcher admits a source only while fewer than `maxSessions` migrations run (`admit`),
/// and hands every connection that opened with `JOIN` to `deliver`, which keeps it for the session
/// it names until that session takes its streams (`waitForStreams`). `@unchecked Sendable`: all
/// state is guarded by `condition`.
final class SessionRegistry: @unchecked Sendable {
    let maxSessions: Int
    /// Every migration's handoff state, for `STATUS` and for sources that come back to resolve one.
    let handoffs = HandoffBook()
    private let condition = NSCondition()
    private var active = 0
    private var sessions: [UInt64: Joining] = [:]
    /// Disk bytes promised to admitted migrations whose image is not allocated yet (their space
    /// does not show in `statvfs` yet, so a second check would hand it out again).
    private var promisedDisk: UInt64 = 0

    private struct Joining {
        var extraStreams: Int
        var joined: [Int: FramedConnection] = [:]
        /// The session has its streams; later JOINs are strangers.
        var taken = false
    }

    init(maxSessions: Int) {
        precondition(maxSessions >= 1, "a destination receives at least one migration at a time")
        self.maxSessions = maxSessions
    }

    /// Takes a slot for a new migration; false when `maxSessions` already run.
    func admit() -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard active < maxSessions else { return false }
        active += 1
        return true
    }

    /// Gives back the slot `admit` took.
    func release() {
        condition.lock()
        active -= 1
        condition.unlock()
    }

    var activeSessions: Int {
        condition.lock()
        defer { condition.unlock() }
        return active
    }

    /// Promises `bytes` of disk to a migration if `free()` (measured under the same lock) less
    /// the bytes already promised covers them. Returns whether it did, and the two figures for
    /// the refusal's message. The caller gives the promise back with `releaseDisk` once its image
    /// is allocated (then `statvfs` counts it) or the migration ends.
    func promiseDisk(_ bytes: UInt64, free: () throws -> UInt64) -> (promised: Bool, free: UInt64, promisedToOthers: UInt64)? {
        condition.lock()
        defer { condition.unlock() }
        guard let available = try? free() else { return nil }
        let others = promisedDisk
        guard available >= others, available - others >= bytes else { return (false, available, others) }
        promisedDisk += bytes
        return (true, available, others)
    }

    func releaseDisk(_ bytes: UInt64) {
        condition.lock()
        promisedDisk -= min(bytes, promisedDisk)
        condition.unlock()
    }

    /// Announces that session `id` expects `extraStreams` page streams (stream indexes 1…n).
    func open(session id: UInt64, extraStreams: Int) {
        condition.lock()
        sessions[id] = Joining(extraStreams: extraStreams)
        condition.unlock()
    }

    /// Keeps a connection that sent `join` for its session; false (and the caller closes it)
    /// when no open session has that ID, the index is out of range or already joined.
    func deliver(_ join: Join, connection: FramedConnection) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        let index = Int(join.streamIndex)
        guard var session = sessions[join.sessionID], !session.taken, index >= 1, index <= session.extraStreams,
              session.joined[index] == nil else { return false }
        session.joined[index] = connection
        sessions[join.sessionID] = session
        condition.broadcast()
        return true
    }

    /// Waits until every page stream of session `id` has joined and returns them by index.
    /// Throws after `timeout` seconds; the session stays open until `close`.
    func waitForStreams(session id: UInt64, timeout: Double) throws -> [(Int, FramedConnection)] {
        let deadline = Date(timeIntervalSinceNow: timeout)
        condition.lock()
        defer { condition.unlock() }
        while true {
            guard var session = sessions[id], !session.taken else {
                throw MigrationError(.transport, "session \(id) is not waiting for page streams", guest: .notHere)
            }
            if session.joined.count == session.extraStreams {
                let streams = session.joined.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
                session.joined = [:]
                session.taken = true
                sessions[id] = session
                return streams
            }
            if !condition.wait(until: deadline) {
                let missing = (1...session.extraStreams).filter { session.joined[$0] == nil }.map(String.init)
                throw MigrationError(.transport, "page stream(s) \(missing.joined(separator: ", ")) did not join within \(Int(timeout)) s", guest: .notHere)
            }
        }
    }

    /// Forgets session `id`; connections it never took are closed.
    func close(session id: UInt64) {
        condition.lock()
        let leftover = sessions.removeValue(forKey: id)
        condition.unlock()
        for connection in leftover?.joined.values ?? [:].values { connection.close() }
    }
}
