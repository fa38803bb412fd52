import FerryCodec
import FerryProtocol
import FerrySystem
import FerryTransport
import Logging

/// What the `precopy` phase keeps between rounds and across resumes.
struct PrecopyState {
    var policy: ConvergencePolicy
    /// The pages the next round sends (all of them for round 0).
    var pending: DirtyBitmap
    /// The pages of the round being sent.
    var toSend: DirtyBitmap
    var inRound = 0
    var roundStartedAt = MonotonicClock.now()
    var roundWireStart: UInt64 = 0
    var round = 0
    /// The resume whose first round has not been recorded yet.
    var resumeAwaitingRound: Int?
    var lastHarvest = MonotonicClock.now()
    var lastDecision: ConvergenceDecision?
    /// The convergence model after the last round, for the progress's ETA (none before round 0 ends).
    var etaModel: ProgressETA.Model?
    var dirtyRate = 0.0
    /// The dirty rates of the last few rounds and the throttle each ran under: the highest
    /// under the throttle in force predicts the pages a guest dirties between the last harvest
    /// and the pause (a guest that writes in bursts can show a quiet round just before the
    /// switch-over; the rates from before a throttle step no longer apply).
    var recentDirtyRates: [(rate: Double, throttle: Int)] = []
    var peakDirtyRate: Double {
        let throttle = recentDirtyRates.last?.throttle
        return recentDirtyRates.filter { $0.throttle == throttle }.map(\.rate).max() ?? dirtyRate
    }
    /// Set when pre-copy ends by switching to post-copy rather than by a blackout.
    var switchToPostcopy = false

    init(pageCount: Int, settings: ConvergenceSettings) {
        policy = ConvergencePolicy(settings: settings)
        pending = DirtyBitmap(count: pageCount)
        pending.setAll()
        toSend = DirtyBitmap(count: pageCount)
    }
}

/// The `precopy` phase: rounds until the convergence policy switches over (or gives up), and
/// resumes after a lost connection (Protocol.md section 8).
extension SourceSession {
    func precopy() throws {
        while true {
            do {
                while try !round() {}
                return
            } catch {
                var failure =
                    agent.imageShrank()
                    ?? MigrationError.wrap(error, during: "pre-copy round \(precopyState.round)", guest: .source)
                if let stall = stallWatch.stallReason, failure.code == .transport {
                    failure = MigrationError(
                        .transport, "pre-copy round \(precopyState.round): \(stall)", guest: .source)
                } else if failure.code == .transport,
                    let aborted = agent.abortWaiting(on: connection, during: "pre-copy round \(precopyState.round)")
                {
                    // The destination said why it closed: an ABORT is final, not a loss to resume.
                    failure = aborted
                }
                // A lost connection (not an ABORT, not a protocol violation): resume where it was.
                if options.resume && failure.code == .transport {
                    do {
                        try resume(after: failure)
                        continue
                    } catch {
                        failure = MigrationError.wrap(
                            error, during: "pre-copy round \(precopyState.round)", guest: .source)
                        // Cancelled while reconnecting: the destination waits for a RESUME; tell it.
                        if failure.code == .cancelled {
                            _ = agent.releaseDestination(
                                session: sessionID, token: sessionToken, because: failure.message, log: log)
                        }
                    }
                }
                agent.abort(connection, failure)
                report.rounds = precopyState.round
                throw failure
            }
        }
    }

