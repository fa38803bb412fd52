import FerryCodec
import FerryProtocol
import FerrySystem
import FerryTransport
import Logging

/// What the `receiving` phase keeps between frames and across resumes.
struct ReceivingState {
    var verified = false
    /// The device state arrived and the guest's kind loaded it.
    var stateLoaded = false
    /// When the frame that began the final round arrived (0: none yet, or a round ended since).
    var finalPhaseStart: UInt64 = 0
    var roundStart = MonotonicClock.now()
    var parts = DowntimeParts()
    var digest: UInt64 = 0
    /// Bytes read by the connections of earlier attempts (before a resume).
    var retiredBytes: UInt64 = 0
    var appliedBefore = 0
    var applyNanosBefore: UInt64 = 0
    var wireBefore: UInt64 = 0
    /// A loss of the connections during pre-copy that the source may resume (nil: none).
    var lost: MigrationError?
    var resumeExpired = false
    /// When the guest started running here.
    var resumedAt: UInt64 = 0
    /// Set by `POSTCOPY_BEGIN`: the guest resumes before it has every page.
    var postcopy: DestinationPostcopy?
}

/// The `receiving` phase: pre-copy rounds, resumes after a loss, the blackout's final round and
/// device state, and verification (Protocol.md sections 5, 6 and 8).
extension DestinationSession {
    /// Takes the session's page streams and starts a receiver on each.
    func attachStreams() throws {
        rounds = StreamRounds(streams: streamCount - 1)
        for (index, stream) in try registry.waitForStreams(
            session: sessionID, timeout: Self.joinTimeout, cancellation: options.cancellation)
        {
            let receiver = StreamReceiver(stream: index, connection: stream, sink: sinks[index], rounds: rounds)
            receivers.append(receiver)
            live.add(stream)
            receiver.start()
        }
    }

    /// The first attach. A connection lost while the streams join (a cut right at the start, or
    /// a source that came back already) is a loss like any in pre-copy: the session waits for
    /// the RESUME.
    func attachStreamsAtStart() throws {
        do {
            try attachStreams()
        } catch {
            let failure = MigrationError.wrap(error, during: "joining page streams", guest: .notHere)
            guard failure.code == .transport && options.resumeTimeoutSeconds > 0 else {
                throw fail(failure, on: connection)
            }
            receiving.lost = failure
            firstIncoming = nil
        }
        report.setupMs = MonotonicClock.seconds(since: start).milliseconds
        report.preallocMs = prepareSeconds.milliseconds
        log.info(
            "receiving guest",
            metadata: [
                "migration.pages": "\(pageCount)", "migration.vcpus": "\(hello.vcpuCount)",
                "migration.workload": "\(report.workload)",
            ])
    }

    // Totals over all streams; read only after `rounds.wait` (the streams' writes happen before).
    var pagesApplied: Int { sinks.reduce(0) { $0 + $1.pagesApplied } }
    var applyNanos: UInt64 { sinks.reduce(0) { $0 + $1.applyNanos } }
    var pagesHeld: Int { sinks.reduce(0) { $0 + $1.pagesHeld } }
    var bytesReceived: UInt64 {
        receivers.reduce(receiving.retiredBytes + control.bytesReceived) { $0 + $1.connection.bytesReceived }
    }
    var streamTimeout: Double { Double(options.receiveTimeoutMs) / 1000 }

    /// Pre-copy rounds and the blackout, until the image verifies; resumes after losses.
    func receive() throws {
        while true {
            do {
                if let failure = receiving.lost {
                    receiving.lost = nil
                    guard try resume(after: failure) else {
                        receiving.resumeExpired = true
                        throw MigrationError(
                            .transport,
                            "\(failure.message); the source did not resume within \(Self.seconds(options.resumeTimeoutSeconds))",
                            guest: .notHere)
                    }
                }
                try receiveFrames()
                return
            } catch {
                var failure = MigrationError.wrap(
                    error, during: receiving.verified ? "handoff" : "pre-copy", guest: .notHere)
                // A page stream that failed first (say, with a protocol violation) names the cause.
                if failure.code == .transport && !receiving.resumeExpired, let streamFailure = rounds.firstFailure {
                    failure = streamFailure
                }
                // An operator's cancel cut the reads: that, not the cut, is why it ends.
                if failure.code != .peerAborted,
                    let cancel = cancelled(during: receiving.verified ? "the handoff" : "pre-copy")
                {
                    failure = cancel
                }
                // Only a lost connection during pre-copy (no device state yet) can be resumed: not
                // an ABORT, not a protocol violation, not the blackout.
                if failure.code == .transport && !receiving.stateLoaded && !receiving.verified
                    && options.resumeTimeoutSeconds > 0
                    && !receiving.resumeExpired
                {
                    receiving.lost = failure
                    continue
                }
                log.error(
                    "migration failed; partial image removed", metadata: ["migration.error": "\(failure.message)"])
                throw fail(failure)
            }
        }
    }

