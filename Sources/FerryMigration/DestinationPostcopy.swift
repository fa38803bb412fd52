import FerryCodec
import FerryProtocol
import FerrySystem
import FerryTransport
import Foundation
import Logging
import Synchronization

/// The destination's post-copy (Protocol.md section 11, docs/postcopy.md): at `POSTCOPY_BEGIN`
/// the guest's own mapping of the image (`ReceivedImage.guestView`) is registered with
/// userfaultfd in minor-fault mode (`MissingPages`), with every page present but those it lacks.
/// Once the guest resumes, a vCPU that touches a page not yet mapped there faults: a present
/// page is mapped at once, a lacking one is asked of the source (`PAGE_REQUEST`). The source's
/// batches are decoded into the session's mapping, verified against their hashes and then
/// published (mapped into the guest's), until `COMPLETE` closes it. A background thread maps
/// the present pages meanwhile, so that the guest takes few faults for them.
///
/// `@unchecked Sendable`: the fault thread and the session's thread share it; the connection's
/// sending side is serialised by `sendLock`, the rest is in mutexes or set before the thread.
final class DestinationPostcopy: @unchecked Sendable {
    let pages: MissingPages
    let round: UInt32
    let stateDigest: UInt64
    let stalePages: Int
    private let sendLock = Mutex(0)
    /// When each requested page was asked for (MonotonicClock), until it is installed.
    private let requestedAt = Mutex([Int: UInt64]())
    /// Seconds from a fault read to its page installed, for the pages asked for.
    private let waits = Mutex([Double]())
    private let requestCount = Atomic<Int>(0)
    /// Stale pages installed so far, pushed or asked for.
    private let arrived = Atomic<Int>(0)
    private let stopped = Atomic<Bool>(false)
    private let failure = Mutex<String?>(nil)
    private let finished = DispatchSemaphore(value: 0)
    private var serving = false
    /// Set once RESUMED is sent: no PAGE_REQUEST goes before it (Protocol.md 11.2), though the
    /// vCPUs may fault the moment they start.
    private let requestsOpen = Atomic<Bool>(false)
    private let mapperStop = Atomic<Bool>(false)
    private let mapperDone = DispatchSemaphore(value: 0)
    private var mapping = false
    /// A failure to make pages visible to the guest (`UFFDIO_CONTINUE`, reading the faults):
    /// not the connection's, so not resumed; it ends post-copy at once.
    private let mappingFailure = Mutex<String?>(nil)
    /// The connection whose frames the session reads: shut for reading to wake it on a mapping failure.
    private let reading = Mutex<FramedConnection?>(nil)
    private let beforeMapping: (@Sendable (Range<Int>) throws -> Void)?

    init(
        pages: MissingPages, round: UInt32, stateDigest: UInt64, stalePages: Int,
        beforeMapping: (@Sendable (Range<Int>) throws -> Void)? = nil
    ) {
        self.pages = pages
        self.round = round
        self.stateDigest = stateDigest
        self.stalePages = stalePages
        self.beforeMapping = beforeMapping
    }

    /// Sends on the control connection, one frame at a time with the fault thread's requests.
    func send<M: FrameMessage>(_ message: M, on connection: FramedConnection) throws {
        try sendLock.withLock { _ in try connection.send(message) }
    }

    /// Starts the thread that turns faults into PAGE_REQUESTs on `connection`. After a resume
    /// it first asks again for every page still awaited: the old connection may have lost the
    /// requests.
    func serveFaults(on connection: FramedConnection) {
        stopped.store(false, ordering: .releasing)
        serving = true
        reading.withLock { $0 = connection }
        let awaited = requestedAt.withLock { asked in
            asked.keys.filter { !pages.isPresent($0) }.sorted()
        }
        let thread = Thread { [self] in
            defer { finished.signal() }
            do {
                try requestAgain(awaited, on: connection)
            } catch {
                failure.withLock { $0 = $0 ?? "\(error)" }
                return
            }
            var faults: [Int] = []
            while !stopped.load(ordering: .acquiring) {
                faults.removeAll(keepingCapacity: true)
                do {
                    _ = try pages.waitForFaults(timeoutMs: 50, into: &faults)
                    try ask(for: faults, on: connection)
                } catch let error as SystemError {
                    failMapping("serving the guest's page faults failed: \(error)")
                    return
                } catch {
                    failure.withLock { $0 = $0 ?? "\(error)" }
                    return
                }
            }
        }
        thread.name = "ferry-postcopy-faults"
        thread.start()
    }

