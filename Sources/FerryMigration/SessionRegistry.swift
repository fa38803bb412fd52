import FerryProtocol
import FerrySystem
import FerryTransport

/// A new connection that names a living session by its `session_id` and `session_token` in its
/// first frame (`RESUME`, or a resolving `STATUS_QUERY`; the frame type says what it wants),
/// waiting for that session to take it.
struct Reattachment: Sendable {
    let connection: FramedConnection
    let type: FrameType
    /// The first frame's payload (a copy: the connection's buffer is reused by its next receive).
    let payload: [UInt8]
}

/// The migrations a destination is receiving, the page streams joining them, and the control
/// connections that come back to them.
///
/// The dispatcher admits a source only while fewer than `maxSessions` migrations run (`admit`),
/// and hands every connection that opened with `JOIN` to `deliver`, which keeps it for the session
/// it names until that session takes its streams (`waitForStreams`). After a resume
/// (`reopenStreams`) the session takes a second set of JOINs.
///
/// Every connection that names a session must also present that session's token (Protocol.md
/// section 6): a `JOIN` or reattaching connection with the wrong one is treated exactly like one
/// naming no session, and changes nothing in it.
///
/// Reattaching: a connection whose first frame names a session (`RESUME`) goes to `reattach`,
/// which keeps it (the newest one per session) until the session takes it (`waitForReattachment`)
/// and first calls the session's `onReattach`, which may refuse it (a session past pre-copy
/// cannot resume) or drop the session's old connections (a resuming source has given up on them;
/// the session drops them at once instead of waiting for a timeout).
/// `@unchecked Sendable`: all state is guarded by `condition`.
final class SessionRegistry: @unchecked Sendable {
    let maxSessions: Int
    /// Every migration's handoff state, for `STATUS` and for sources that come back to resolve one.
    let handoffs = HandoffBook()
    private let condition = MonotonicCondition()
    private var active = 0
    private var sessions: [UInt64: Joining] = [:]
    /// Disk bytes promised to admitted migrations whose image is not allocated yet (their space
    /// does not show in `statvfs` yet, so a second check would hand it out again).
    private var promisedDisk: UInt64 = 0
    /// Sessions whose HELLO came without a key and that have not claimed a slot yet (tentative:
    /// see `DestinationSession`); at most `maxTentative`.
    private var tentative = 0
    /// Tentative sessions a destination keeps at a time; a HELLO beyond them is refused `busy`.
    var maxTentative: Int { maxSessions + 8 }

    private struct Joining {
        /// `ACCEPT.session_token`: what a JOIN or a reattaching connection must present.
        var token: SessionToken
        var extraStreams: Int
        var joined: [Int: FramedConnection] = [:]
        /// The session has its streams; later JOINs are strangers.
        var taken = false
        /// A connection that came back for this session, not taken yet.
        var reattached: Reattachment?
        var onReattach: (@Sendable (FrameType) -> Bool)?
    }

    init(maxSessions: Int) {
        precondition(maxSessions >= 1, "a destination receives at least one migration at a time")
        self.maxSessions = maxSessions
    }

    /// Takes a slot for a new migration; false when `maxSessions` already run.
    func admit() -> Bool {
        condition.withLock {
            guard active < maxSessions else { return false }
            active += 1
            return true
        }
    }

    enum TentativeAdmission { case admitted, busy, crowded }

    /// Takes a tentative place for a HELLO that came without a key: `.busy` when every slot is
    /// held by an established session, `.crowded` when `maxTentative` are tentative already.
    func admitTentative() -> TentativeAdmission {
        condition.withLock {
            guard active < maxSessions else { return .busy }
            guard tentative < maxTentative else { return .crowded }
            tentative += 1
            return .admitted
        }
    }

    /// Turns a tentative place into a slot (the session is established); false, leaving it
    /// tentative, when `maxSessions` are established already.
    func establish() -> Bool {
        condition.withLock {
            guard active < maxSessions else { return false }
            active += 1
            tentative -= 1
            return true
        }
    }

    /// Undoes `establish` (a later claim failed): the session is tentative again.
    func unestablish() {
        condition.withLock {
            active -= 1
            tentative += 1
        }
    }

    /// Gives back a tentative place that was never established.
    func endTentative() {
        condition.withLock { tentative -= 1 }
    }

    var tentativeSessions: Int {
        condition.withLock { tentative }
    }

    /// Disk bytes promised to migrations now.
    var promisedDiskBytes: UInt64 {
        condition.withLock { promisedDisk }
    }

    /// Free bytes `free()` reports less those promised to others, without promising any.
    func unpromisedDisk(free: () throws -> UInt64) -> UInt64? {
        condition.withLock {
            guard let available = try? free() else { return nil }
            return available - min(available, promisedDisk)
        }
    }

    /// Gives back the slot `admit` took.
    func release() {
        condition.withLock { active -= 1 }
    }

    var activeSessions: Int {
        condition.withLock { active }
    }

    /// Promises `bytes` of disk to a migration if `free()` (measured under the same lock) less
    /// the bytes already promised covers them. Returns whether it did, and the two figures for
    /// the refusal's message. The caller gives the promise back with `releaseDisk` once its image
    /// is allocated (then `statvfs` counts it) or the migration ends.
    func promiseDisk(_ bytes: UInt64, free: () throws -> UInt64) -> (
        promised: Bool, free: UInt64, promisedToOthers: UInt64
    )? {
        condition.withLock {
            guard let available = try? free() else { return nil }
            let others = promisedDisk
            guard available >= others, available - others >= bytes else { return (false, available, others) }
            promisedDisk += bytes
            return (true, available, others)
        }
    }