    /// Frames on the control connection until COMPLETE verifies (then returns) or fails.
    private func receiveFrames() throws {
        while true {
            let incoming = try firstIncoming.take() ?? control.receive(direct: .pageBatch)
            if receiving.finalPhaseStart == 0 { receiving.finalPhaseStart = MonotonicClock.now() }
            let frame: ReceivedFrame
            switch incoming {
            case .direct(_, _, let length):
                _ = try sinks[0].receive(batchLength: length, from: control)
                continue
            case .frame(let whole):
                frame = whole
            }
            switch frame.type {
            case .roundEnd:
                try acknowledgeRound(try RoundEnd(payload: frame.payload))
            case .deviceState:
                try loadDeviceState(frame)
            case .complete:
                try verify(try Complete(payload: frame.payload))
                return
            case .postcopyBegin:
                try beginPostcopy(try PostcopyBegin(payload: frame.payload))
                return
            case .commit:
                throw MigrationError(.protocolViolation, "COMMIT before a verified COMPLETE", guest: .notHere)
            default:
                throw MigrationError(.protocolViolation, "unexpected \(frame.type) frame", guest: .notHere)
            }
        }
    }

    /// ROUND_END: waits for the round on every stream, answers ROUND_ACK and records the round.
    private func acknowledgeRound(_ end: RoundEnd) throws {
        try rounds.wait(round: end.round, timeout: streamTimeout)
        let roundPages = pagesApplied - receiving.appliedBefore
        let roundWire = bytesReceived - receiving.wireBefore
        // Summed over the streams' threads: CPU time spent applying, not wall time.
        let roundApplyNanos = applyNanos - receiving.applyNanosBefore
        receiving.appliedBefore += roundPages
        receiving.wireBefore += roundWire
        receiving.applyNanosBefore += roundApplyNanos
        let digestStart = MonotonicClock.now()
        _ = hashTable.digest()
        let digestMicros = (MonotonicClock.now() &- digestStart) / 1000
        try control.send(
            RoundAck(
                round: end.round, pagesReceived: UInt64(roundPages), pagesHeld: UInt64(pagesHeld),
                applyMicroseconds: roundApplyNanos / 1000, digestMicroseconds: digestMicros))
        let seconds = MonotonicClock.seconds(since: receiving.roundStart)
        let rate = SendRate.bytesPerSecond(bytes: roundWire, seconds: seconds)
        report.perRound.append(
            RoundRecord(
                round: Int(end.round), pages: roundPages, wireBytes: roundWire, durationMs: seconds.milliseconds,
                sendRateMBps: (rate ?? 0) / 1e6,
                dirtyPages: Int(end.dirtyPages), dirtyRateMBps: Double(end.dirtyRate) * Double(pageSize) / 1e6,
                predictedDowntimeMs: 0, throttlePercent: Int(end.throttlePercent), decision: "acknowledged",
                sendingMs: seconds.milliseconds))
        // The pages this round carried (repeats of a page in it included), not the pages held.
        progress?(
            MigrationProgress(
                role: .destination, kind: .roundEnded, round: Int(end.round), pagesSent: roundPages,
                pagesInRound: nil, pageCount: pageCount, pageSize: pageSize, roundWireBytes: roundWire,
                wireBytes: receiving.wireBefore, elapsedSeconds: MonotonicClock.seconds(since: start),
                sendBytesPerSecond: rate, dirtyPagesPerSecond: Double(end.dirtyRate)))
        receiving.roundStart = MonotonicClock.now()
        receiving.finalPhaseStart = 0
    }

