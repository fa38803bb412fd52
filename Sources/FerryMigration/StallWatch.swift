import FerrySystem
import FerryTransport
import Foundation

/// Notices a destination that stopped taking data during pre-copy, within `--stall-timeout`.
///
/// A write timeout (`SO_SNDTIMEO`) is not enough: it restarts whenever a write makes any
/// progress, and a stopped receiver's kernel still lets a little through now and then (on this
/// machine a SIGSTOPped destination let one 64 KiB write through after 10 s, so a 10 s write
/// timeout never fired in 24 s). What does not move is the peer's acknowledgement: this watch
/// samples, for each connection, the bytes the peer has acknowledged (`TCP_INFO`) and the bytes
/// still queued; a connection with data queued whose acknowledged count has not moved for the
/// limit is stalled, and every watched connection is closed, so the blocked writer (or the wait
/// for `ROUND_ACK`) fails at once and pre-copy resumes on new connections.
///
/// `@unchecked Sendable`: the mutable state is guarded by `condition`.
final class StallWatch: @unchecked Sendable {
    let limitMs: Int
    private let condition = MonotonicCondition()
    private var connections: [FramedConnection] = []
    private var progress: [ObjectIdentifier: (acknowledged: UInt64, at: UInt64)] = [:]
    private var stopped = false
    private var stall: String?
    private let finished = DispatchSemaphore(value: 0)

    init(limitMs: Int) {
        self.limitMs = max(1, limitMs)
        let thread = Thread { [self] in
            run()
            finished.signal()
        }
        thread.name = "ferry-stall-watch"
        thread.start()
    }

    /// Watches `connections` from now on (the page streams of the current attempt; none during
    /// the blackout, which has its own deadline). Clears an earlier stall.
    func watch(_ connections: [FramedConnection]) {
        condition.withLock {
            self.connections = connections
            progress = [:]
            stall = nil
            condition.broadcast()
        }
    }

    /// Ends the watch and waits for its thread.
    func stop() {
        condition.withLock {
            stopped = true
            condition.broadcast()
        }
        finished.wait()
    }

    /// Why the watch closed the connections, if it did since the last `watch`.
    var stallReason: String? {
        condition.withLock { stall }
    }

    private func run() {
        let intervalNs = UInt64(min(max(limitMs / 4, 10), 500)) * 1_000_000
        // The lock is held throughout but for the waits and the closing of stalled connections.
        while let stalled = condition.withLock({ () -> [FramedConnection]? in
            while !stopped {
                condition.wait(untilNanoseconds: MonotonicClock.now() &+ intervalNs)
                if stopped { break }
                guard stall == nil, let stalled = firstStalled() else { continue }
                stall = stalled
                return connections
            }
            return nil
        }) {
            for connection in stalled { connection.close() }
        }
    }

    /// The first connection whose queued data has not been acknowledged for the limit, described.
    private func firstStalled() -> String? {
        let now = MonotonicClock.now()
        for connection in connections where !connection.stream.isClosed {
            let key = ObjectIdentifier(connection)
            let queued = connection.stream.unacknowledgedBytes
            guard let acknowledged = connection.stream.acknowledgedBytes else { continue }
            guard queued > 0, let last = progress[key], last.acknowledged == acknowledged else {
                progress[key] = (acknowledged, now)
                continue
            }
            let waitedMs = Int((now &- last.at) / 1_000_000)
            if waitedMs >= limitMs {
                return
                    "the destination (\(connection.peerDescription)) acknowledged nothing for \(waitedMs) ms with \(queued) bytes waiting (--stall-timeout \(limitMs) ms): it stopped reading, or the network between the hosts is down"
            }
        }
        return nil
    }
}
