import FerryProtocol
import FerrySystem
import FerryTransport
import Logging

/// The `awaiting-commit` and `resumed` phases: the verified image waits for COMMIT, then the
/// guest runs here (Protocol.md section 6).
extension DestinationSession {
    /// Waits for the source's `COMMIT` after a verified image and returns the connection it came
    /// on. When the control connection fails first (the source's `COMMIT` or this side's
    /// `VERIFIED` may be lost), the session keeps the verified image and waits up to
    /// `handoffTimeoutMs` for the source to come back with `STATUS_QUERY` (resolve) on a new
    /// connection, which then carries `COMMIT` or `ABORT`. Throws when the source aborts, breaks
    /// the protocol, or does not come back in time: the guest then never runs here.
    func awaitCommit() throws -> FramedConnection {
        let deadline = MonotonicClock.now() &+ UInt64(max(options.handoffTimeoutMs, 0)) * 1_000_000
        var current = control
        while true {
            do {
                let frame = try receiveDecision(on: current)
                guard frame.type == .commit else {
                    throw MigrationError(
                        .protocolViolation, "expected COMMIT after VERIFIED, got \(frame.type)", guest: .notHere)
                }
                _ = try Commit(payload: frame.payload)
                return current
            } catch let error as TransportError where error.code == .peerAborted {
                throw noCommit(error)
            } catch let error as MigrationError where error.code == .cancelled {
                throw fail(noCommit(error), on: current)
            } catch {
                // Lost, timed out, or damaged on the way (a garbled COMMIT may have been one): the
                // source decides, so close this connection and wait for it to come back and say.
                current.close()
                log.warning(
                    "lost the source after VERIFIED; keeping the verified image until it comes back to resolve the handoff",
                    metadata: [
                        "migration.error": "\(error)", "migration.handoff_timeout_ms": "\(options.handoffTimeoutMs)",
                    ])
                guard
                    let next = registry.handoffs.awaitResolver(
                        session: sessionID, deadline: deadline)
                else {
                    if let cancel = cancelled(during: "the wait for the source after VERIFIED") {
                        throw noCommit(cancel)
                    }
                    throw noCommit(
                        MigrationError(
                            .transport,
                            "the source did not come back within \(options.handoffTimeoutMs / 1000) s after VERIFIED to commit or abort (last error: \(error))",
                            guest: .notHere))
                }
                log.info(
                    "the source came back to resolve the handoff",
                    metadata: ["migration.peer": "\(next.peerDescription)"])
                current = next
            }
        }
    }

    private func noCommit(_ error: any Error) -> MigrationError {
        let failure = MigrationError.wrap(error, during: "handoff", guest: .notHere)
        log.error("no COMMIT; the verified image was discarded", metadata: ["migration.error": "\(failure.message)"])
        discardReason = failure.message
        return failure
    }

    /// COMMIT arrived: the image becomes `PATH`, the guest runs here, and RESUMED answers. In
    /// post-copy the image lacks pages until the push ends: it stays `PATH.partial` until its
    /// memory verifies (`publishImage`), so that no `PATH` ever lacks a page, even after a kill.
    func resumeGuest(answering handoff: FramedConnection) throws {
        let commitAt = MonotonicClock.now()
        do {
            if receiving.postcopy == nil { try publishImage() }
            owned = true
            registry.handoffs.set(session: sessionID, .resumed, digest: receiving.digest)
            enter(.resumed)
            // With --run-for 0 the guest is resumed but held: the image stays exactly what the
            // source handed over.
            guestStarted = true
            try guest?.start(hold: options.runForSeconds <= 0)
        } catch {
            let failure = MigrationError.wrap(
                error, during: "resuming the guest", guest: owned ? .destination : .notHere)
            throw fail(failure, on: handoff)
        }
        let resumedAt = MonotonicClock.now()
        receiving.resumedAt = resumedAt
        progressAtResume = guest?.progressSteps.map { GuestProgressSample(steps: $0, at: resumedAt) }
        progressAtEnd = progressAtResume
        report.cpuMs = (Double(ProcessCPU.now() &- cpuStart) / 1e9).milliseconds
        let resumeMicros = (resumedAt &- commitAt) / 1000
        receiving.parts.destinationResumeMs = Double(resumeMicros) / 1000
        if let postcopy = receiving.postcopy {
            try? postcopy.send(Resumed(resumeMicroseconds: resumeMicros), on: handoff)
            postcopy.openRequests()
            registry.handoffs.follow(session: sessionID) { postcopy.progressLine }
        } else {
            try? handoff.send(Resumed(resumeMicroseconds: resumeMicros))
        }
        report.downtimeMs = (Double(resumedAt &- receiving.finalPhaseStart) / 1e9).milliseconds
        report.wireBytes = bytesReceived
        report.guestLocation = .destination
        report.outcome = .succeeded
        report.verified = true
        for part in sinks { report.pages.add(part.counts) }
        for receiver in receivers { receiver.stop() }
        report.downtimeParts = receiving.parts
        report.downtimeClock =
            "destination CLOCK_MONOTONIC, from the first final-round frame to all vCPUs running; excludes the source's pause and final harvest (see the source report)"
        log.info("guest resumed", metadata: ["migration.resume_ms": "\(receiving.parts.destinationResumeMs)"])
        announce()
    }

