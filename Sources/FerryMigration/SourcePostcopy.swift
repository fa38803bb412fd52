import FerryProtocol
import FerrySystem
import FerryTransport
import Foundation
import Logging

/// What the switch to post-copy hands to the push.
struct PostcopySwitch {
    /// The post-copy round: the number its PAGE_BATCHes carry.
    var round: UInt32
    /// The pages the destination lacks (dirtied since they were sent, or never sent).
    var stale: DirtyBitmap
    /// The pages the last pre-copy round sent: with `stale`, which pages are hot (`PushOrder`).
    var lastRound: DirtyBitmap
    var stateDigest: UInt64
    var switchedAt: UInt64
}

/// The push's books: which stale pages are still to send, and what went how.
struct PostcopyPush {
    let round: UInt32
    let stale: DirtyBitmap
    var remaining: DirtyBitmap
    var left: Int
    var order: PushOrder
    var batch: DirtyBitmap
    var requests = 0
    var summary = PostcopyReport()
    /// The digest COMPLETE carried, once it was sent.
    var completed: UInt64?
    /// `--max-bandwidth`, held over every byte of the push, the pages a vCPU asked for included
    /// (they go first once the limit allows a batch: at most one batch's time, 64 pages, later).
    var limiter: BandwidthLimiter?
    /// No batch goes before then (MonotonicClock).
    private var pausedUntil: UInt64 = 0
    /// Connections dropped and resumed because a frame from the destination arrived damaged.
    var damageResumes = 0

    init(switched: PostcopySwitch, pageCount: Int) {
        round = switched.round
        stale = switched.stale
        remaining = switched.stale
        left = switched.stale.popcount()
        order = PushOrder(stale: switched.stale, lastRound: switched.lastRound)
        batch = DirtyBitmap(count: pageCount)
        summary.afterRounds = Int(switched.round)
        summary.stalePages = left
        summary.hotPages = order.hot.popcount()
    }

    /// Sends the remaining pages, those asked for first, in batches of at most
    /// `postcopyBatchPages`; between batches the push waits while the bytes `link` says are
    /// unacknowledged exceed `budget`'s limit, so that an answer does not queue behind it.
    mutating func sendRemaining(
        _ pusher: PageStreamer, requests: PostcopyRequests, link: () -> (queued: Int, acknowledged: UInt64?)
    ) throws {
        let pageCount = stale.count
        var budget = PushQueueBudget()
        while left > 0 {
            if let failure = requests.failure { throw failure }
            let now = MonotonicClock.now()
            if pausedUntil > now {
                // --max-bandwidth holds every byte, the pages asked for too (they go first after it).
                MonotonicClock.sleep(seconds: Double(pausedUntil - now) / 1e9)
                continue
            }
            // Taken out of `remaining` as they are read: a page asked for twice goes, and is
            // counted, once (counted twice, `left` ran ahead of the pages really left).
            var pages: [Int] = []
            for page in requests.take() where page < pageCount && remaining[page] {
                remaining.clear(page)
                pages.append(page)
            }
            let urgent = !pages.isEmpty
            if !urgent {
                let (queued, acknowledged) = link()
                if let acknowledged { budget.observe(acknowledged: acknowledged, at: MonotonicClock.now()) }
                if queued > budget.limit {
                    requests.waitForRequest(microseconds: 200)
                    continue
                }
                pages = order.next(SourceSession.postcopyBatchPages, of: remaining)
            }
            for page in pages {
                remaining.clear(page)
                batch.set(page)
            }
            defer { for page in pages { batch.clear(page) } }
            let sent = try pusher.send(pages: batch, round: round)
            if let due = limiter?.account(Int(sent.wireBytes)), due > 0 {
                pausedUntil = MonotonicClock.now() + UInt64(due * 1e9)
            }
            left -= pages.count
            if urgent { summary.requestedPages += pages.count } else { summary.pushedPages += pages.count }
        }
    }

    /// After a resume: what the destination does not hold of the stale pages is left to send.
    mutating func resume(held: DirtyBitmap) {
        remaining = stale
        remaining.withUnsafeMutableWords { words in
            for index in 0..<words.count { words[index] &= ~held.words[index] }
        }
        left = remaining.popcount()
        order.restart()
    }
}

