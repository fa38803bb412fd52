import FerryCodec
import FerryGuest
import FerryGuestMigration
import FerryKVMMigration
import FerryProtocol
import FerrySystem
import FerryTestSupport
import FerryTransport
import Foundation
import Synchronization
import Testing

@testable import FerryMigration

/// Resuming a pre-copy after the network cut every connection (Protocol.md, "Resuming after a
/// connection loss"), over real TCP through a `Relay` that cuts after a count of bytes.
@Suite(.serialized, .tags(.slow), .skippable(.slow)) struct ResumeTests {
    /// Almost every page carries data, so bytes on the wire follow pages.
    static let mostlyData = ImageMix(zero: 0, sparse: 10, text: 40, random: 50)

    /// Wire bytes of round 0 when every page is sent raw: a 24-byte descriptor and the page.
    static func roundZeroBytes(pages: Int) -> Int { pages * (systemPageSize + 24) }

    /// The relay the route closure made, kept for the test to read.
    final class RelayHolder: @unchecked Sendable {
        var relay: Relay?
    }

    /// A cut at 80% of round 0's bytes: the source reconnects, the destination reports the pages it
    /// holds, and the round after the resume carries about the remaining 20% plus what the guest
    /// dirtied — not a restart. The image verifies and equals the source's.
    @Test func cutAtEightyPercentOfRoundZeroResendsOnlyTheRest() throws {
        let scratch = Scratch()
        var migration = LoopbackMigration()
        migration.size = 128 << 20
        migration.mix = Self.mostlyData
        // Slow enough that a loaded machine (a slow round 0) does not dirty a third of the image.
        migration.workload = "uniform:10MB/s"
        migration.compression = .none
        migration.runFor = 0
        let pages = migration.size / systemPageSize
        let roundZero = Self.roundZeroBytes(pages: pages)
        let holder = RelayHolder()
        migration.route = { port in
            let relay = try Relay(to: port)
            relay.cut(afterBytes: roundZero * 8 / 10)
            holder.relay = relay
            return relay.port
        }
        let outcome = try migration.run(in: scratch)
        let relay = try #require(holder.relay)
        defer { relay.stop() }
        let report = try outcome.source.get()
        let destination = try outcome.destination.get()
        #expect(report.verified)
        #expect(relay.cutCount == 1)
        #expect(report.resumes == 1)
        #expect(destination.report.resumes == 1)
        let record = try #require(report.resumeRecords.first)
        #expect(record.round == 0)
        let share = Double(record.wireBytesResent) / Double(migration.size)
        print(
            String(
                format:
                    "resume after a cut at 80%% of round 0 (%d bytes through the relay): destination held %d of %d pages (%d from round 0); %d dirtied; resent %d pages, %d wire bytes = %.1f%% of the %d-byte image; outage %.1f ms; total wire %d bytes (%.2f× the image) in %d rounds",
                roundZero * 8 / 10, record.pagesHeld, pages, record.pagesHeldFromRound, record.pagesDirtied,
                record.pagesResent,
                record.wireBytesResent, share * 100, migration.size, record.outageMs, report.wireBytes,
                Double(report.wireBytes) / Double(migration.size), report.rounds))
        // The remaining ~20% (less what was in flight) plus the pages dirtied: well under 40%.
        #expect(share < 0.40, "resent \(share * 100)% of the image")
        #expect(share > 0.10, "the remaining 20% must be sent again; resent only \(share * 100)%")
        #expect(record.pagesHeld >= pages * 7 / 10)
        // Exactly the pages not held (round 0: `current` is `held`) and the dirtied ones.
        #expect(record.pagesHeldFromRound == record.pagesHeld)
        #expect(record.pagesResent >= pages - record.pagesHeld)
        #expect(record.pagesResent <= pages - record.pagesHeld + record.pagesDirtied)
        #expect(Double(report.wireBytes) < 1.6 * Double(migration.size), "a restart would send the image twice")
        #expect(
            try Transparency.difference(between: scratch.file("destination.img"), and: scratch.file("source.img"))
                == nil)
        #expect(!FileManager.default.fileExists(atPath: scratch.file("destination.img.partial")))
    }

    /// A cut in a later round while the guest dirties memory: the lost round's pages that did not
    /// arrive and everything dirtied (the outage included) are sent again; the guest run on from
    /// the migrated image equals one that never migrated.
    @Test(arguments: [TrackerChoice.auto, .mprotect])
    func cutInALaterRoundWhileTheGuestWrites(tracker: TrackerChoice) throws {
        let scratch = Scratch()
        var migration = LoopbackMigration()
        migration.tracker = tracker
        migration.size = 64 << 20
        migration.mix = Self.mostlyData
        migration.workload = "uniform:60MB/s"
        migration.compression = .none
        migration.runFor = 0
        // Never converges on its own: four pre-copy rounds, then a forced switchover.
        migration.settings = ConvergenceSettings(
            downtimeTarget: .seconds(0.000_001), maxRounds: 4, timeout: .seconds(60),
            autoConverge: false, forceSwitchover: true)
        let roundZero = Self.roundZeroBytes(pages: migration.size / systemPageSize)
        let holder = RelayHolder()
        migration.route = { port in
            let relay = try Relay(to: port)
            relay.cut(afterBytes: roundZero + (2 << 20))
            holder.relay = relay
            return relay.port
        }
        let outcome = try migration.run(in: scratch)
        let relay = try #require(holder.relay)
        defer { relay.stop() }
        let report = try outcome.source.get()
        #expect(report.verified)
        #expect(report.resumes == 1)
        let record = try #require(report.resumeRecords.first)
        #expect(record.round >= 1)
        print(
            "resume after a cut in round \(record.round) (tracker \(report.tracker ?? "?")): destination held \(record.pagesHeld) pages (\(record.pagesHeldFromRound) from that round); resent \(record.pagesResent) pages, \(record.wireBytesResent) wire bytes; outage \(record.outageMs) ms"
        )
        _ = try outcome.destination.get()
        #expect(
            try Transparency.difference(between: scratch.file("destination.img"), and: scratch.file("source.img"))
                == nil)
    }

    /// Two cuts: in round 0, then in the round that resends after the first resume. Each resume
    /// reports the round it lost; the image verifies and equals the source's.
    @Test func twoCutsInARow() throws {
        let scratch = Scratch()
        var migration = LoopbackMigration()
        migration.size = 64 << 20
        migration.mix = Self.mostlyData
        migration.workload = "uniform:20MB/s"
        migration.compression = .none
        migration.runFor = 0
        let roundZero = Self.roundZeroBytes(pages: migration.size / systemPageSize)
        let holder = RelayHolder()
        migration.route = { port in
            let relay = try Relay(to: port)
            relay.cut(afterBytes: [roundZero / 2, roundZero / 2 + roundZero / 4])
            holder.relay = relay
            return relay.port
        }
        let outcome = try migration.run(in: scratch)
        let relay = try #require(holder.relay)
        defer { relay.stop() }
        let report = try outcome.source.get()
        #expect(relay.cutCount == 2)
        #expect(report.resumes == 2)
        #expect(report.resumeRecords.map(\.round) == [0, 1])
        #expect(report.verified)
        _ = try outcome.destination.get()
        #expect(
            try Transparency.difference(between: scratch.file("destination.img"), and: scratch.file("source.img"))
                == nil)
    }

    /// The network stays down: the source gives up after its attempts with an error that says so,
    /// its guest still running; the destination waits out its grace period, removes the partial
    /// image and frees its slot (the next source is received).
    @Test func sourceGivesUpAndDestinationDiscardsAfterItsGracePeriod() throws {
        let scratch = Scratch()
        try FileManager.default.createDirectory(atPath: scratch.file("guests"), withIntermediateDirectories: true)
        let server = DestinationServer(
            options: DestinationOptions(
                listen: try Endpoint.parse("127.0.0.1:0"), imagePath: "", runFor: .seconds(0),
                receiveTimeout: .milliseconds(20_000), resumeTimeout: .seconds(1)),
            directory: scratch.file("guests"), maxSessions: 1, logger: testLogger)
        let port = try server.bind()
        let serving = BackgroundThread { try server.run(count: 2) }
        let relay = try Relay(to: port)
        defer { relay.stop() }
        relay.afterCut = .refuse
        relay.cut(afterBytes: 4 << 20)
        let lost = try SourceGuest(scratch: scratch, name: "lost", port: relay.port, size: 32 << 20, seed: 7) {
            options in
            options.reconnectAttempts = 3
            options.reconnectBackoff = .seconds(0.05)
        }
        let started = MonotonicClock.now()
        let error = #expect(throws: MigrationError.self) { _ = try lost.agent.migrate() }
        #expect(error?.code == .transport)
        #expect(error?.guest == .source)
        #expect(error?.message.contains("could not resume in 3 attempt(s)") == true, "\(error?.message ?? "")")
        #expect(MonotonicClock.seconds(since: started) < 10)
        #expect(lost.isRunning(), "the source guest must keep running")
        _ = lost.guest.stop()

        // The destination discards the migration once its grace period is over.
        var waited = 0.0
        while server.activeCount > 0 && waited < 10 {
            Thread.sleep(forTimeInterval: 0.05)
            waited += 0.05
        }
        #expect(server.activeCount == 0)
        #expect(!FileManager.default.fileExists(atPath: scratch.file("guests/lost.img.partial")))
        #expect(!FileManager.default.fileExists(atPath: scratch.file("guests/lost.img")))
        // The slot is free: the next source is received.
        let next = try SourceGuest(scratch: scratch, name: "next", port: port, seed: 8)
        #expect(try next.migrate().verified)
        let outcomes = try serving.wait()
        #expect(outcomes.count == 2)
        let first = try #require(outcomes.first { $0.guestName == "lost" })
        guard case .failure(let discarded) = first.result else {
            Issue.record("the lost migration must fail at the destination")
            return
        }
        #expect(discarded.message.contains("did not resume within 1 s"), "\(discarded.message)")
        #expect(discarded.guest == .notHere)
    }

    /// With resuming off (`ferry send --no-resume`) a cut ends the migration at once: the source
    /// does not reconnect and its guest keeps running; the destination discards after its grace.
    @Test func withoutResumeACutEndsTheMigration() throws {
        let scratch = Scratch()
        var migration = LoopbackMigration()
        migration.workload = "uniform:20MB/s"
        migration.destinationResumeTimeout = 0.5
        migration.adjustSource = { $0.resume = false }
        let holder = RelayHolder()
        migration.route = { port in
            let relay = try Relay(to: port)
            relay.cut(afterBytes: 8 << 20)
            holder.relay = relay
            return relay.port
        }
        let outcome = try migration.run(in: scratch)
        holder.relay?.stop()
        let error = try #require(outcome.source.failure as? MigrationError)
        #expect(error.code == .transport)
        #expect(error.guest == .source)
        #expect(!error.message.contains("resume"), "\(error.message)")
        #expect(outcome.guestWasRunningAfterFailure)
        let destinationError = try #require(outcome.destination.failure as? MigrationError)
        #expect(destinationError.message.contains("did not resume within 0.5 s"), "\(destinationError.message)")
        #expect(!FileManager.default.fileExists(atPath: scratch.file("destination.img.partial")))
    }

    /// A `RESUME` naming no migration here is closed and does not count as a source.
    @Test func resumeForAnUnknownSessionIsClosed() throws {
        let scratch = Scratch()
        let destination = DestinationAgent(
            options: DestinationOptions(
                listen: try Endpoint.parse("127.0.0.1:0"), imagePath: scratch.file("g.img"),
                acceptTimeout: .milliseconds(1500), receiveTimeout: .milliseconds(5_000)),
            logger: testLogger)
        let port = try destination.bind()
        let receiving = BackgroundThread { try destination.run() }
        let stream = try TCPStream.connect(Endpoint(host: "127.0.0.1", port: port), timeoutMs: 2000)
        try stream.setReceiveTimeout(ms: 5000)
        let connection = FramedConnection(stream)
        defer { connection.close() }
        try connection.send(
            Resume(sessionID: 0x5EED_0000_0000_0001, sessionToken: .random(), pageCount: 4096, round: 0))
        let error = #expect(throws: TransportError.self) { _ = try connection.receive() }
        #expect(error?.code == .peerClosed, "\(error?.message ?? "")")
        let result = receiving.result()
        let failure = try #require(result.failure as? MigrationError)
        #expect(failure.message.contains("no source connected"), "\(failure.message)")
        #expect(!FileManager.default.fileExists(atPath: scratch.file("g.img.partial")))
    }

    /// The pages of a batch cut off mid-payload no longer count as held intact, even those that
    /// arrived intact before (their bytes may be torn), and they are marked as possibly non-zero.
    @Test func aBatchCutOffLeavesItsPagesNotIntact() throws {
        let pageSize = systemPageSize
        let pageCount = 8
        let memory = UnsafeMutableRawPointer.allocate(byteCount: pageCount * pageSize, alignment: pageSize)
        defer { memory.deallocate() }
        memory.initializeMemory(as: UInt8.self, repeating: 0, count: pageCount * pageSize)
        let sink = PageSink(
            memory: GuestMemory(base: memory, size: pageCount * pageSize, pageSize: pageSize), pageCount: pageCount,
            hashTable: PageHashTable(pageCount: pageCount))
        let listener = try TCPListener(try Endpoint.parse("127.0.0.1:0"))
        let client = try TCPStream.connect(Endpoint(host: "127.0.0.1", port: listener.port), timeoutMs: 2000)
        let server = try listener.accept(timeoutMs: 2000)
        listener.close()
        try server.setReceiveTimeout(ms: 5000)
        let receiver = FramedConnection(server)
        defer { receiver.close() }

        var bytes: [UInt8] = []
        func le<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
        func batch(sequence: UInt64, round: UInt32, pages: [(UInt64, UInt8)], payloadBytes: Int) {
            le(FrameType.pageBatch.rawValue)
            le(UInt16(0))
            le(UInt32(8 + pages.count * (24 + pageSize)))
            le(sequence)
            le(round)
            le(UInt32(pages.count))
            for (page, fill) in pages {
                let content = [UInt8](repeating: fill, count: pageSize)
                le(page)
                le(content.withUnsafeBytes { PageHash.hash($0.baseAddress!, count: pageSize) })
                le(UInt32(pageSize))
                le(UInt32(2))
            }
            var payload: [UInt8] = []
            for (_, fill) in pages { payload += [UInt8](repeating: fill, count: pageSize) }
            bytes += payload.prefix(payloadBytes)
        }
        // Round 0: pages 3 and 4 arrive intact. Round 1: pages 3, 4, 5, cut after 1.5 pages.
        batch(sequence: 0, round: 0, pages: [(3, 1), (4, 2)], payloadBytes: 2 * pageSize)
        batch(sequence: 1, round: 1, pages: [(3, 7), (4, 8), (5, 9)], payloadBytes: pageSize + pageSize / 2)
        try bytes.withUnsafeBytes { try client.writeAll($0) }
        client.shutdownWrite()

        for expectedPages in [2] {
            guard case .direct(_, _, let length) = try receiver.receive(direct: .pageBatch) else {
                Issue.record("expected a PAGE_BATCH")
                return
            }
            #expect(try sink.receive(batchLength: length, from: receiver) == expectedPages)
        }
        #expect(sink.isIntact(3) && sink.isIntact(4))
        guard case .direct(_, _, let length) = try receiver.receive(direct: .pageBatch) else {
            Issue.record("expected a PAGE_BATCH")
            return
        }
        #expect(throws: TransportError.self) { _ = try sink.receive(batchLength: length, from: receiver) }
        #expect(!sink.isIntact(3) && !sink.isIntact(4) && !sink.isIntact(5))
        #expect(sink.firstStalePage == 3)
        client.close()
    }

    /// After a resume the source sends the pages not held, those of the lost round whose copy of
    /// that round did not arrive (even if an older copy is held), and the dirtied ones — and
    /// nothing else.
    @Test func resendSetIsNotHeldPlusLostCopiesPlusDirtied() {
        let count = 300
        func bitmap(_ pages: [Int]) -> DirtyBitmap {
            var map = DirtyBitmap(count: count)
            for page in pages { map.set(page) }
            return map
        }
        var held = DirtyBitmap(count: count)
        held.setAll()
        for page in [5, 6, 299] { held.clear(page) }  // never arrived or torn
        let current = bitmap([10, 11, 12])  // arrived in the lost round
        let lostRound = bitmap([10, 11, 12, 13, 14, 5])  // what the lost round was to send
        var pending = bitmap([100, 12])  // dirtied since the last harvest
        SourceAgent.addPagesToResend(
            to: &pending, held: HeldPages(held: held, current: current, round: 3), lostRound: lostRound)
        var resent: [Int] = []
        pending.forEachSetBit { resent.append($0) }
        #expect(resent == [5, 6, 12, 13, 14, 100, 299])
    }

    /// RESUME_STATE frames cover at most 2^26 pages each; the source rebuilds the same bitmaps
    /// from the encoded frames, and rejects them out of order.
    @Test func heldPagesTravelInSeveralFrames() throws {
        let count = ResumeState.maxPagesPerFrame + 130
        var held = DirtyBitmap(count: count)
        var current = DirtyBitmap(count: count)
        for page in [0, 63, 64, ResumeState.maxPagesPerFrame - 1, ResumeState.maxPagesPerFrame, count - 1] {
            held.set(page)
        }
        for page in [63, ResumeState.maxPagesPerFrame, count - 1] { current.set(page) }
        let state = HeldPages(held: held, current: current, round: 9)
        let frames = state.frames()
        #expect(frames.count == 2 && HeldPages.frameCount(pageCount: count) == 2)
        #expect(frames.map(\.pages) == [UInt64(ResumeState.maxPagesPerFrame), 130])
        let decoded = try frames.map { frame in
            try frame.encodedPayload().withUnsafeBytes { try ResumeState(payload: $0) }
        }
        let rebuilt = try HeldPages(frames: decoded, pageCount: count, round: 9)
        #expect(rebuilt.held == held && rebuilt.current == current)
        #expect(rebuilt.heldCount == 6 && rebuilt.currentCount == 3)
        #expect(throws: ProtocolError.self) {
            _ = try HeldPages(frames: decoded.reversed(), pageCount: count, round: 9)
        }
        #expect(throws: ProtocolError.self) { _ = try HeldPages(frames: [decoded[0]], pageCount: count, round: 9) }
        #expect(throws: ProtocolError.self) { _ = try HeldPages(frames: decoded, pageCount: count, round: 8) }
    }

    @Test func reconnectWaitsDoubleUpToTheCap() {
        let options = SourceOptions(destination: Endpoint(host: "127.0.0.1", port: 1))
        #expect((2...8).map { SourceAgent.backoff(attempt: $0, options: options) } == [0.25, 0.5, 1, 2, 4, 4, 4])
    }
}