    func releaseDisk(_ bytes: UInt64) {
        condition.withLock { promisedDisk -= min(bytes, promisedDisk) }
    }

    /// Announces that session `id` expects `extraStreams` page streams (stream indexes 1…n).
    /// `onReattach` runs (on the dispatcher's thread) when a connection comes back for it with
    /// the session's token, with the type of its first frame; it returns whether the session
    /// takes one now (false: the connection is closed).
    func open(
        session id: UInt64, token: SessionToken, extraStreams: Int, onReattach: (@Sendable (FrameType) -> Bool)? = nil
    ) {
        condition.withLock { sessions[id] = Joining(token: token, extraStreams: extraStreams, onReattach: onReattach) }
    }

    /// Lets session `id` take a new set of page streams (after a resume); streams it never took
    /// are closed.
    func reopenStreams(session id: UInt64) {
        let leftover = condition.withLock {
            let leftover = sessions[id]?.joined.values.map { $0 } ?? []
            sessions[id]?.joined = [:]
            sessions[id]?.taken = false
            return leftover
        }
        for connection in leftover { connection.close() }
    }

    /// Keeps `connection`, whose first frame named session `id` with `token`, for that session;
    /// false (and the caller closes it) when no open session has that ID and token. A wrong
    /// token changes nothing: `onReattach` (which drops the session's live connections) runs, and
    /// a waiting connection is replaced, only after the token matched.
    /// A newer connection replaces one that is still waiting: a source that retries has given
    /// up on its earlier attempts (they may have queued while this host was stopped), and it
    /// waits for an answer on the newest one only.
    func reattach(session id: UInt64, token: SessionToken, _ reattachment: Reattachment) -> Bool {
        let named = condition.withLock { sessions[id].flatMap { $0.token.matches(token) ? $0 : nil } }
        guard let session = named else { return false }
        // Before the session can take the new connection: closing afterwards could close it.
        if let onReattach = session.onReattach, !onReattach(reattachment.type) { return false }
        let replacing: Reattachment?? = condition.withLock {
            guard sessions[id] != nil else { return nil }
            let replaced = sessions[id]?.reattached
            sessions[id]?.reattached = reattachment
            condition.broadcast()
            return .some(replaced)
        }
        guard let replaced = replacing else { return false }
        replaced?.connection.close()
        return true
    }

    /// Wakes every waiter to look at its state again (a cancel).
    func wake() {
        condition.withLock { condition.broadcast() }
    }

    /// Waits up to `timeout` seconds for a connection to come back for session `id` and hands it
    /// over; nil after the timeout.
    /// A cancel (`wake` from its handler) ends the wait too (nil).
    func waitForReattachment(session id: UInt64, timeout: Double, cancellation: MigrationCancellation? = nil)
        -> Reattachment?
    {
        let deadline = MonotonicClock.deadline(afterSeconds: timeout)
        return condition.withLock {
            while true {
                if cancellation?.isCancelled == true { return nil }
                if let waiting = sessions[id]?.reattached {
                    sessions[id]?.reattached = nil
                    return waiting
                }
                if sessions[id] == nil || !condition.wait(untilNanoseconds: deadline) {
                    if let waiting = sessions[id]?.reattached {
                        sessions[id]?.reattached = nil
                        return waiting
                    }
                    return nil
                }
            }
        }
    }

    /// Keeps a connection that sent `join` for its session; false (and the caller closes it)
    /// when no open session has that ID and token, the index is out of range or already joined.
    func deliver(_ join: Join, connection: FramedConnection) -> Bool {
        let index = Int(join.streamIndex)
        return condition.withLock {
            guard var session = sessions[join.sessionID], session.token.matches(join.sessionToken), !session.taken,
                index >= 1, index <= session.extraStreams,
                session.joined[index] == nil
            else { return false }
            session.joined[index] = connection
            sessions[join.sessionID] = session
            condition.broadcast()
            return true
        }
    }

    /// Waits until every page stream of session `id` has joined and returns them by index.
    /// Throws after `timeout` seconds; the session stays open until `close`.
    func waitForStreams(session id: UInt64, timeout: Double, cancellation: MigrationCancellation? = nil) throws
        -> [(Int, FramedConnection)]
    {
        let deadline = MonotonicClock.deadline(afterSeconds: timeout)
        return try condition.withLock {
            while true {
                try cancellation.check(during: "the wait for the page streams", guest: .notHere)
                guard var session = sessions[id], !session.taken else {
                    throw MigrationError(.transport, "session \(id) is not waiting for page streams", guest: .notHere)
                }
                if session.reattached != nil {
                    // The source came back on a newer connection: it gave up on the attempt whose
                    // streams this waits for.
                    throw MigrationError(
                        .transport, "the source reconnected again before its page streams joined", guest: .notHere)
                }
                if session.joined.count == session.extraStreams {
                    let streams = session.joined.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
                    session.joined = [:]
                    session.taken = true
                    sessions[id] = session
                    return streams
                }
                if !condition.wait(untilNanoseconds: deadline) {
                    let missing = (1...session.extraStreams).filter { session.joined[$0] == nil }.map(String.init)
                    throw MigrationError(
                        .transport,
                        "page stream(s) \(missing.joined(separator: ", ")) did not join within \(Int(timeout)) s",
                        guest: .notHere)
                }
            }
        }
    }

    /// Forgets session `id`; connections it never took are closed.
    func close(session id: UInt64) {
        let leftover = condition.withLock { sessions.removeValue(forKey: id) }
        for connection in leftover?.joined.values ?? [:].values { connection.close() }
        leftover?.reattached?.connection.close()
    }
}