/// The source's post-copy (Protocol.md section 11, docs/postcopy.md): the switch — the vCPUs
/// paused, the device state and the stale pages' list sent, the destination's VERIFIED of the
/// state, COMMIT and RESUMED, all under the blackout's deadline as a pre-copy blackout — then
/// the push: every stale page, those the guest asks for first, then COMPLETE, VERIFIED, DONE.
extension SourceSession {
    /// Pauses the guest and hands it over without its stale pages. Before COMMIT any failure
    /// resumes the guest here, as a pre-copy blackout's does.
    func postcopySwitch() throws -> PostcopySwitch {
        guard let tracker else { preconditionFailure("the switch needs the tracker") }
        blackoutStart = MonotonicClock.now()
        stallWatch.watch([])
        let deadline = BlackoutDeadline(limitMs: options.effectiveBlackoutTimeoutMs, connections: streamer.connections)
        notePausing()
        let pauseNanos = guest.pause()
        parts.pauseVcpusMs = (Double(pauseNanos) / 1e9).milliseconds
        do {
            let paused = MonotonicClock.now()
            try tracker.harvest(into: &precopyState.pending)
            let harvested = MonotonicClock.now()
            parts.finalHarvestMs = (Double(harvested &- paused) / 1e9).milliseconds
            let round = UInt32(precopyState.round)
            // The page streams end the round empty: post-copy's pages all travel on the control
            // connection, where the requests are answered.
            for stream in streamer.connections.dropFirst() {
                try stream.send(StreamRoundEnd(round: round, batches: 0, pages: 0))
            }
            let stateStart = MonotonicClock.now()
            let state = DeviceState(sections: try guest.deviceState())
            try connection.send(state)
            parts.cpuStateMs = MonotonicClock.seconds(since: stateStart).milliseconds
            let stateDigest = StateDigest.of(config: configPayload, deviceState: state.encodedPayload())
            let stale = precopyState.pending
            try connection.send(
                PostcopyBegin(round: round, pageCount: UInt64(pageCount), stateDigest: stateDigest, stale: stale.words))
            parts.finalSendMs = (Double(MonotonicClock.now() &- harvested) / 1e9).milliseconds
            let verifyStart = MonotonicClock.now()
            let verified = try connection.receive(Verified.self)
            parts.verifyMs = MonotonicClock.seconds(since: verifyStart).milliseconds
            parts.destinationVerifyMs = Double(verified.verifyMicroseconds) / 1000
            guard verified.ok else {
                throw MigrationError(
                    .verification, "the destination refused the switch to post-copy: \(verified.message)",
                    guest: .source)
            }
            if let shrunk = agent.imageShrank() { throw shrunk }
            try options.cancellation.passCommitPoint(during: "the switch to post-copy, before COMMIT", guest: .source)
            guard deadline.disarm() else { throw deadline.failure(during: "as VERIFIED arrived") }
            return PostcopySwitch(
                round: round, stale: stale, lastRound: precopyState.toSend, stateDigest: stateDigest,
                switchedAt: paused)
        } catch {
            deadline.disarm()
            guest.resume()
            throw blackoutFailed(error, deadline: deadline)
        }
    }

    /// COMMIT, then RESUMED: the destination runs the guest from here on; the source's copy
    /// stays paused, and is the only copy of the stale pages. RESUMED is awaited briefly; when
    /// it does not come, the destination is asked where the guest is, as after a pre-copy
    /// COMMIT (Protocol.md section 6): a lost COMMIT is sent again on the asking connection,
    /// which then carries the push.
    func postcopyHandoff(_ switched: PostcopySwitch) throws {
        try? connection.stream.setReceiveTimeout(ms: min(options.replyTimeoutMs, SourceAgent.resumedWaitMs))
        let commitStart = MonotonicClock.now()
        do {
            try connection.send(Commit())
        } catch {
            // The 16-byte COMMIT frame was not accepted by the kernel: the destination cannot have it.
            guest.resume()
            throw MigrationError.wrap(error, during: "commit", guest: .source)
        }
        report.guestLocation = .handedOverUnconfirmed
        report.rounds = Int(switched.round) + 1
        do {
            let resumed = try connection.receive(Resumed.self)
            try? connection.stream.setReceiveTimeout(ms: options.replyTimeoutMs)
            parts.destinationResumeMs = Double(resumed.resumeMicroseconds) / 1000
        } catch {
            try resolvePostcopyHandoff(after: error, switched)
        }
        let end = MonotonicClock.now()
        parts.commitResumeMs = (Double(end &- commitStart) / 1e9).milliseconds
        report.downtimeMs = (Double(end &- blackoutStart) / 1e9).milliseconds
        noteResumedThere(at: end)
        report.guestLocation = .destination
    }

