import FerryProtocol
import FerrySystem
import FerryTransport

/// What a destination knows about each migration it received or is receiving: the state that
/// `STATUS` reports (Protocol.md 3.19–3.20, section 6), and the meeting point between a session that
/// lost its source after `VERIFIED` and the source's connection that comes back to resolve it.
///
/// A session in `awaiting-commit` whose control connection fails does not discard: it calls
/// `awaitResolver`, and the dispatcher hands it the next connection whose `STATUS_QUERY` names
/// that session with the resolve flag (`offerResolver`). That connection then carries `COMMIT`
/// (the guest resumes here) or `ABORT` (the source kept it). Finished migrations are remembered
/// (the most recent `historyLimit`), so that a source whose `RESUMED` was lost learns that its
/// guest runs here.
///
/// Each record keeps its session's token (`ACCEPT.session_token`): only a query that presents it
/// may resolve, confirm or take the session's connection, and only such a query, or one over a
/// connection authenticated with the shared key, learns session ids and digests (`statuses`).
/// `@unchecked Sendable`: all state is guarded by `condition`.
final class HandoffBook: @unchecked Sendable {
    static let historyLimit = Int(Status.maxTotal)

    private struct Record {
        var sessionID: UInt64
        var token: SessionToken
        var guestName: String
        var pageCount: UInt64
        var state: HandoffState
        var digest: UInt64 = 0
        var message = ""
        var changedAt = MonotonicClock.now()
        /// The connection the session reads from now; closed to wake the session when a
        /// resolver arrives while it still waits on a connection the network silently lost.
        var control: FramedConnection?
        /// A connection handed over by the dispatcher, not yet taken by the session.
        var resolver: FramedConnection?
        /// The source learned that the guest runs here (it read `RESUMED`, or a `STATUS` saying so).
        var confirmed = false
        /// The message while the session's state holds, read live (post-copy's progress).
        var live: (@Sendable () -> String)?
    }

    private let condition = MonotonicCondition()
    private var records: [UInt64: Record] = [:]
    /// Session IDs, oldest first.
    private var order: [UInt64] = []

    /// Records a new migration in state `receiving`.
    func begin(session: UInt64, token: SessionToken, guestName: String, pageCount: UInt64, control: FramedConnection) {
        condition.withLock {
            records[session] = Record(
                sessionID: session, token: token, guestName: guestName, pageCount: pageCount, state: .receiving,
                control: control)
            order.append(session)
            // Forget the oldest finished migrations beyond the limit; running ones are never forgotten.
            var excess = order.count - Self.historyLimit
            if excess > 0 {
                order.removeAll { id in
                    guard excess > 0, let record = records[id], record.state == .resumed || record.state == .discarded
                    else { return false }
                    records[id] = nil
                    excess -= 1
                    return true
                }
            }
        }
    }

    /// Moves session `id` to `state`. Leaving `awaiting-commit` closes a resolver nobody took.
    func set(session id: UInt64, _ state: HandoffState, digest: UInt64? = nil, message: String = "") {
        let stray: FramedConnection? = condition.withLock {
            guard var record = records[id] else { return nil }
            record.state = state
            if let digest { record.digest = digest }
            record.message = message
            record.live = nil
            record.changedAt = MonotonicClock.now()
            let stray = state == .awaitingCommit ? nil : record.resolver
            if state != .awaitingCommit { record.resolver = nil }
            if state == .discarded { record.control = nil }
            records[id] = record
            condition.broadcast()
            return stray
        }
        stray?.close()
    }

    /// Session `id`'s `run()` is over (its guest resumed here or was discarded): the record keeps
    /// only what `STATUS` reports. Its connections are dropped, so their descriptors and the
    /// buffers grown to their largest frame go with the session (issue 11: the history of 256
    /// records held 256 connections); a resolver nobody took is closed.
    /// `forget`: remove the record altogether (a keyless session that never became established:
    /// a stranger's HELLO must not push real migrations out of the history that `STATUS` answers from).
    func end(session id: UInt64, forget: Bool = false) {
        let stray = condition.withLock {
            let stray = records[id]?.resolver
            records[id]?.control = nil
            records[id]?.resolver = nil
            records[id]?.live = nil
            if forget {
                records[id] = nil
                order.removeAll { $0 == id }
            }
            condition.broadcast()
            return stray
        }
        stray?.close()
    }

    /// Until session `id`'s state next changes (or it ends), `STATUS` says what `live` returns
    /// when asked, instead of a message fixed in advance.
    func follow(session id: UInt64, with live: @escaping @Sendable () -> String) {
        condition.withLock { records[id]?.live = live }
    }

    /// The session now reads from `connection` (after a resume).
    func replaceControl(session id: UInt64, with connection: FramedConnection) {
        condition.withLock { records[id]?.control = connection }
    }

    func state(of id: UInt64) -> HandoffState {
        condition.withLock { records[id]?.state ?? .unknown }
    }

    /// Whether `token` is session `id`'s (compared in constant time); false for an unknown
    /// session and for `.none`.
    func holds(_ token: SessionToken, session id: UInt64) -> Bool {
        condition.withLock { records[id]?.token.matches(token) ?? false }
    }