    /// One pre-copy round: send the pending pages, harvest, ROUND_END, ROUND_ACK, decide.
    /// Returns true when the policy says switch over.
    private func round() throws -> Bool {
        guard let tracker else { preconditionFailure("pre-copy needs its tracker") }
        let round = precopyState.round
        try options.cancellation.check(during: "pre-copy round \(round)", guest: .source)
        let roundStart = MonotonicClock.now()
        let wireBefore = beginRound(at: roundStart)
        let sent = try streamer.send(
            pages: precopyState.toSend, round: UInt32(round),
            protecting: round == 0 && options.protectDuringRoundZero ? tracker : nil,
            holes: round == 0 ? holes : nil)
        let sending = meter.end()
        let harvestStart = MonotonicClock.now()
        let dirty = try tracker.harvest(into: &precopyState.pending)
        let harvestSeconds = MonotonicClock.seconds(since: harvestStart)
        if let shrunk = agent.imageShrank() { throw shrunk }
        let dirtySeconds = Double(harvestStart &- precopyState.lastHarvest) / 1e9
        precopyState.lastHarvest = harvestStart
        precopyState.dirtyRate = dirtySeconds > 0 ? Double(dirty) / dirtySeconds : 0
        precopyState.recentDirtyRates.append((precopyState.dirtyRate, guest.throttlePercent))
        if precopyState.recentDirtyRates.count > ConvergencePolicy.rateWindow {
            precopyState.recentDirtyRates.removeFirst()
        }

        let roundEndSent = MonotonicClock.now()
        try connection.send(
            RoundEnd(
                round: UInt32(round), pagesSent: UInt64(sent.pages), wireBytes: sent.wireBytes,
                durationMicroseconds: UInt64(MonotonicClock.seconds(since: roundStart) * 1e6),
                dirtyPages: UInt64(dirty),
                dirtyRate: UInt64(precopyState.dirtyRate), throttlePercent: UInt32(guest.throttlePercent)))
        let ack = try agent.awaitRoundAck(round: round, on: connection, streams: streamer)
        guard ack.round == UInt32(round) else {
            throw MigrationError(
                .protocolViolation, "ROUND_ACK for round \(ack.round), expected \(round)", guest: .source)
        }
        rtt = min(rtt, max(0, MonotonicClock.seconds(since: roundEndSent) - Double(ack.digestMicroseconds) / 1e6))
        let transferSeconds = MonotonicClock.seconds(since: roundStart) - harvestSeconds
        // The blackout's costs besides the final pages, each measured: pause, final harvest, the
        // device state, the bytes still queued, the destination's digest, and two round trips
        // (COMPLETE→VERIFIED, COMMIT→RESUMED).
        let costs = BlackoutForecast.Costs(
            pauseSeconds: pauseCost, harvestSeconds: harvestSeconds, deviceStateReadSeconds: stateProbe.seconds,
            deviceStateBytes: stateProbe.bytes, queuedBytes: streamer.queuedBytes,
            destinationVerifySeconds: Double(ack.digestMicroseconds) / 1e6, roundTripSeconds: rtt)
        let fixed = costs.fixedSeconds
        let observation = RoundObservation(
            // Only pages with data count for the rate: zero pages cost almost nothing, and the
            // pages a guest dirties are almost never zero, so counting them would make the link
            // look faster than it is for the final round. Pages sent as their few changed words
            // have data: a guest whose pages all go so (the built-in guest's) measured a rate of
            // a page or so per round, and predicted blackouts of minutes for 16 MiB.
            round: round, pagesSent: sent.counts.lz4 + sent.counts.raw + sent.counts.words,
            transferSeconds: transferSeconds,
            dirtyPages: precopyState.pending.popcount(),
            dirtySeconds: dirtySeconds, elapsed: MonotonicClock.seconds(since: start),
            costs: costs, throttlePercent: guest.throttlePercent,
            // At most every page: a guest cannot dirty more pages than it has.
            dirtiedSinceHarvest: min(
                pageCount, Int(precopyState.peakDirtyRate * MonotonicClock.seconds(since: harvestStart))),
            pageCount: pageCount, vcpus: guest.vcpus, roundTripSeconds: rtt,
            wireBytes: streamer.wireBytes - wireBefore)
        let decision = precopyState.policy.decide(observation)
        precopyState.lastDecision = decision
        precopyState.etaModel = ProgressETA.Model(
            sendPagesPerSecond: decision.transferRate, dirtyPagesPerSecond: precopyState.dirtyRate,
            fixedCostSeconds: fixed,
            switchoverSeconds: ConvergencePolicy.margin * options.settings.downtimeTargetSeconds)
        record(
            round: round, sent: sent, wireBefore: wireBefore, transferSeconds: transferSeconds,
            sendingSeconds: sending.sendingSeconds, observation: observation, decision: decision)
        precopyState.round += 1
        return try act(on: decision, stalePages: observation.dirtyPages)
    }

    /// Takes the pending pages as the round's and starts its meter; returns the wire bytes before it.
    private func beginRound(at roundStart: UInt64) -> UInt64 {
        precopyState.toSend = precopyState.pending
        precopyState.pending.clearAll()
        precopyState.inRound = precopyState.toSend.popcount()
        let wireBefore = streamer.wireBytes
        precopyState.roundStartedAt = roundStart
        precopyState.roundWireStart = wireBefore
        let predicted = precopyState.lastDecision?.predictedDowntime
        meter.begin(
            RoundMeter.Round(
                round: precopyState.round, pagesInRound: precopyState.inRound, wireBefore: wireBefore,
                dirtyPagesPerSecond: precopyState.dirtyRate,
                predictedDowntimeSeconds: predicted.flatMap { $0.isFinite ? $0 : nil },
                model: precopyState.etaModel, roundsLeft: options.settings.maxRounds - 1 - precopyState.round))
        return wireBefore
    }