    /// No RESUMED after post-copy's COMMIT. The destination resumed the guest (the push then
    /// reconnects with RESUME), or it had not read COMMIT (sent again on the asking connection,
    /// the push goes on there), or it discarded the guest (which resumes here: its every page
    /// is here). Unresolved within `--handoff-timeout`, the guest is lost: the destination may
    /// run it and needs pages that are only here.
    private func resolvePostcopyHandoff(after error: any Error, _ switched: PostcopySwitch) throws {
        connection.close()
        log.warning(
            "no RESUMED after post-copy's COMMIT; asking the destination where the guest is",
            metadata: [
                "migration.error": "\(error)", "migration.session": "\(hex(sessionID))",
                "migration.handoff_timeout_ms": "\(options.handoffTimeoutMs)",
            ])
        // The destination's handoff record carries digest 0 until post-copy's memory verified.
        let resolution = agent.resolveHandoff(
            session: sessionID, token: sessionToken, digest: 0, after: error, log: log, keepConnection: true)
        switch resolution {
        case .resumedThere(let how):
            report.handoff = how  // the push's first send fails on the closed connection and resumes
        case .committedOn(let asking, let how):
            try? asking.stream.setReceiveTimeout(ms: options.replyTimeoutMs)
            connection = asking
            report.handoff = how
        case .discardedThere(let why):
            throw resumedAfterDiscard(why)
        case .unresolved(let why):
            throw postcopyLost(
                MigrationError(.transport, why, guest: .lost), during: "the wait for RESUMED",
                missing: switched.stale.popcount())
        }
    }

    /// Sends every stale page — a page the guest asked for (PAGE_REQUEST) before the next of
    /// the background push — then COMPLETE; VERIFIED ends the migration. A lost connection is
    /// resumed as in pre-copy (Protocol.md 11.4): RESUME, the destination's RESUME_STATE says
    /// which pages it has, and the rest is sent on the new connection.
    func postcopyPush(_ switched: PostcopySwitch) throws -> MigrationReport {
        var push = PostcopyPush(switched: switched, pageCount: pageCount)
        push.limiter = options.maxBandwidth.map { BandwidthLimiter(bytesPerSecond: $0) }
        let pusher = PageStreamer(
            memory: guest.memory, pageSize: pageSize, connection: connection, compression: options.compression,
            peerCodecs: peerCodecs, batchBytes: Self.postcopyBatchPages * pageSize, hashTable: streamer.hashTable,
            stripes: PageStripes(streamCount: 1), stream: 0)
        while true {
            let requests = PostcopyRequests()
            let reader = Thread { [connection] in requests.read(connection!) }
            reader.name = "ferry-postcopy-requests"
            reader.start()
            defer { requests.stop() }
            // A destination that stops taking the push (a partition without FIN or RST, a
            // stopped host) is a lost connection within --stall-timeout, as in pre-copy.
            stallWatch.watch([connection])
            defer { stallWatch.watch([]) }
            do {
                try push.sendRemaining(pusher, requests: requests) {
                    (self.connection.stream.unacknowledgedBytes, self.connection.stream.acknowledgedBytes)
                }
                try finishPush(switched, requests: requests, push: &push)
                break
            } catch let failure as MigrationError where failure.code == .verification {
                // VERIFIED not ok after COMPLETE: the destination stops the guest (Protocol.md 11.4).
                throw postcopyLost(failure, during: "the final verification", missing: push.left)
            } catch {
                push.requests += requests.count
                if let digest = push.completed, destinationVerified(digest: digest) {
                    report.digest = hex(digest)
                    report.handoff = "VERIFIED was lost; the destination's STATUS says the memory verified there"
                    break
                }
                // A send that failed because the destination aborted and closed: its ABORT is the
                // cause, not a cut to resume.
                if let aborted = requests.abortRead(withinMilliseconds: 300) {
                    throw postcopyLost(aborted, during: "the post-copy push", missing: push.left)
                }
                // A damaged frame from the destination is dropped with its connection and
                // resumed as a cut is, a few times (Protocol.md 11.4).
                let damaged =
                    MigrationError.wrap(error, during: "the post-copy push", guest: .destination).code
                    == .protocolViolation && push.damageResumes < DestinationSession.damageResumeLimit
                if damaged { push.damageResumes += 1 }
                try recoverPush(&push, pusher: pusher, after: error, damaged: damaged)
            }
        }
        push.summary.requests += push.requests
        push.summary.durationMs = (Double(MonotonicClock.now() &- switched.switchedAt) / 1e9).milliseconds
        push.summary.wireBytes = pusher.wireBytes
        if let decision = precopyState.lastDecision, decision.action == .postcopy {
            push.summary.reason = decision.reason
            push.summary.predictedCostMs = decision.costs.map { $0.postcopy.costSeconds.milliseconds }
            push.summary.predictedPrecopyCostMs = decision.costs?.precopy.map { $0.costSeconds.milliseconds }
        }
        report.postcopy = push.summary
        report.verified = true
        report.wireBytes = streamer.wireBytes + pusher.wireBytes
        var counts = streamer.counts
        counts.add(pusher.counts)
        report.pages = counts
        report.holePages = streamer.holePages
        report.outcome = .succeeded
        report.handoff =
            "post-copy after \(switched.round) rounds: \(push.summary.stalePages) pages followed the guest"
            + (report.handoff.map { "; \($0)" } ?? "")
        enter(.handedOver)
        return finishReport()
    }