    /// A fault on a page whose final bytes are here is answered at once (mapped); the others
    /// are asked of the source, each once.
    private func ask(for faults: [Int], on connection: FramedConnection) throws {
        guard !faults.isEmpty else { return }
        var lacking: [Int] = []
        for page in faults {
            if pages.isPresent(page) { try pages.map(page..<(page + 1)) } else { lacking.append(page) }
        }
        guard !lacking.isEmpty else { return }
        let now = MonotonicClock.now()
        let wanted = requestedAt.withLock { asked -> [UInt64] in
            var wanted: [UInt64] = []
            for page in lacking where asked[page] == nil && !pages.isPresent(page) {
                asked[page] = now
                wanted.append(UInt64(page))
            }
            return wanted
        }
        while !requestsOpen.load(ordering: .acquiring) && !stopped.load(ordering: .acquiring) { usleep(100) }
        var start = 0
        while start < wanted.count {
            let end = min(wanted.count, start + PageRequest.maxPages)
            try send(PageRequest(pages: Array(wanted[start..<end])), on: connection)
            requestCount.add(1, ordering: .relaxed)
            start = end
        }
    }

    private func requestAgain(_ pages: [Int], on connection: FramedConnection) throws {
        var start = 0
        while start < pages.count {
            let end = min(pages.count, start + PageRequest.maxPages)
            try send(PageRequest(pages: pages[start..<end].map { UInt64($0) }), on: connection)
            requestCount.add(1, ordering: .relaxed)
            start = end
        }
    }

    /// RESUMED is on its way: the requests may follow it.
    func openRequests() { requestsOpen.store(true, ordering: .releasing) }

    /// A fault thread's failure is the connection's: after a resume, a fresh start.
    func clearFailure() { failure.withLock { $0 = nil } }

    /// A page went in: the wait of whoever asked for it ends.
    func installed(_ page: Int) {
        arrived.add(1, ordering: .relaxed)
        guard let asked = requestedAt.withLock({ $0.removeValue(forKey: page) }) else { return }
        let seconds = Double(MonotonicClock.now() &- asked) / 1e9
        waits.withLock { $0.append(seconds) }
    }

    var faultFailure: String? { failure.withLock { $0 } }

    /// Why the guest's pages could not be made visible to it, if they could not.
    var mappingFailed: String? { mappingFailure.withLock { $0 } }

    /// Records a mapping failure (the first) and wakes the session's read, which then ends
    /// post-copy: the guest cannot be served, whatever the connection does.
    private func failMapping(_ why: String) {
        mappingFailure.withLock { $0 = $0 ?? why }
        reading.withLock { $0 }?.stream.shutdownRead()
    }

    /// Starts the thread that maps the pages present at the switch into the guest's mapping,
    /// run by run, so that the guest does not fault on each of them.
    func mapPresentPages() {
        mapping = true
        let present = pages.presentPages
        let thread = Thread { [self] in
            defer { mapperDone.signal() }
            var page = 0
            let count = present.count
            while page < count && !mapperStop.load(ordering: .acquiring) {
                guard present[page] else {
                    page += 1
                    continue
                }
                var end = page + 1
                while end < count && present[end] && end - page < 512 { end += 1 }
                do {
                    try beforeMapping?(page..<end)
                    try pages.map(page..<end)
                } catch {
                    failMapping("mapping the guest's present pages \(page)..<\(end) into its view failed: \(error)")
                    return
                }
                page = end
            }
        }
        thread.name = "ferry-postcopy-map"
        thread.start()
    }

    /// Stops the mapping thread (at its next run) and waits for it.
    func stopMapping() {
        mapperStop.store(true, ordering: .releasing)
        if mapping {
            mapperDone.wait()
            mapping = false
        }
    }

    /// Stops the fault thread (it ends within its 50 ms poll).
    func stopServing() {
        stopped.store(true, ordering: .releasing)
        if serving {
            finished.wait()
            serving = false
        }
    }

    /// The guest is lost or discarded: the waits end (with zero pages) so that it can be stopped.
    func abandon() {
        stopMapping()
        stopServing()
        try? pages.close(discarding: true)
    }

    /// Where the push stands, for `STATUS` (`ferry status`) while the guest runs here.
    var progressLine: String {
        let here = arrived.load(ordering: .relaxed)
        let percent = stalePages > 0 ? 100 * here / stalePages : 100
        return
            "post-copy: the guest runs here; \(here) of \(stalePages) stale pages arrived (\(percent)%), \(requestCount.load(ordering: .relaxed)) requests for pages its vCPUs touched; the source holds the rest, and losing it before they arrive loses the guest"
    }