    /// Records a finished round in the report, the log and the progress. The send rate is the
    /// round's wire bytes per second of sending (`SendRate`), in the report as in the progress.
    private func record(
        round: Int, sent: StreamRoundResult, wireBefore: UInt64, transferSeconds: Double, sendingSeconds: Double,
        observation: RoundObservation, decision: ConvergenceDecision
    ) {
        let roundWire = streamer.wireBytes - wireBefore
        let rate = SendRate.bytesPerSecond(bytes: roundWire, seconds: sendingSeconds)
        report.perRound.append(
            RoundRecord(
                round: round, pages: sent.pages, wireBytes: roundWire,
                durationMs: transferSeconds.milliseconds, sendRateMBps: (rate ?? 0) / 1e6,
                dirtyPages: observation.dirtyPages,
                dirtyRateMBps: observation.dirtyRate * Double(pageSize) / 1e6,
                predictedDowntimeMs: decision.predictedDowntime.isFinite ? decision.predictedDowntime.milliseconds : -1,
                throttlePercent: guest.throttlePercent, decision: "\(decision.action)",
                sendingMs: sendingSeconds.milliseconds))
        if let index = precopyState.resumeAwaitingRound {
            report.resumeRecords[index].pagesResent = sent.pages
            report.resumeRecords[index].wireBytesResent = streamer.wireBytes - wireBefore
            precopyState.resumeAwaitingRound = nil
        }
        log.info(
            "round done",
            metadata: [
                "migration.round": "\(round)", "migration.pages": "\(sent.pages)",
                "migration.dirty_pages": "\(observation.dirtyPages)",
                "migration.predicted_ms": "\(decision.predictedDowntime.milliseconds)",
                "migration.decision": "\(decision.action)", "migration.reason": "\(decision.reason)",
            ])
        progress?(
            MigrationProgress(
                role: .source, kind: .roundEnded, round: round, pagesSent: sent.pages,
                pagesInRound: precopyState.inRound, pageCount: pageCount, pageSize: pageSize,
                roundWireBytes: roundWire, wireBytes: streamer.wireBytes,
                elapsedSeconds: MonotonicClock.seconds(since: start), sendBytesPerSecond: rate,
                dirtyPagesPerSecond: precopyState.dirtyRate,
                predictedDowntimeSeconds: decision.predictedDowntime.isFinite ? decision.predictedDowntime : nil,
                roundETASeconds: 0, migrationETASeconds: migrationETA(after: decision, round: round)))
    }

    /// Seconds left in the migration after `round`'s decision, by the convergence model.
    private func migrationETA(after decision: ConvergenceDecision, round: Int) -> Double? {
        switch decision.action {
        case .switchover:
            return decision.predictedDowntime.isFinite ? decision.predictedDowntime : nil
        case .giveUp:
            return nil
        case .postcopy:
            return decision.costs?.postcopy.seconds
        case .nextRound, .throttle:
            return precopyState.etaModel.flatMap {
                ProgressETA.migration(
                    nextRoundPages: precopyState.pending.popcount(), roundsLeft: options.settings.maxRounds - 1 - round,
                    minimumRounds: 1, model: $0)
            }
        }
    }

    /// The policy's decision: true to switch over (or to post-copy).
    private func act(on decision: ConvergenceDecision, stalePages: Int) throws -> Bool {
        switch decision.action {
        case .nextRound:
            return false
        case .throttle(let percent):
            guest.throttlePercent = percent
            report.maxThrottlePercent = max(report.maxThrottlePercent, percent)
            return false
        case .switchover:
            report.predictedDowntimeMs = decision.predictedDowntime.milliseconds
            report.downtimeForecast = decision.forecast.flatMap { $0.totalMs.isFinite ? $0 : nil }
            return true
        case .giveUp:
            throw MigrationError(.notConverged, decision.reason, guest: .source)
        case .postcopy:
            precopyState.switchToPostcopy = true
            log.info(
                "switching to post-copy",
                metadata: [
                    "migration.rounds": "\(precopyState.round)", "migration.stale_pages": "\(stalePages)",
                    "migration.reason": "\(decision.reason)",
                ])
            return true
        }
    }