    /// COMPLETE with the digest of every page's hash; VERIFIED from the destination; DONE.
    private func finishPush(_ switched: PostcopySwitch, requests: PostcopyRequests, push: inout PostcopyPush) throws {
        let digest = streamer.digest()
        try connection.send(
            Complete(
                finalRound: switched.round, pageCount: UInt64(pageCount), digest: digest,
                stateDigest: switched.stateDigest))
        push.completed = digest
        let verified = try requests.awaitVerified(
            timeoutMs: options.replyTimeoutMs, stallMs: options.stallTimeoutMs, acknowledged: connection)
        guard verified.ok, verified.digest == digest else {
            throw MigrationError(
                .verification,
                "the destination did not verify the guest's memory after post-copy: \(verified.message.isEmpty ? "digest \(hex(verified.digest)) ≠ \(hex(digest))" : verified.message)",
                guest: .destination)
        }
        try? connection.send(Done())
        report.digest = hex(digest)
    }

    /// After COMPLETE, its answer lost: whether the destination verified the memory (its
    /// handoff record, asked with the session's token, carries the digest once it did). A
    /// destination that did has left post-copy and takes no RESUME any more.
    private func destinationVerified(digest: UInt64) -> Bool {
        guard
            let (asking, answers) = try? StatusClient.ask(
                // Resolve: a `resumed` answer also confirms, so the destination stops waiting for DONE.
                options.destination, StatusQuery(sessionID: sessionID, sessionToken: sessionToken, resolve: true),
                security: options.security, connectTimeout: .milliseconds(1_000), replyTimeout: .milliseconds(2_000))
        else { return false }
        asking.close()
        return answers.contains { $0.state == .resumed && $0.digest == digest }
    }

