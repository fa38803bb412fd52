import FerryProtocol
import FerrySystem
import FerryTransport
import Logging

/// The source's side of a resume (Protocol.md section 8): reconnecting to the destination with
/// bounded attempts, and the pages to send again.
extension SourceAgent {
    /// A control connection that came back, with the destination's `RESUME_STATE`.
    struct Reconnection {
        let connection: FramedConnection
        let held: HeldPages
        let attempts: Int
    }

    /// Connects again (the first attempt at once, then with doubling waits) until an attempt gets
    /// through: `RESUME`, the `RESUME_STATE` frames, and new page streams for `streamer`.
    /// `announce(attempt, why)` runs before each attempt, `why` being the last failure. Throws at once on anything but a transport
    /// failure (an ABORT, a malformed answer), and after the last attempt. `phase` names what was
    /// lost in the last error (pre-copy's round by default).
    func reconnect(
        sessionID: UInt64, token: SessionToken, pageCount: Int, lostRound: Int, streamer: SourceStreams,
        lost: MigrationError, phase: String? = nil,
        announce: (Int, MigrationError) -> Void
    ) throws -> Reconnection {
        let start = MonotonicClock.now()
        var lastError = lost
        for attempt in 1...max(options.reconnectAttempts, 1) {
            if attempt > 1 { MonotonicClock.sleep(seconds: Self.backoff(attempt: attempt, options: options)) }
            try options.cancellation.check(during: "reconnecting after round \(lostRound)", guest: .source)
            announce(attempt, lastError)
            do {
                let stream = try TCPStream.connect(options.destination, timeoutMs: options.connectTimeoutMs)
                // RESUME_STATE comes at once from a destination that is there: a silent one is
                // behind the same partition.
                try stream.setReceiveTimeout(ms: min(options.replyTimeoutMs, options.stallTimeoutMs))
                try stream.setSendTimeout(ms: options.stallTimeoutMs)
                let connection = FramedConnection(stream)
                do {
                    try connection.authenticate(asClient: options.security)
                    try connection.send(
                        Resume(
                            sessionID: sessionID, sessionToken: token, pageCount: UInt64(pageCount),
                            round: UInt32(lostRound)))
                    var frames: [ResumeState] = []
                    for _ in 0..<HeldPages.frameCount(pageCount: pageCount) {
                        frames.append(try connection.receive(ResumeState.self))
                    }
                    let held = try HeldPages(frames: frames, pageCount: pageCount, round: UInt32(lostRound))
                    try stream.setReceiveTimeout(ms: options.replyTimeoutMs)
                    try streamer.reattach(
                        control: connection, endpoint: options.destination, sessionID: sessionID, token: token,
                        options: options)
                    return Reconnection(connection: connection, held: held, attempts: attempt)
                } catch {
                    connection.close()
                    throw error
                }
            } catch {
                lastError = MigrationError.wrap(error, during: "resuming after round \(lostRound)", guest: .source)
                streamer.closeAll()
                // Only a connection that fails again is worth another attempt.
                if lastError.code != .transport { throw lastError }
            }
        }
        throw MigrationError(
            .transport,
            "lost the connection to \(options.destination) during \(phase ?? "pre-copy round \(lostRound)") and could not resume in \(options.reconnectAttempts) attempt(s) over \(Int(MonotonicClock.seconds(since: start).rounded())) s (last: \(lastError.message)); check the network and that the destination still runs, or use more --reconnect-attempts",
            guest: .source)
    }

    /// Seconds to wait before attempt `attempt` (≥ 2): `reconnectBackoff`, doubling, at most
    /// `reconnectBackoffMax`.
    static func backoff(attempt: Int, options: SourceOptions) -> Double {
        min(
            options.reconnectBackoffMaxSeconds,
            options.reconnectBackoffSeconds * Double(1 << min(max(attempt - 2, 0), 30)))
    }

    /// Adds to `pending` (which already holds the pages dirtied since the last harvest) the pages
    /// the destination must get again after a resume: those it does not hold intact, and those of
    /// the lost round (`lostRound`: the pages that round was to send) whose copy of that round did
    /// not arrive intact (an older copy may be held, but the page changed since).
    static func addPagesToResend(to pending: inout DirtyBitmap, held: HeldPages, lostRound: DirtyBitmap) {
        let heldWords = held.held.words
        let current = held.current.words
        let lost = lostRound.words
        pending.withUnsafeMutableWords { words in
            for index in 0..<words.count { words[index] |= ~heldWords[index] | (lost[index] & ~current[index]) }
        }
    }
}