    /// DEVICE_STATE: checked against HELLO and loaded by the guest's kind now, before VERIFIED,
    /// so that a state this host refuses fails the migration while the source owns the guest.
    private func loadDeviceState(_ frame: ReceivedFrame) throws {
        let message = try DeviceState(payload: frame.payload)
        deviceStatePayload = [UInt8](frame.payload)
        let vcpus = message.vcpuBodies.count
        guard message.sections[0].version == hello.cpuStateFormat, UInt32(vcpus) == hello.vcpuCount else {
            throw MigrationError(
                .protocolViolation,
                "DEVICE_STATE holds \(vcpus) vCPU sections of version \(message.sections[0].version); the HELLO said \(hello.vcpuCount) of format \(hello.cpuStateFormat)",
                guest: .notHere)
        }
        resumable.clear()
        let loadStart = MonotonicClock.now()
        try guest?.load(message.sections)
        receiving.parts.restoreVcpusMs = MonotonicClock.seconds(since: loadStart).milliseconds
        receiving.stateLoaded = true
    }

    /// COMPLETE: every page held and intact, the digests equal, the device state there; answers
    /// VERIFIED (and throws when it is not ok).
    private func verify(_ complete: Complete) throws {
        let verifyStart = MonotonicClock.now()
        receiving.parts.finalSendMs = (Double(verifyStart &- receiving.finalPhaseStart) / 1e9).milliseconds
        try rounds.wait(round: complete.finalRound, timeout: streamTimeout)
        let roundPages = pagesApplied - receiving.appliedBefore
        let roundWire = bytesReceived - receiving.wireBefore
        let digest = hashTable.digest()
        receiving.digest = digest
        let missing = pageCount - pagesHeld
        let problems = verificationProblems(complete, digest: digest, missing: missing)
        let verified = problems.isEmpty
        receiving.verified = verified
        let verifyMicros = (MonotonicClock.now() &- verifyStart) / 1000
        receiving.parts.destinationVerifyMs = Double(verifyMicros) / 1000
        report.digest = hex(digest)
        report.wireBytes = receiving.wireBefore + roundWire
        report.perRound.append(
            RoundRecord(
                round: Int(complete.finalRound), pages: roundPages, wireBytes: roundWire,
                durationMs: receiving.parts.finalSendMs,
                sendRateMBps: 0, dirtyPages: 0, dirtyRateMBps: 0, predictedDowntimeMs: 0, throttlePercent: 0,
                decision: "final"))
        report.rounds = Int(complete.finalRound) + 1
        // The state changes before VERIFIED leaves: a source that asks right after losing it
        // must find `awaiting-commit`.
        if verified {
            // The last moment a cancel aborts outright: after it, the source's decision is awaited.
            verifiedSent.set()
            if let failure = cancelled(during: "verification") { throw failure }
            registry.handoffs.set(session: sessionID, .awaitingCommit, digest: digest)
        }
        try control.send(
            Verified(
                ok: verified, digest: digest, pagesMissing: UInt64(missing),
                verifyMicroseconds: verifyMicros, message: problems.joined(separator: "; ")))
        guard verified else {
            throw MigrationError(
                .verification, "image did not verify: \(problems.joined(separator: "; "))", guest: .notHere)
        }
    }

    private func verificationProblems(_ complete: Complete, digest: UInt64, missing: Int) -> [String] {
        var problems: [String] = []
        if complete.pageCount != UInt64(pageCount) {
            problems.append("COMPLETE names \(complete.pageCount) pages, HELLO \(pageCount)")
        }
        if missing > 0 { problems.append("\(missing) pages never arrived") }
        let stale = sinks.reduce(0) { $0 + $1.staleCount }
        if stale > 0 {
            let first = sinks.compactMap(\.firstStalePage).min().map(String.init) ?? "?"
            problems.append(
                "\(stale) page(s) never arrived intact: their bytes do not match their hash (first: page \(first))")
        }
        if digest != complete.digest {
            problems.append("image digest \(hex(digest)) differs from the source's \(hex(complete.digest))")
        }
        if !receiving.stateLoaded {
            problems.append("no device state arrived")
        } else if StateDigest.of(config: configPayload, deviceState: deviceStatePayload) != complete.stateDigest {
            problems.append(
                "the guest configuration or device state differs from what the source sent (state digest mismatch)")
        }
        return problems
    }

