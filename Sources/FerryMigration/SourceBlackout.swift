import FerryCodec
import FerryProtocol
import FerrySystem
import FerryTransport
import Logging

/// The `blackout` and `committed` phases: the vCPUs paused, the last pages and the device state
/// sent and verified under one deadline, then COMMIT and the wait for RESUMED (Protocol.md
/// section 6).
extension SourceSession {
    /// Pauses the guest and sends the rest; returns the image digest the destination verified.
    /// On any failure the guest resumes here, and the destination is told to discard.
    func blackout() throws -> UInt64 {
        blackoutStart = MonotonicClock.now()
        stallWatch.watch([])
        let deadline = BlackoutDeadline(limitMs: options.effectiveBlackoutTimeoutMs, connections: streamer.connections)
        notePausing()
        let pauseNanos = guest.pause()
        parts.pauseVcpusMs = (Double(pauseNanos) / 1e9).milliseconds
        do {
            let digest = try sendFinalRound()
            let verifyStart = MonotonicClock.now()
            let verified = try connection.receive(Verified.self)
            parts.verifyMs = MonotonicClock.seconds(since: verifyStart).milliseconds
            parts.destinationVerifyMs = (Double(verified.verifyMicroseconds) / 1000)
            guard verified.ok, verified.digest == digest else {
                throw MigrationError(
                    .verification,
                    "destination did not verify the image: \(verified.message.isEmpty ? "digest \(hex(verified.digest)) ≠ \(hex(digest)), \(verified.pagesMissing) pages missing" : verified.message)",
                    guest: .source)
            }
            // The pages sent are what the guest had, unless the file was cut under it: never commit that.
            if let shrunk = agent.imageShrank() { throw shrunk }
            // The last moment a cancel is honoured: after this check COMMIT is written, and a
            // cancel is refused as too late.
            try options.cancellation.passCommitPoint(during: "the blackout, before COMMIT", guest: .source)
            // VERIFIED in time, or the deadline passed as it arrived: then the connections are
            // closed and the COMMIT could not be sent anyway.
            guard deadline.disarm() else { throw deadline.failure(during: "as VERIFIED arrived") }
            return digest
        } catch {
            deadline.disarm()
            guest.resume()
            throw blackoutFailed(error, deadline: deadline)
        }
    }

    /// The final round: last harvest, last pages, DEVICE_STATE, COMPLETE; returns the digest.
    private func sendFinalRound() throws -> UInt64 {
        guard let tracker else { preconditionFailure("the blackout needs the tracker") }
        let paused = MonotonicClock.now()
        try tracker.harvest(into: &precopyState.pending)
        let harvestDone = MonotonicClock.now()
        parts.finalHarvestMs = (Double(harvestDone &- paused) / 1e9).milliseconds
        let round = precopyState.round
        let final = try streamer.send(pages: precopyState.pending, round: UInt32(round))
        finalRoundPages = final.pages
        let stateStart = MonotonicClock.now()
        let state = DeviceState(sections: try guest.deviceState())
        try connection.send(state)
        parts.cpuStateMs = (Double(MonotonicClock.now() &- stateStart) / 1e9).milliseconds
        let digest = streamer.digest()
        try connection.send(
            Complete(
                finalRound: UInt32(round), pageCount: UInt64(pageCount), digest: digest,
                stateDigest: StateDigest.of(config: configPayload, deviceState: state.encodedPayload())))
        parts.finalSendMs = (Double(MonotonicClock.now() &- harvestDone) / 1e9).milliseconds
        report.perRound.append(
            RoundRecord(
                round: round, pages: final.pages, wireBytes: final.wireBytes, durationMs: parts.finalSendMs,
                sendRateMBps: 0, dirtyPages: 0, dirtyRateMBps: 0, predictedDowntimeMs: report.predictedDowntimeMs,
                throttlePercent: guest.throttlePercent, decision: "final (vCPUs paused)"))
        return digest
    }

    /// The error a failed blackout ends with (the guest runs here again). A lost connection may
    /// leave the destination waiting for a RESUME or a COMMIT that will not come: it is told now.
    func blackoutFailed(_ error: any Error, deadline: BlackoutDeadline) -> MigrationError {
        var failure =
            agent.imageShrank()
            ?? (deadline.hasExpired
                ? deadline.failure(during: "while \(agent.blackoutPhase(parts))")
                : MigrationError.wrap(error, during: "blackout", guest: .source))
        if failure.code == .transport && !deadline.hasExpired,
            let aborted = agent.abortWaiting(on: connection, during: "blackout")
        {
            failure = aborted
        }
        agent.abort(connection, failure)
        log.error(
            "migration failed during blackout; guest resumed on the source",
            metadata: ["migration.error": "\(failure.message)"])
        if failure.code == .transport,
            let splitBrain = agent.releaseDestination(
                session: sessionID, token: sessionToken, because: failure.message, log: log)
        {
            return splitBrain
        }
        return failure
    }