    /// The answer to `query`, newest first (at most `Status.maxTotal` frames); a query that
    /// matches nothing gets one `STATUS` of state `unknown`.
    ///
    /// Who learns what (Protocol.md 3.20): a record's session id and digest go to an asker that
    /// presented that session's token, or whose connection proved the shared key
    /// (`authenticated`). Anyone else gets 0 for both, except that a query naming a session id
    /// has that id echoed (it knew it already) — still with digest 0.
    func statuses(for query: StatusQuery, authenticated: Bool) -> [Status] {
        let (now, matching) = condition.withLock {
            let now = MonotonicClock.now()
            var matching: [Record] = []
            for id in order.reversed() {
                guard let record = records[id] else { continue }
                if query.sessionID != 0 && record.sessionID != query.sessionID { continue }
                if !query.guestName.isEmpty && record.guestName != query.guestName { continue }
                matching.append(record)
                if matching.count == Int(Status.maxTotal) { break }
            }
            return (now, matching)
        }
        guard !matching.isEmpty else {
            return [
                Status(
                    state: .unknown, sessionID: query.sessionID, guestName: query.guestName,
                    message: "this destination knows no such migration: it does not run that guest")
            ]
        }
        let total = UInt16(matching.count)
        return matching.enumerated().map { index, record in
            let revealed = authenticated || record.token.matches(query.sessionToken)
            return Status(
                index: UInt16(index), total: total, state: record.state,
                sessionID: revealed || query.sessionID != 0 ? record.sessionID : 0,
                digest: revealed ? record.digest : 0, pageCount: record.pageCount,
                ageSeconds: UInt32(min(Double(now &- record.changedAt) / 1e9, Double(UInt32.max))),
                guestName: record.guestName,
                message: record.live?() ?? (record.message.isEmpty ? Self.meaning(record.state) : record.message))
        }
    }

    /// The dispatcher's side: `connection` asked to resolve session `id` with `token`. When the
    /// token is the session's and the session awaits its COMMIT, keeps the connection for it,
    /// closes the one the session waits on (it may have been lost silently) and returns true;
    /// else false (nothing changes), and the caller closes it.
    func offerResolver(session id: UInt64, token: SessionToken, connection: FramedConnection) -> Bool {
        let offered: (replaced: FramedConnection?, interrupted: FramedConnection?)? = condition.withLock {
            guard var record = records[id], record.token.matches(token), record.state == .awaitingCommit else {
                return nil
            }
            let replaced = record.resolver
            let interrupted = record.control
            record.resolver = connection
            records[id] = record
            condition.broadcast()
            return (replaced, interrupted)
        }
        guard let offered else { return false }
        offered.replaced?.close()
        offered.interrupted?.close()
        return true
    }

    /// The session's side: waits until a resolver arrives for session `id` (returned, and from
    /// then on the session's control connection) or `deadline` (monotonic ns) passes (nil).
    /// A cancel (`wake` from its handler) ends the wait too (nil).
    func awaitResolver(session id: UInt64, deadline: UInt64, cancellation: MigrationCancellation? = nil)
        -> FramedConnection?
    {
        condition.withLock {
            while true {
                if cancellation?.isCancelled == true { return nil }
                guard var record = records[id], record.state == .awaitingCommit else { return nil }
                if let resolver = record.resolver {
                    record.resolver = nil
                    record.control = resolver
                    records[id] = record
                    return resolver
                }
                if MonotonicClock.now() >= deadline { return nil }
                condition.wait(untilNanoseconds: deadline)
            }
        }
    }

    /// Wakes every waiter to look at its state again (a cancel).
    func wake() {
        condition.withLock { condition.broadcast() }
    }

    /// The source of `id` asked (resolve, presenting `token`) and was told that its guest runs
    /// here: as good as its `DONE`. Wakes a session waiting for `DONE` on a connection that may be
    /// dead. Nothing happens for a token that is not the session's.
    func confirm(session id: UInt64, token: SessionToken) {
        let waiting: FramedConnection? = condition.withLock {
            guard var record = records[id], record.token.matches(token), record.state == .resumed else { return nil }
            record.confirmed = true
            let waiting = record.control
            records[id] = record
            condition.broadcast()
            return waiting
        }
        waiting?.close()
    }

    /// Waits until `confirm(session:)` was called for `id` or `deadline` (monotonic ns) passes.
    func awaitConfirmation(session id: UInt64, deadline: UInt64) {
        condition.withLock {
            while records[id]?.confirmed == false {
                if MonotonicClock.now() >= deadline { return }
                condition.wait(untilNanoseconds: deadline)
            }
        }
    }

    static func meaning(_ state: HandoffState) -> String {
        switch state {
        case .unknown: return "no such migration here"
        case .receiving: return "pages are arriving; the guest does not run here"
        case .awaitingCommit: return "verified; the guest does not run here until the source's COMMIT arrives"
        case .resumed: return "the guest was resumed here"
        case .discarded: return "discarded before COMMIT; the guest never ran here"
        }
    }
}