    /// A lost connection during the push: connects again (`RESUME`, as in pre-copy), and what
    /// the destination lacks then is what is left to send. Throws (the guest is lost) when it
    /// cannot, or when the failure was not a lost connection.
    private func recoverPush(
        _ push: inout PostcopyPush, pusher: PageStreamer, after error: any Error, damaged: Bool = false
    ) throws {
        let failure = MigrationError.wrap(error, during: "the post-copy push", guest: .destination)
        let missing = push.left
        guard failure.code == .transport || damaged, options.resume else {
            throw postcopyLost(failure, during: "the post-copy push", missing: missing)
        }
        let lostAt = MonotonicClock.now()
        streamer.closeAll()
        connection.close()
        let back: SourceAgent.Reconnection
        do {
            back = try agent.reconnect(
                sessionID: sessionID, token: sessionToken, pageCount: pageCount, lostRound: Int(push.round),
                streamer: streamer, lost: failure, phase: "post-copy's push"
            ) { attempt, why in
                log.warning(
                    "connection lost during post-copy; reconnecting (attempt \(attempt)/\(options.reconnectAttempts))",
                    metadata: ["migration.error": "\(why.message)", "migration.missing_pages": "\(missing)"])
            }
        } catch {
            throw postcopyLost(error, during: "reconnecting after a cut", missing: missing)
        }
        connection = back.connection
        pusher.connection = back.connection
        push.resume(held: back.held.held)
        report.resumes += 1
        report.resumeRecords.append(
            ResumeRecord(
                round: Int(push.round), attempts: back.attempts,
                outageMs: MonotonicClock.seconds(since: lostAt).milliseconds, pagesHeld: back.held.heldCount,
                pagesHeldFromRound: back.held.currentCount, pagesResent: push.left))
        log.notice(
            "post-copy resumed: destination holds \(back.held.heldCount) of \(pageCount) pages; \(push.left) left to send"
        )
    }

    /// Pages per post-copy batch: a request's answer waits at most for one batch in progress.
    static let postcopyBatchPages = 64

    /// A failure after COMMIT that cannot be resumed: the destination's guest lacks pages that
    /// are here only (or its memory did not verify), so it is stopped there; this host's paused
    /// copy is never resumed either, since the guest may have run on at the destination
    /// (Protocol.md 11.4). The guest is lost.
    private func postcopyLost(_ error: any Error, during step: String, missing: Int) -> MigrationError {
        let cause = MigrationError.wrap(error, during: step, guest: .lost)
        if cause.code != .transport && cause.code != .peerAborted {
            // A protocol error or damage: the destination is told at once, not left to wait
            // --resume-timeout for a source that will not come back.
            try? connection.send(Abort(reason: cause.abortReason, message: String(cause.message.prefix(1000))))
        }
        log.critical(
            "post-copy failed after COMMIT: the guest is lost",
            metadata: ["migration.error": "\(cause.message)", "migration.missing_pages": "\(missing)"])
        let why =
            missing > 0
            ? "\(missing) pages it needs never reached the destination" : "its memory did not verify on the destination"
        return MigrationError(
            cause.code,
            "post-copy failed after COMMIT (\(cause.message)); the guest is lost: \(why), and this host's paused copy is not resumed, because the guest may have run on there (Protocol.md 11.4)",
            guest: .lost)
    }
}

/// The source's reader of the control connection during the push: PAGE_REQUESTs queue pages
/// for the pusher; the VERIFIED that answers COMPLETE ends it.
///
/// `@unchecked Sendable`: `state` is read and changed only inside `condition.withLock`.
final class PostcopyRequests: @unchecked Sendable {
    private struct State {
        var pages: [Int] = []
        var verified: Verified?
        var failure: MigrationError?
        var stopped = false
        var count = 0
    }
    private var state = State()
    private let condition = MonotonicCondition()

    var failure: MigrationError? { condition.withLock { state.failure } }
    var count: Int { condition.withLock { state.count } }

    func take() -> [Int] {
        condition.withLock {
            defer { state.pages.removeAll(keepingCapacity: true) }
            return state.pages
        }
    }

    func stop() {
        condition.withLock { state.stopped = true }
    }

    /// The destination's ABORT, if the reader reads one within `milliseconds`: a push that failed
    /// to send may have lost the race with the ABORT that closed the connection.
    func abortRead(withinMilliseconds milliseconds: Int) -> MigrationError? {
        let deadline = MonotonicClock.deadline(afterMilliseconds: milliseconds)
        return condition.withLock {
            while state.failure == nil && !state.stopped {
                if !condition.wait(untilNanoseconds: deadline) { break }
            }
            return state.failure.flatMap { $0.code == .peerAborted ? $0 : nil }
        }
    }

    /// Waits up to `microseconds` for a request (or the end).
    func waitForRequest(microseconds: Int) {
        let deadline = MonotonicClock.now() &+ UInt64(microseconds) * 1000
        condition.withLock {
            while state.pages.isEmpty && state.failure == nil {
                if !condition.wait(untilNanoseconds: deadline) { return }
            }
        }
    }