    /// Closes the connections of this attempt and waits for the streams' threads (after which
    /// the sinks' state is final: a batch cut off has marked its torn pages stale).
    func dropConnections() {
        for receiver in receivers {
            receiver.stop()
            receiving.retiredBytes += receiver.connection.bytesReceived
        }
        receivers = []
        control.close()
        receiving.retiredBytes += control.bytesReceived
        live.removeAll()
    }

    /// After `dropConnections`: closes the books of the round a loss cut off, so that the round
    /// after the resume counts only its own pages (as the source's report does, which records the
    /// lost round apart); returns what the lost round brought.
    private func closeLostRound() -> (pages: Int, wireBytes: UInt64, seconds: Double) {
        let pages = pagesApplied - receiving.appliedBefore
        // Every byte of the dropped connections is in `retiredBytes` now (the old control
        // connection included); the new ones have not been counted yet.
        let wire = receiving.retiredBytes - min(receiving.retiredBytes, receiving.wireBefore)
        receiving.appliedBefore += pages
        receiving.wireBefore += wire
        receiving.applyNanosBefore = applyNanos
        return (pages, wire, MonotonicClock.seconds(since: receiving.roundStart))
    }

    /// After a loss during pre-copy: waits up to `resumeTimeout` for the source to come back,
    /// answers its RESUME with the pages held intact, and takes its new page streams.
    /// False when the grace period ended first.
    private func resume(after failure: MigrationError) throws -> Bool {
        let lostAt = MonotonicClock.now()
        dropConnections()
        let lost = closeLostRound()
        log.warning(
            "connection lost during pre-copy; waiting for the source to resume",
            metadata: [
                "migration.resume_timeout_s": "\(options.resumeTimeoutSeconds)",
                "migration.error": "\(failure.message)",
            ])
        guard
            let back = registry.waitForReattachment(
                session: sessionID, timeout: options.resumeTimeoutSeconds, cancellation: options.cancellation)
        else {
            return false
        }
        control = back.connection
        live.add(control)
        registry.handoffs.replaceControl(session: sessionID, with: control)
        if back.type == .statusQuery {
            // The source gave up (its blackout failed before DEVICE_STATE arrived) and says so.
            let frame = try control.receive()
            throw MigrationError(
                .protocolViolation, "after its STATUS_QUERY the source sent \(frame.type), not ABORT", guest: .notHere)
        }
        guard back.type == .resume else {
            throw MigrationError(
                .protocolViolation, "a \(back.type) connection came back instead of RESUME", guest: .notHere)
        }
        let request = try back.payload.withUnsafeBytes { bytes throws(ProtocolError) in try Resume(payload: bytes) }
        guard request.pageCount == UInt64(pageCount) else {
            throw MigrationError(
                .protocolViolation, "RESUME names \(request.pageCount) pages, HELLO \(pageCount)", guest: .notHere)
        }
        registry.reopenStreams(session: sessionID)
        report.perRound.append(
            RoundRecord(
                round: Int(request.round), pages: lost.pages, wireBytes: lost.wireBytes,
                durationMs: lost.seconds.milliseconds, sendRateMBps: 0, dirtyPages: 0, dirtyRateMBps: 0,
                predictedDowntimeMs: 0, throttlePercent: 0, decision: "connection lost; resumed",
                sendingMs: lost.seconds.milliseconds))
        let state = HeldPages(sinks: sinks, roundTable: roundTable, pageCount: pageCount, round: request.round)
        for frame in state.frames() { try control.send(frame) }
        try attachStreams()
        let outage = MonotonicClock.seconds(since: lostAt)
        report.resumes += 1
        report.resumeRecords.append(
            ResumeRecord(
                round: Int(request.round), outageMs: outage.milliseconds,
                pagesHeld: state.heldCount, pagesHeldFromRound: state.currentCount))
        log.notice(
            "source resumed the migration",
            metadata: [
                "migration.round": "\(request.round)", "migration.pages_held": "\(state.heldCount)",
                "migration.pages": "\(pageCount)", "migration.outage_ms": "\(outage.milliseconds)",
            ])
        receiving.roundStart = MonotonicClock.now()
        return true
    }
}