    /// After the connections were lost during pre-copy: reconnects (bounded attempts with
    /// backoff), learns from RESUME_STATE which pages the destination holds intact, re-opens the
    /// page streams, and makes `pending` what the next round must send: the pages not held,
    /// those of the lost round whose copy did not arrive, and those dirtied since the last
    /// harvest (the outage included: the tracker stayed armed).
    private func resume(after failure: MigrationError) throws {
        guard let tracker else { preconditionFailure("pre-copy needs its tracker") }
        let lostAt = MonotonicClock.now()
        let lostRound = precopyState.round
        let inRound = precopyState.inRound
        let percent = inRound > 0 ? min(100, 100 * streamer.pagesSentInRound / inRound) : 100
        report.perRound.append(
            RoundRecord(
                round: lostRound, pages: streamer.pagesSentInRound,
                wireBytes: streamer.wireBytes - precopyState.roundWireStart,
                durationMs: MonotonicClock.seconds(since: precopyState.roundStartedAt).milliseconds, sendRateMBps: 0,
                dirtyPages: 0,
                dirtyRateMBps: 0, predictedDowntimeMs: -1, throttlePercent: guest.throttlePercent,
                decision: "connection lost at \(percent)% of the round; resuming"))
        streamer.closeAll()
        connection.close()
        let back = try agent.reconnect(
            sessionID: sessionID, token: sessionToken, pageCount: pageCount, lostRound: lostRound,
            streamer: streamer, lost: failure
        ) { attempt, why in
            let event =
                "connection lost during round \(lostRound) at \(percent)%; reconnecting (attempt \(attempt)/\(options.reconnectAttempts))"
            log.warning("\(event)", metadata: ["migration.error": "\(why.message)"])
            progress?(
                MigrationProgress(
                    role: .source,
                    kind: .reconnecting(percentSent: percent, attempt: attempt, attempts: options.reconnectAttempts),
                    round: lostRound, pagesSent: streamer.pagesSentInRound, pagesInRound: inRound,
                    pageCount: pageCount, pageSize: pageSize,
                    roundWireBytes: streamer.wireBytes - precopyState.roundWireStart, wireBytes: streamer.wireBytes,
                    elapsedSeconds: MonotonicClock.seconds(since: start), dirtyPagesPerSecond: precopyState.dirtyRate))
        }
        connection = back.connection
        stallWatch.watch(streamer.connections)
        let held = back.held
        // Everything dirtied since the last harvest, the outage included.
        try tracker.harvest(into: &precopyState.pending)
        precopyState.lastHarvest = MonotonicClock.now()
        let dirtied = precopyState.pending.popcount()
        SourceAgent.addPagesToResend(to: &precopyState.pending, held: held, lostRound: precopyState.toSend)
        let resend = precopyState.pending.popcount()
        let outage = MonotonicClock.seconds(since: lostAt)
        report.resumes += 1
        report.resumeRecords.append(
            ResumeRecord(
                round: lostRound, attempts: back.attempts, outageMs: outage.milliseconds,
                pagesHeld: held.heldCount, pagesHeldFromRound: held.currentCount,
                pagesDirtied: dirtied, pagesResent: resend))
        precopyState.resumeAwaitingRound = report.resumeRecords.count - 1
        let event = "resumed: destination holds \(held.heldCount) of \(pageCount) pages; resending \(resend)"
        log.notice(
            "\(event)",
            metadata: [
                "migration.round": "\(lostRound)", "migration.outage_ms": "\(outage.milliseconds)",
                "migration.attempts": "\(back.attempts)",
            ])
        progress?(
            MigrationProgress(
                role: .source, kind: .resumed(pagesHeld: held.heldCount), round: lostRound + 1, pagesSent: 0,
                pagesInRound: resend, pageCount: pageCount, pageSize: pageSize, roundWireBytes: 0,
                wireBytes: streamer.wireBytes, elapsedSeconds: MonotonicClock.seconds(since: start),
                dirtyPagesPerSecond: precopyState.dirtyRate))
        // The lost round is never acknowledged; its number is not used again (the destination
        // tells copies of the lost round from those of the next by it).
        precopyState.round += 1
    }
}