    /// The verified image becomes `PATH`. The attachment first: an image never sits beside a
    /// missing attachment. (A guest replaying from it keeps its open file across the rename.)
    func publishImage() throws {
        guard !imagePublished else { return }
        if createdAttachment { try ImageFile.rename(from: partialAttachmentPath, to: attachmentPath) }
        try ImageFile.rename(from: partialPath, to: options.imagePath)
        imageLocks?.renamed()
        imagePublished = true
    }

    /// Gratuitous ARP for the guest's address on `--announce-dev`.
    private func announce() {
        if let interface = options.announceInterface, let identity = guestIdentity, !identity.mac.isNone {
            do {
                let frames = try GratuitousARP.announce(
                    interface: interface, mac: identity.mac, ip: identity.ip, logger: log)
                report.announce = "\(frames) gratuitous ARP frames for \(identity.mac) / \(identity.ip) on \(interface)"
            } catch {
                report.announce = "announce on \(interface) failed: \(error)"
                log.error("announce failed", metadata: ["migration.error": "\(error)"])
            }
        } else if options.announceInterface != nil {
            report.announce = "no announce: the guest has no MAC (pass --guest-mac to ferry send or ferry receive)"
        } else {
            report.announce = "no announce: no --announce-dev given"
        }
    }

    /// The guest runs here for `runFor` seconds (less if it finishes); then it is stopped and
    /// the image flushed.
    func runHere(_ handoff: FramedConnection) throws -> DestinationResult {
        let resumedAt = receiving.resumedAt
        guard let guest else { preconditionFailure("a resumed session has a guest") }
        let ranFor = MonotonicClock.seconds(since: resumedAt)
        if options.runForSeconds > ranFor { guest.waitUntilDone(seconds: options.runForSeconds - ranFor) }
        awaitHangUp(handoff)
        noteProgress(stopping: guest)
        let outcome = guest.stop()
        guestStarted = false
        self.guest = nil
        report.runForMs = MonotonicClock.seconds(since: resumedAt).milliseconds
        report.vcpuSteps = outcome.vcpuSteps
        if let failure = outcome.failure {
            report.error = ReportedError(
                message: "the guest failed after it resumed here: \(failure)", code: "guest_failed")
            log.error("the guest failed after resume", metadata: ["migration.error": "\(failure)"])
        }
        do {
            try image?.region.sync()
        } catch {
            throw MigrationError.wrap(error, during: "flushing the image", guest: .destination)
        }
        report.totalMs = MonotonicClock.seconds(since: start).milliseconds
        report.finishedAt = ReportTimestamp()
        return DestinationResult(report: report, guest: guest, outcome: outcome)
    }

    /// Waits (at most `hangUpWaitMs`) for the source's `DONE`, which it sends as soon as it has
    /// read `RESUMED`, or for a resolve `STATUS_QUERY` that told it the guest runs here. Until
    /// then this agent still answers `STATUS`: a source whose `RESUMED` was damaged or lost asks,
    /// and learns that the guest runs here, instead of finding nobody to ask once a single-guest
    /// destination has exited. A connection that ends without `DONE` (it may have been cut, or
    /// closed by the confirming query) ends the wait only once the source is known to know.
    private func awaitHangUp(_ connection: FramedConnection) {
        let deadline = MonotonicClock.now() &+ UInt64(Self.hangUpWaitMs) * 1_000_000
        try? connection.stream.setReceiveTimeout(ms: Self.hangUpWaitMs)
        if let frame = try? connection.receive(), frame.type == .done { return }
        registry.handoffs.awaitConfirmation(session: sessionID, deadline: deadline)
    }
}

extension DestinationSession {
    /// The destination's part of the progress report, as the guest is about to stop here.
    func noteProgress(stopping guest: any IncomingGuest) {
        guard let resumed = progressAtResume, let end = progressAtEnd,
            let stopping = GuestProgressSample.now(guest.progressSteps)
        else { return }
        var progress = GuestProgressReport()
        if receiving.postcopy != nil {
            (progress.postcopySteps, progress.postcopySeconds) = end.since(resumed)
        }
        (progress.afterSteps, progress.afterSeconds) = stopping.since(end)
        report.progress = progress
    }
}