    func summary(durationMs: Double, wireBytes: UInt64) -> PostcopyReport {
        var report = PostcopyReport()
        report.afterRounds = Int(round)
        report.stalePages = stalePages
        report.requests = requestCount.load(ordering: .relaxed)
        report.durationMs = durationMs
        report.wireBytes = wireBytes
        let sorted = waits.withLock { $0 }.sorted()
        report.requestedPages = sorted.count
        report.pushedPages = stalePages - sorted.count
        if !sorted.isEmpty {
            let at = { (q: Double) in sorted[min(sorted.count - 1, Int(q * Double(sorted.count)))] * 1000 }
            report.faultWaitP50Ms = at(0.5)
            report.faultWaitP99Ms = at(0.99)
            report.faultWaitMaxMs = sorted.last! * 1000
        }
        return report
    }
}

/// Damage found on the connection during the push (Protocol.md 11.4): a frame that breaks the
/// frame layer, a batch that does not parse or decode, a page whose hash differs. None of it
/// reached the guest, so it is dropped with its connection and resumed like a cut.
struct PostcopyDamage: Error {
    let failure: MigrationError
    init(_ failure: MigrationError) { self.failure = failure }
    init(wrapping error: any Error) { failure = MigrationError.wrap(error, during: "post-copy", guest: .lost) }
}

extension DestinationSession {
    /// Damaged connections resumed per post-copy; the next damage loses the guest (a peer or a
    /// link that damages every connection would otherwise hold the guest's vCPUs forever).
    static let damageResumeLimit = 3

    /// `POSTCOPY_BEGIN` (after `DEVICE_STATE`): the pages this side lacks are dropped and
    /// registered missing, the state digest is checked, and `VERIFIED` answers for the state.
    func beginPostcopy(_ begin: PostcopyBegin) throws {
        let verifyStart = MonotonicClock.now()
        guard offersPostcopy else {
            throw MigrationError(
                .protocolViolation, "POSTCOPY_BEGIN from a source this destination did not offer post-copy",
                guest: .notHere)
        }
        guard receiving.stateLoaded, begin.pageCount == UInt64(pageCount), let image else {
            throw MigrationError(
                .protocolViolation,
                "POSTCOPY_BEGIN before DEVICE_STATE, or for \(begin.pageCount) pages where HELLO said \(pageCount)",
                guest: .notHere)
        }
        receiving.parts.finalSendMs = (Double(verifyStart &- receiving.finalPhaseStart) / 1e9).milliseconds
        // Every page stream ended the round: nothing writes into the image any more.
        try rounds.wait(round: begin.round, timeout: streamTimeout)
        let stateDigest = StateDigest.of(config: configPayload, deviceState: deviceStatePayload)
        var problems: [String] = []
        if stateDigest != begin.stateDigest {
            problems.append(
                "the device state does not match its digest (\(hex(stateDigest)) ≠ \(hex(begin.stateDigest)))")
        }
        var missing = 0
        if problems.isEmpty {
            do {
                missing = try registerOnDemand(begin, image: image)
            } catch {
                problems.append("its memory cannot be served on demand: \(error)")
            }
        }
        let ok = problems.isEmpty
        let verifyMicros = (MonotonicClock.now() &- verifyStart) / 1000
        receiving.parts.destinationVerifyMs = Double(verifyMicros) / 1000
        report.rounds = Int(begin.round) + 1
        if ok {
            verifiedSent.set()
            if let failure = cancelled(during: "the switch to post-copy") { throw failure }
            registry.handoffs.set(session: sessionID, .awaitingCommit, digest: 0)
        }
        try control.send(
            Verified(
                ok: ok, digest: 0, pagesMissing: UInt64(missing), verifyMicroseconds: verifyMicros,
                message: problems.joined(separator: "; ")))
        guard ok else {
            throw MigrationError(
                .verification, "refused the switch to post-copy: \(problems.joined(separator: "; "))", guest: .notHere)
        }
        log.info(
            "post-copy: the guest may resume without its stale pages",
            metadata: ["migration.missing_pages": "\(missing)", "migration.round": "\(begin.round)"])
    }

