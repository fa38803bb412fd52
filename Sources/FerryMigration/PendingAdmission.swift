import FerrySystem
import FerryTransport
import Foundation

/// Which of a destination's new connections may keep waiting for their first frame (and, with a
/// key, their authentication): the pre-authentication limits of Protocol.md section 9.5, as
/// OpenSSH has them with `MaxStartups` and `PerSourceMaxStartups`. A pure policy, no I/O: the
/// dispatcher tells it of each arrival and departure and closes what it says to close.
///
/// - Every new connection is taken. A connection is *pending* from its accept until it has
///   authenticated (with a key) or sent its first frame (without); `leave` ends that.
/// - At most `perPeer` connections from one peer address are pending: a newcomer from a peer
///   that has that many evicts that peer's longest-waiting one.
/// - At most `total` are pending: a newcomer then evicts the longest-waiting connection of the
///   peer that has the most pending (ties: the one that has waited longest overall).
/// - A connection that is still pending `deadline` seconds after its accept is closed; this is
///   a total deadline, which bytes that trickle in do not extend (`ConnectionDeadlines`).
///
/// A connection whose whole first frame already waits in its socket (its thread has not read
/// it yet) is never evicted: it cannot be a slow dripper. One that sent a whole `AUTH_HELLO`
/// and is in the authentication exchange (a few round trips) is evicted only when every other
/// candidate did as well.
///
/// Early drop evicts the old, not the new: a real source, `RESUME` or handoff `STATUS_QUERY`
/// needs one round trip (a few with a key) to leave the pool, and it can only be evicted after
/// `perPeer` later arrivals from its own address, or `total` from others, arrived in that
/// time. A flood of slow or silent connections therefore delays nobody who answers promptly;
/// refusing newcomers instead (OpenSSH's random early drop) would let such a flood lock out every
/// newcomer, the real source included. The oldest, rather than a random old one, is evicted
/// because that gives every connection the longest guaranteed window.
struct PendingAdmission {
    var total: Int
    var perPeer: Int
    /// Seconds from accept to the first frame (with a key: to the end of authentication and the
    /// first frame after it).
    var deadline: Double

    init(total: Int = 64, perPeer: Int = 16, deadline: Double = 5) {
        self.total = total
        self.perPeer = perPeer
        self.deadline = deadline
    }

    private struct Entry {
        let id: UInt64
        let peer: String
        /// It sent a whole `AUTH_HELLO` and is in the authentication exchange.
        var progressing = false
    }
    /// In order of arrival: the first of a peer's is its longest-waiting.
    private var entries: [Entry] = []
    private var nextID: UInt64 = 1

    /// Connections pending now.
    var count: Int { entries.count }

    func count(peer: String) -> Int { entries.reduce(0) { $0 + ($1.peer == peer ? 1 : 0) } }

    /// Takes a new connection from `peer`; returns its id and the pending connection it evicts
    /// (the caller closes that one), if any. `ready(id)` tells whether a connection's whole first
    /// frame has arrived (it is about to leave): such a one is passed over, and when every
    /// candidate is ready none is evicted (the pool then holds one more, briefly).
    mutating func arrive(peer: String, ready: (UInt64) -> Bool = { _ in false }) -> (id: UInt64, evicted: UInt64?) {
        var evicted: UInt64?
        /// The longest-waiting candidate, those that made no progress first.
        func victim(_ candidate: (Entry) -> Bool) -> Int? {
            entries.firstIndex { candidate($0) && !$0.progressing && !ready($0.id) }
                ?? entries.firstIndex { candidate($0) && !ready($0.id) }
        }
        if count(peer: peer) >= perPeer {
            if let index = victim({ $0.peer == peer }) {
                evicted = entries.remove(at: index).id
            }
        } else if entries.count >= total {
            var counts: [String: Int] = [:]
            for entry in entries { counts[entry.peer, default: 0] += 1 }
            // The busiest peers first; within a peer, the longest-waiting.
            for most in Set(counts.values).sorted(by: >) {
                if let index = victim({ counts[$0.peer] == most }) {
                    evicted = entries.remove(at: index).id
                    break
                }
            }
        }
        let id = nextID
        nextID += 1
        entries.append(Entry(id: id, peer: peer))
        return (id, evicted)
    }

    /// Connection `id` sent a whole `AUTH_HELLO`: it is evicted only after those that did not.
    mutating func progress(_ id: UInt64) {
        if let index = entries.firstIndex(where: { $0.id == id }) { entries[index].progressing = true }
    }

    /// Ends the wait of connection `id`; false when it is no longer pending (it was evicted:
    /// the caller drops it).
    mutating func leave(_ id: UInt64) -> Bool {
        guard let index = entries.firstIndex(where: { $0.id == id }) else { return false }
        entries.remove(at: index)
        return true
    }

    /// The address part of a `peerDescription` (`127.0.0.1:4000` → `127.0.0.1`, `[::1]:4000` → `::1`).
    static func peerAddress(_ description: String) -> String {
        if description.hasPrefix("["), let end = description.firstIndex(of: "]") {
            return String(description[description.index(after: description.startIndex)..<end])
        }
        guard let colon = description.lastIndex(of: ":") else { return description }
        return String(description[..<colon])
    }
}

/// Closes connections whose total deadline passed, on a thread of its own: a deadline that
/// bytes trickling in cannot extend, unlike a receive timeout (which restarts with every
/// `recv`). Closing only shuts the socket down (`TCPStream.close`), so it is safe while
/// another thread reads it: that read returns at once.
/// `@unchecked Sendable`: the mutable state is guarded by `condition`.
final class ConnectionDeadlines: @unchecked Sendable {
    private let condition = MonotonicCondition()
    private var armed: [UInt64: (deadline: UInt64, stream: TCPStream)] = [:]
    private var nextToken: UInt64 = 1
    private var running = false
    private var stopped = false

    /// Closes `stream` `seconds` from now unless `disarm`ed first; returns the token for `disarm`.
    func arm(_ stream: TCPStream, seconds: Double) -> UInt64 {
        let deadline = MonotonicClock.now() &+ UInt64(max(0, seconds) * 1e9)
        return condition.withLock {
            let token = nextToken
            nextToken += 1
            armed[token] = (deadline, stream)
            if stopped {
                stream.close()
            } else if !running {
                running = true
                let thread = Thread { [self] in reap() }
                thread.name = "ferry-deadlines"
                thread.start()
            }
            condition.broadcast()
            return token
        }
    }

    /// Cancels a deadline; false when it had passed already (the stream was closed).
    @discardableResult
    func disarm(_ token: UInt64) -> Bool {
        condition.withLock { armed.removeValue(forKey: token) != nil }
    }

    /// Closes every armed stream now and ends the thread.
    func stop() {
        let streams = condition.withLock {
            stopped = true
            let streams = armed.values.map(\.stream)
            armed = [:]
            condition.broadcast()
            return streams
        }
        for stream in streams { stream.close() }
    }

    private func reap() {
        condition.withLock {
            while !stopped {
                let now = MonotonicClock.now()
                let expired = armed.filter { $0.value.deadline <= now }
                for (token, entry) in expired {
                    armed.removeValue(forKey: token)
                    entry.stream.close()
                }
                if let next = armed.values.map(\.deadline).min() {
                    condition.wait(untilNanoseconds: next)
                } else {
                    condition.wait()
                }
            }
        }
    }
}