    /// COMMIT, then RESUMED (or, when it does not come, the destination asked where the guest
    /// is). Once COMMIT is written the guest belongs to the destination, which resumes it in
    /// milliseconds: RESUMED is awaited briefly, and its absence is resolved by asking.
    func handoff(digest: UInt64) throws -> MigrationReport {
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
        // The vCPUs stay paused, not stopped, until the destination confirms: should it turn out
        // that the COMMIT never reached it and it discarded the guest, the guest resumes here.
        report.verified = true
        report.digest = hex(digest)
        report.rounds = precopyState.round + 1
        report.wireBytes = streamer.wireBytes
        report.pages = streamer.counts
        report.holePages = streamer.holePages
        do {
            let resumed = try connection.receive(Resumed.self)
            let end = MonotonicClock.now()
            try? connection.send(Done())
            parts.destinationResumeMs = Double(resumed.resumeMicroseconds) / 1000
            handedOver(commitStart: commitStart, end: end)
        } catch {
            try resolve(after: error, digest: digest, commitStart: commitStart)
        }
        let final = finishReport()
        if final.guestLocation != .destination {
            throw MigrationError(
                .transport, final.error?.message ?? "handed over; the destination did not confirm its resume",
                guest: .handedOverUnconfirmed)
        }
        return final
    }

    private func handedOver(commitStart: UInt64, end: UInt64 = MonotonicClock.now(), how: String? = nil) {
        parts.commitResumeMs = (Double(end &- commitStart) / 1e9).milliseconds
        report.downtimeMs = (Double(end &- blackoutStart) / 1e9).milliseconds
        noteResumedThere(at: end)
        report.guestLocation = .destination
        report.outcome = .succeeded
        if let how { report.handoff = how }
        enter(.handedOver)
    }

    /// No RESUMED after COMMIT: asks the destination where the guest is.
    private func resolve(after error: any Error, digest: UInt64, commitStart: UInt64) throws {
        log.warning(
            "no RESUMED after COMMIT; asking the destination where the guest is",
            metadata: [
                "migration.error": "\(error)", "migration.session": "\(hex(sessionID))",
                "migration.handoff_timeout_ms": "\(options.handoffTimeoutMs)",
            ])
        switch agent.resolveHandoff(session: sessionID, token: sessionToken, digest: digest, after: error, log: log) {
        case .resumedThere(let how):
            handedOver(commitStart: commitStart, how: how)
        case .committedOn(let asking, let how):  // asked for by post-copy only
            asking.close()
            handedOver(commitStart: commitStart, how: how)
        case .discardedThere(let why):
            throw resumedAfterDiscard(why)
        case .unresolved(let why):
            report.outcome = .unresolved
            report.error = ReportedError(
                message:
                    "handed over; the destination did not confirm its resume: \(why). The guest is paused here and runs nowhere until that is resolved: ask the destination with `ferry status --connect \(options.destination) --session \(hex(sessionID)) --token \(sessionToken.hex)`",
                code: MigrationError.Code.transport.name)
        }
    }

    /// The COMMIT never reached the destination, which discarded the guest: it never ran there,
    /// and every page of it is here, so it resumes here.
    func resumedAfterDiscard(_ why: String) -> MigrationError {
        guest.resume()
        report.guestLocation = .source
        return MigrationError(
            .transport,
            "the COMMIT did not reach the destination, which discarded the guest (\(why)); the guest resumed on the source",
            guest: .source)
    }

    /// The guest's vCPUs end here; the report is complete. Throws when the handoff is unresolved.
    func finishReport() -> MigrationReport {
        report.vcpuSteps = guest.stopForHandover()
        report.downtimeParts = parts
        if let forecast = report.downtimeForecast, report.postcopy == nil, report.guestLocation == .destination {
            report.downtimeMisses = forecast.misses(parts, downtimeMs: report.downtimeMs, finalPages: finalRoundPages)
        }
        report.downtimeClock =
            "source CLOCK_MONOTONIC, from pausing the vCPUs to reading RESUMED (includes the last one-way trip)"
        report.totalMs = MonotonicClock.seconds(since: start).milliseconds
        report.cpuMs = (Double(ProcessCPU.now() &- cpuStart) / 1e9).milliseconds
        report.finishedAt = ReportTimestamp()
        log.info(
            "migration complete",
            metadata: [
                "migration.downtime_ms": "\(report.downtimeMs)", "migration.total_ms": "\(report.totalMs)",
                "migration.rounds": "\(report.rounds)",
            ])
        return report
    }
}