    /// Registers the guest's mapping of the image with userfaultfd (minor-fault mode), every
    /// page present but those not held intact from the last pre-copy (stale at the source, never
    /// received, or torn here); returns how many it lacks. Nothing is dropped: the lacking pages
    /// are simply never mapped into the guest's view until their final bytes are written.
    private func registerOnDemand(_ begin: PostcopyBegin, image: ReceivedImage) throws -> Int {
        guard let guestView = image.guestView else {
            throw MigrationError(
                .configuration, "the guest's memory has no mapping of its own to serve on demand", guest: .notHere)
        }
        var lacking = DirtyBitmap(count: pageCount)
        lacking.withUnsafeMutableWords { words in
            for index in 0..<words.count { words[index] = begin.stale[index] }
            for sink in sinks {
                // Each sink has bits only for its own stripe: a page lacks unless its sink holds it intact.
                for index in 0..<words.count { words[index] |= sink.stale.words[index] }
            }
        }
        var held = DirtyBitmap(count: pageCount)
        held.withUnsafeMutableWords { words in
            for sink in sinks { for index in 0..<words.count { words[index] |= sink.held.words[index] } }
        }
        lacking.withUnsafeMutableWords { words in
            for index in 0..<words.count { words[index] |= ~held.words[index] }
        }
        let pages = try MissingPages(
            base: guestView.region.base, length: size, pageSize: pageSize, shared: true, minorFaults: true)
        pages.markPresent(except: lacking)
        let count = lacking.popcount()
        receiving.postcopy = DestinationPostcopy(
            pages: pages, round: begin.round, stateDigest: begin.stateDigest, stalePages: count,
            beforeMapping: options.beforePostcopyMapping)
        return count
    }

    /// After RESUMED: installs the pushed and requested pages until `COMPLETE`, then answers
    /// `VERIFIED` for the whole memory; returns the connection it ended on. A lost connection
    /// is resumed (the guest's touched pages wait meanwhile): the source comes back with
    /// `RESUME` within `resumeTimeout` and sends what is still lacked. Any other failure, or no
    /// source in time, leaves a guest that lacks pages only the source had: it is lost.
    func receivePostcopy(_ postcopy: DestinationPostcopy, on first: FramedConnection) throws -> FramedConnection {
        let started = receiving.resumedAt
        var connection = first
        var wire: UInt64 = 0
        let decoder = PageDecoder(pageSize: pageSize)
        var damageResumes = 0
        // A RESUME is taken from here on (the registry's reattach check).
        resumable.set()
        defer { resumable.clear() }
        while true {
            let wireBefore = connection.bytesReceived
            do {
                // A source that sends nothing for this long (stopped, or its host frozen) is a
                // lost connection: resumed if it comes back, else the guest is lost, not held.
                try? connection.stream.setReceiveTimeout(ms: options.receiveTimeoutMs)
                try receivePostcopyFrames(postcopy, on: connection, decoder: decoder)
                wire += connection.bytesReceived - wireBefore
                report.postcopy = postcopy.summary(
                    durationMs: MonotonicClock.seconds(since: started).milliseconds, wireBytes: wire)
                progressAtEnd = GuestProgressSample.now(guest?.progressSteps)
                return connection
            } catch {
                wire += connection.bytesReceived - wireBefore
                if let mapping = postcopy.mappingFailed {
                    // Not the connection's failure: a resume would not help the guest.
                    throw postcopyLost(postcopy, MigrationError(.system, mapping, guest: .lost), on: connection)
                }
                // Damage on the wire is dropped with its connection and resumed as a cut is (no
                // damaged page reached the guest), a few times; a peer that keeps damaging loses it.
                let damage = error as? PostcopyDamage
                let failure = damage?.failure ?? MigrationError.wrap(error, during: "post-copy", guest: .lost)
                let resumable =
                    failure.code == .transport || (damage != nil && damageResumes < Self.damageResumeLimit)
                if resumable && options.resumeTimeoutSeconds > 0,
                    let back = try? recoverPostcopy(postcopy, after: failure)
                {
                    if damage != nil { damageResumes += 1 }
                    connection = back
                    continue
                }
                throw postcopyLost(postcopy, failure, on: connection)
            }
        }
    }