    /// The destination answers COMPLETE at once, so VERIFIED is late when `acknowledged`'s
    /// peer has acknowledged nothing for `stallMs` since (the last pages are in, the frame
    /// reached it or was lost): a lost connection, which is resumed. Waits at most `timeoutMs`.
    func awaitVerified(timeoutMs: Int, stallMs: Int, acknowledged connection: FramedConnection) throws -> Verified {
        let deadline = MonotonicClock.deadline(afterMilliseconds: timeoutMs)
        var lastAcknowledged = connection.stream.acknowledgedBytes
        var movedAt = MonotonicClock.now()
        while true {
            let slice = min(deadline, MonotonicClock.now() &+ 50_000_000)
            let answer = try condition.withLock { () throws(MigrationError) -> Verified? in
                while state.verified == nil && state.failure == nil {
                    if !condition.wait(untilNanoseconds: slice) { break }
                }
                if let verified = state.verified { return verified }
                if let failure = state.failure { throw failure }
                return nil
            }
            if let answer { return answer }
            let now = MonotonicClock.now()
            if now >= deadline {
                throw MigrationError(.transport, "no VERIFIED within \(timeoutMs) ms of COMPLETE", guest: .lost)
            }
            let acknowledged = connection.stream.acknowledgedBytes
            if acknowledged != lastAcknowledged || connection.stream.unacknowledgedBytes > 0 {
                (lastAcknowledged, movedAt) = (acknowledged, now)
            } else if now &- movedAt >= UInt64(stallMs) * 1_000_000 {
                throw MigrationError(
                    .transport,
                    "no VERIFIED \(stallMs) ms after COMPLETE was acknowledged (--stall-timeout): the answer was lost or the destination stopped",
                    guest: .lost)
            }
        }
    }

    /// The reader thread's loop.
    func read(_ connection: FramedConnection) {
        while !condition.withLock({ state.stopped }) {
            do {
                let frame = try connection.receive()
                switch frame.type {
                case .pageRequest:
                    let request = try PageRequest(payload: frame.payload)
                    condition.withLock {
                        state.pages.append(contentsOf: request.pages.map { Int(clamping: $0) })
                        state.count += 1
                        condition.broadcast()
                    }
                case .verified:
                    let verified = try Verified(payload: frame.payload)
                    condition.withLock {
                        state.verified = verified
                        condition.broadcast()
                    }
                    return
                default:
                    throw MigrationError(
                        .protocolViolation, "unexpected \(frame.type) frame during post-copy", guest: .destination)
                }
            } catch let error as TransportError where error.code == .timeout && !connection.hasFailedReceiving {
                continue  // no request for a while: the guest found what it needed
            } catch {
                condition.withLock {
                    state.failure =
                        state.failure ?? MigrationError.wrap(error, during: "post-copy", guest: .destination)
                    condition.broadcast()
                }
                return
            }
        }
    }
}

/// How many bytes the post-copy push may leave unacknowledged in its socket: about
/// `queueSeconds` of the link, as the acknowledgements measure it, so that a page the guest asks
/// for waits behind at most that much of the push. 1 MiB until the link is measured; within
/// 64 KiB … 8 MiB. Pure: the caller feeds it the socket's acknowledged bytes and the clock.
struct PushQueueBudget: Equatable {
    static let queueSeconds = 0.001
    static let initialLimit = 1 << 20
    static let range = (64 << 10)...(8 << 20)
    /// Nanoseconds between two measurements of the link's rate.
    static let interval: UInt64 = 5_000_000

    private(set) var limit = Self.initialLimit
    private var lastAcknowledged: UInt64?
    private var lastAt: UInt64 = 0

    mutating func observe(acknowledged: UInt64, at now: UInt64) {
        guard let before = lastAcknowledged else {
            (lastAcknowledged, lastAt) = (acknowledged, now)
            return
        }
        guard now &- lastAt >= Self.interval else { return }
        let rate = Double(acknowledged &- before) / (Double(now &- lastAt) / 1e9)
        (lastAcknowledged, lastAt) = (acknowledged, now)
        // A pause with nothing acknowledged (the push waiting on requests) says nothing of the link.
        guard rate > 0 else { return }
        limit = min(Self.range.upperBound, max(Self.range.lowerBound, Int(rate * Self.queueSeconds)))
    }
}