    private func receivePostcopyFrames(
        _ postcopy: DestinationPostcopy, on connection: FramedConnection, decoder: PageDecoder
    ) throws {
        while true {
            if let mapping = postcopy.mappingFailed { throw MigrationError(.system, mapping, guest: .lost) }
            if let failure = postcopy.faultFailure {
                throw MigrationError(.transport, "asking the source for pages: \(failure)", guest: .lost)
            }
            let frame = try receiveUndamaged(on: connection)
            switch frame.type {
            case .pageBatch:
                try install(frame.payload, postcopy, decoder: decoder)
            case .complete:
                try finishPostcopy(try Self.complete(frame.payload), postcopy, on: connection)
                return
            default:
                throw PostcopyDamage(
                    MigrationError(
                        .protocolViolation, "unexpected \(frame.type) frame during post-copy", guest: .lost))
            }
        }
    }

    /// The guest cannot be saved: it is stopped, the source is told (`ABORT`, unless the
    /// connection is what failed), and the error says so.
    private func postcopyLost(
        _ postcopy: DestinationPostcopy, _ cause: MigrationError, on connection: FramedConnection
    ) -> MigrationError {
        let missing = postcopy.pages.missingCount
        postcopy.abandon()
        report.outcome = .failed
        if cause.code != .transport && cause.code != .peerAborted {
            try? connection.send(Abort(reason: cause.abortReason, message: String(cause.message.prefix(1000))))
        }
        // The image lacks pages: it must never pass for the guest's (it was never renamed to
        // PATH). Kept beside, for a look.
        let lostPath = options.imagePath + ".lost"
        let kept =
            (try? ImageFile.rename(from: imagePublished ? options.imagePath : partialPath, to: lostPath)) != nil
        log.critical(
            "post-copy failed; the guest is lost and stopped",
            metadata: ["migration.error": "\(cause.message)", "migration.missing_pages": "\(missing)"])
        let why = missing > 0 ? "it lacks \(missing) pages that only the source had" : "its memory cannot be trusted"
        return MigrationError(
            cause.code,
            "post-copy failed after the guest resumed here (\(cause.message)); the guest is lost: \(why), so it was stopped\(kept ? " (its incomplete image is \(lostPath))" : "")",
            guest: .lost)
    }

    /// A lost connection during post-copy: waits up to `resumeTimeout` for the source's
    /// `RESUME`, answers with the pages present (all of them current: the source's copy is
    /// paused), takes its new page streams and serves the faults on the new connection.
    private func recoverPostcopy(_ postcopy: DestinationPostcopy, after failure: MigrationError) throws
        -> FramedConnection?
    {
        let lostAt = MonotonicClock.now()
        // Closed first: a fault thread blocked in a send returns, then it is stopped.
        dropConnections()
        postcopy.stopServing()
        log.warning(
            "connection lost during post-copy; the guest's touched pages wait while the source comes back",
            metadata: [
                "migration.error": "\(failure.message)", "migration.missing_pages": "\(postcopy.pages.missingCount)",
                "migration.resume_timeout_s": "\(options.resumeTimeoutSeconds)",
            ])
        guard
            let back = registry.waitForReattachment(
                session: sessionID, timeout: options.resumeTimeoutSeconds, cancellation: options.cancellation)
        else { return nil }
        control = back.connection
        live.add(control)
        registry.handoffs.replaceControl(session: sessionID, with: control)
        guard back.type == .resume else {
            throw MigrationError(
                .protocolViolation, "a \(back.type) connection came back during post-copy", guest: .lost)
        }
        let request = try back.payload.withUnsafeBytes { bytes throws(ProtocolError) in try Resume(payload: bytes) }
        guard request.pageCount == UInt64(pageCount), request.round == postcopy.round else {
            throw MigrationError(
                .protocolViolation,
                "RESUME for round \(request.round) of \(request.pageCount) pages during post-copy round \(postcopy.round) of \(pageCount)",
                guest: .lost)
        }
        registry.reopenStreams(session: sessionID)
        let present = postcopy.pages.presentPages
        let state = HeldPages(held: present, current: present, round: postcopy.round)
        for frame in state.frames() { try control.send(frame) }
        try attachStreams()
        postcopy.clearFailure()
        postcopy.serveFaults(on: control)
        let outage = MonotonicClock.seconds(since: lostAt)
        report.resumes += 1
        report.resumeRecords.append(
            ResumeRecord(
                round: Int(postcopy.round), outageMs: outage.milliseconds, pagesHeld: state.heldCount,
                pagesHeldFromRound: state.currentCount))
        log.notice(
            "post-copy resumed",
            metadata: [
                "migration.pages_held": "\(state.heldCount)", "migration.outage_ms": "\(outage.milliseconds)",
            ])
        return control
    }

    /// The next frame; one that breaks the frame layer's rules is `PostcopyDamage`.
    private func receiveUndamaged(on connection: FramedConnection) throws -> ReceivedFrame {
        do {
            return try connection.receive()
        } catch {
            guard error.code == .protocolViolation else { throw error }
            throw PostcopyDamage(wrapping: error)
        }
    }

    /// `COMPLETE`; one that does not parse is `PostcopyDamage`.
    private static func complete(_ payload: UnsafeRawBufferPointer) throws -> Complete {
        do { return try Complete(payload: payload) } catch { throw PostcopyDamage(wrapping: error) }
    }

    /// Installs a batch's pages. A batch that does not parse or decode, or a page whose hash
    /// differs, is `PostcopyDamage`: nothing of it reached the guest. A failure to map a page
    /// into the guest's view is not damage (a `SystemError`, passed on).
    private func install(
        _ payload: UnsafeRawBufferPointer, _ postcopy: DestinationPostcopy, decoder: PageDecoder
    ) throws {
        do {
            try installPages(payload, postcopy, decoder: decoder)
        } catch let error as PostcopyDamage {
            throw error
        } catch let error as SystemError {
            throw error
        } catch {
            throw PostcopyDamage(wrapping: error)
        }
    }

    private func installPages(
        _ payload: UnsafeRawBufferPointer, _ postcopy: DestinationPostcopy, decoder: PageDecoder
    ) throws {
        var reader = try PageBatchReader(payload: payload, pageSize: pageSize, pageCount: UInt64(pageCount))
        guard reader.round == postcopy.round else {
            throw MigrationError(
                .protocolViolation, "a PAGE_BATCH of round \(reader.round) during post-copy round \(postcopy.round)",
                guest: .lost)
        }
        guard let image else { preconditionFailure("post-copy has an image") }
        while let entry = try reader.next() {
            let page = Int(entry.page)
            // Written through the session's mapping, where the guest cannot see it: it is mapped
            // into the guest's only once verified.
            guard !postcopy.pages.isPresent(page) else { continue }  // sent once; kept as it is
            let hash = try decoder.decode(
                encoding: entry.encoding, payload: entry.payload, into: image.region.base + page * pageSize)
            guard hash == entry.hash else {
                throw MigrationError(
                    .verification, "page \(page) arrived damaged during post-copy (its hash differs)",
                    guest: .lost)
            }
            hashTable[page] = hash
            try postcopy.pages.publish(page: page)
            postcopy.installed(page)
        }
    }

    /// COMPLETE after the push: every page here and the digests equal; answers VERIFIED.
    private func finishPostcopy(_ complete: Complete, _ postcopy: DestinationPostcopy, on connection: FramedConnection)
        throws
    {
        let missing = postcopy.pages.missingCount
        let digest = hashTable.digest()
        var problems: [String] = []
        if missing > 0 { problems.append("\(missing) pages never arrived") }
        if digest != complete.digest { problems.append("digest \(hex(digest)) ≠ the source's \(hex(complete.digest))") }
        if complete.stateDigest != postcopy.stateDigest { problems.append("COMPLETE names another device state") }
        if missing == 0 && !problems.isEmpty {
            // Every page is here, each checked against its hash as it came: a COMPLETE that
            // disagrees was damaged on its way. Resumed, the source sends it again.
            throw PostcopyDamage(
                MigrationError(
                    .verification, "COMPLETE disagrees with the verified pages (\(problems.joined(separator: "; ")))",
                    guest: .lost))
        }
        postcopy.stopServing()
        postcopy.stopMapping()
        if problems.isEmpty {
            // Every page is here and verified: only now is the image the guest's.
            do { try publishImage() } catch {
                problems.append("the verified image could not become \(options.imagePath): \(error)")
            }
        }
        if problems.isEmpty {
            // Before VERIFIED goes: a source that loses it (or trips over a frame after it)
            // asks at once (STATUS_QUERY with its token), and this says the memory verified.
            registry.handoffs.set(session: sessionID, .resumed, digest: digest)
        }
        try postcopy.send(
            Verified(
                ok: problems.isEmpty, digest: digest, pagesMissing: UInt64(missing), verifyMicroseconds: 0,
                message: problems.joined(separator: "; ")),
            on: connection)
        guard problems.isEmpty else {
            throw MigrationError(
                .verification, "the memory did not verify after post-copy: \(problems.joined(separator: "; "))",
                guest: .lost)
        }
        try postcopy.pages.close()
        report.digest = hex(digest)
        receiving.digest = digest
    }
}
