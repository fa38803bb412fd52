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

/// A destination that goes silent, or answers one byte at a time, at each step of the blackout
/// (finding 4 of issue 11): the source's guest is never paused longer than `--blackout-timeout`;
/// it resumes on the source, and the destination is told to discard, so the guest runs in exactly
/// one place. And a destination that stops reading during pre-copy is noticed within
/// `--stall-timeout`, not the 60 s reply timeout.
@Suite(.tags(.slow), .skippable(.slow)) struct WedgedDestinationTests {
    static let blackoutMs = 1_000

    struct Run {
        var outcome: LoopbackMigration.Outcome
        var guest: WatchedGuest
        var events: [String]
        var sourceSeconds: Double
        var destinationSeconds: Double
    }

    /// Which connection a frame travels on: the control connection or a page stream (one that
    /// opens with JOIN; connections that open with AUTH_HELLO are not told apart, the tests here
    /// use no key).
    enum Kind: Sendable { case control, pageStream }

    /// Migrates a 32 MiB guest through a frame `Relay` whose verdicts `decide` gives; `blackout`
    /// tells it whether the source's guest is paused for its blackout now.
    private func migrate(
        in scratch: Scratch, adjust: (inout LoopbackMigration) -> Void = { _ in },
        decide: @escaping @Sendable (_ blackout: Bool, Kind, Relay.Direction, FrameType?) -> Relay.Verdict
    ) throws -> Run {
        var migration = LoopbackMigration()
        migration.workload = "uniform:20MB/s"
        migration.runFor = 0
        migration.acceptTimeoutMs = 20_000
        let box = Box<WatchedGuest>()
        migration.wrapGuest = { inner in
            let watched = WatchedGuest(inner)
            box.value = watched
            return watched
        }
        migration.adjustSource = { options in
            options.blackoutTimeout = .milliseconds(Self.blackoutMs)
            options.stallTimeout = .milliseconds(1_000)
        }
        var relay: Relay?
        migration.route = { port in
            let made = try Relay(to: port) { frame in
                let watched = box.value
                let blackout = (watched?.pauses.load(ordering: .relaxed) ?? 0) >= 2 && watched?.isPaused == true
                let kind = frame.connection.opening == FrameType.join.rawValue ? Kind.pageStream : .control
                return decide(blackout, kind, frame.direction, FrameType(rawValue: frame.type))
            }
            relay = made
            return made.port
        }
        let started = MonotonicClock.now()
        let sourceEnded = Box<UInt64>()
        migration.afterSource = { _ in sourceEnded.value = MonotonicClock.now() }
        adjust(&migration)
        let outcome = try migration.run(in: scratch)
        let ended = MonotonicClock.now()
        relay?.stop()
        let guest = try #require(box.value)
        return Run(
            outcome: outcome, guest: guest, events: relay?.events ?? [],
            sourceSeconds: Double((sourceEnded.value ?? ended) &- started) / 1e9,
            destinationSeconds: Double(ended &- started) / 1e9)
    }

    /// What every blackout case must show: the guest resumed on the source after at most the
    /// deadline (plus scheduling slack), the source says why, the destination discarded at once
    /// (long before its own 20 s receive timeout) and left no image.
    private func expectResumedOnSource(_ run: Run, in scratch: Scratch, _ what: String) {
        guard case .failure(let error) = run.outcome.source else {
            Issue.record("\(what): the migration should have failed; events \(run.events)")
            return
        }
        let failure = error as? MigrationError
        #expect(failure?.guest == .source, "\(what): \(error)")
        #expect(failure?.message.contains("--blackout-timeout") == true, "\(what): \(error)")
        #expect(run.outcome.guestWasRunningAfterFailure, "\(what): the source's guest must run again")
        let paused = run.guest.longestPauseSeconds
        #expect(paused >= Double(Self.blackoutMs) / 1000 * 0.9, "\(what): paused \(paused) s")
        #expect(
            paused < Double(Self.blackoutMs) / 1000 + 0.5,
            "\(what): the guest was paused \(paused) s, the deadline is \(Self.blackoutMs) ms")
        guard case .failure = run.outcome.destination else {
            Issue.record("\(what): the destination must not run the guest")
            return
        }
        #expect(run.destinationSeconds < 12, "\(what): the destination took \(run.destinationSeconds) s to discard")
        #expect(!FileManager.default.fileExists(atPath: scratch.file("destination.img")))
        #expect(!FileManager.default.fileExists(atPath: scratch.file("destination.img.partial")))
        print(
            "\(what): guest paused \(String(format: "%.3f", paused)) s (deadline \(Self.blackoutMs) ms); source done after \(String(format: "%.2f", run.sourceSeconds)) s, destination discarded after \(String(format: "%.2f", run.destinationSeconds)) s; relay: \(run.events.prefix(3))"
        )
    }

    /// The destination goes silent when the blackout's first frame reaches it: no final page,
    /// no CPU state, no COMPLETE arrives, nothing comes back.
    @Test func destinationSilentFromTheBlackoutsStart() throws {
        let scratch = Scratch()
        let run = try migrate(in: scratch) { blackout, _, direction, _ in
            blackout && direction == .toDestination ? .wedgeAll : .forward
        }
        expectResumedOnSource(run, in: scratch, "silent from the blackout's start")
    }

    /// A page stream goes silent in the final round (its STREAM_ROUND_END never arrives).
    @Test func pageStreamSilentInTheFinalRound() throws {
        let scratch = Scratch()
        let run = try migrate(
            in: scratch,
            adjust: {
                $0.adjustSource = { options in
                    options.blackoutTimeout = .milliseconds(Self.blackoutMs)
                    options.streams = 2
                }
            },
            decide: { blackout, kind, direction, type in
                blackout && kind == .pageStream && direction == .toDestination && type == .streamRoundEnd
                    ? .wedge : .forward
            }
        )
        expectResumedOnSource(run, in: scratch, "page stream silent in the final round")
    }

    /// The destination goes silent after COMPLETE: it never answers VERIFIED.
    @Test func destinationSilentAfterComplete() throws {
        let scratch = Scratch()
        let run = try migrate(in: scratch) { blackout, kind, direction, type in
            blackout && kind == .control && direction == .toDestination && type == .complete ? .wedge : .forward
        }
        expectResumedOnSource(run, in: scratch, "silent after COMPLETE")
    }

    /// The destination answers VERIFIED one byte every 200 ms (about 15 s for the frame).
    @Test func verifiedDrippedOneByteAtATime() throws {
        let scratch = Scratch()
        let run = try migrate(in: scratch) { _, kind, direction, type in
            kind == .control && direction == .toSource && type == .verified ? .drip(milliseconds: 200) : .forward
        }
        expectResumedOnSource(run, in: scratch, "VERIFIED dripped")
    }

    /// A destination that stops reading during pre-copy (its ROUND_ACK is held and the
    /// connection stays open, as a stopped process or a partition that began after the round's
    /// last write was queued) is noticed within --stall-timeout (1 s here) instead of the 20 s
    /// reply timeout, and the migration resumes on a new connection and completes.
    @Test func roundAckHeldIsAStallThatResumes() throws {
        let scratch = Scratch()
        let held = Atomic<Bool>(false)
        let run = try migrate(in: scratch) { _, kind, direction, type in
            guard kind == .control, direction == .toSource, type == .roundAck else { return .forward }
            return held.exchange(true, ordering: .relaxed) ? .forward : .wedge
        }
        let report = try run.outcome.source.get()
        #expect(report.guestLocation == .destination)
        #expect(report.resumes == 1, "\(report.resumeRecords)")
        let outage = report.resumeRecords.first?.outageMs ?? 0
        #expect(report.totalMs < 8_000, "total \(report.totalMs) ms")
        _ = try run.outcome.destination.get()
        #expect(
            try Transparency.difference(between: scratch.file("destination.img"), and: scratch.file("source.img"))
                == nil)
        print(
            "held ROUND_ACK: stall noticed and resumed; migration \(report.totalMs) ms, outage \(outage) ms, \(report.rounds) rounds"
        )
    }
}

/// A destination that closes the source's first connection before answering its HELLO (as its
/// admission limits do to a connection a flood pushed out, Protocol.md 9.5): the source tries
/// again and migrates; its report counts the attempts.
@Suite struct HandshakeRetryTests {
    @Test func aHandshakeClosedUnansweredIsTriedAgain() throws {
        let scratch = Scratch()
        var migration = LoopbackMigration()
        migration.runFor = 0
        let relay = migration.cutFirst(.hello, going: .toDestination)
        let outcome = try migration.run(in: scratch)
        relay.value?.stop()
        let report = try outcome.source.get()
        #expect(report.guestLocation == .destination)
        #expect(report.handshakeAttempts == 2)
        _ = try outcome.destination.get()
        #expect(
            try Transparency.difference(between: scratch.file("destination.img"), and: scratch.file("source.img"))
                == nil)
    }

    /// A connection that cannot be made at all is not retried: nothing listens there.
    @Test func aRefusedConnectionIsNotRetried() throws {
        let listener = try TCPListener(try Endpoint.parse("127.0.0.1:0"))
        let port = listener.port
        listener.close()
        let region = try MappedRegion.anonymous(size: 1 << 20)
        let setup = try GuestSetup.make(
            workload: "idle", vcpus: 1, seed: 1, pageSize: systemPageSize, pageCount: (1 << 20) / systemPageSize)
        let guest = try Guest(
            memory: region.base, size: 1 << 20, configuration: setup.configuration, logger: testLogger)
        guest.start()
        defer { _ = guest.stop() }
        let agent = SourceAgent(
            memory: region.base, size: 1 << 20, imagePath: "", guest: guest, guestSetup: setup,
            options: SourceOptions(destination: try Endpoint.parse("127.0.0.1:\(port)")), logger: testLogger)
        let start = MonotonicClock.now()
        #expect(throws: MigrationError.self) { try agent.migrate() }
        #expect(MonotonicClock.seconds(since: start) < 1)
    }
}

/// A destination that aborts while the source is busy sending: the source sees the close
/// (EPIPE or a reset) first, and must still report the destination's reason from the `ABORT`
/// that arrived before it, and not take the close for a lost connection to resume.
@Suite struct AbortWhileSendingTests {
    @Test func theDestinationsReasonIsReportedNotTheClose() throws {
        let scratch = Scratch()
        var migration = LoopbackMigration()
        migration.runFor = 0
        migration.size = 64 << 20
        migration.mix = ImageMix(zero: 0, sparse: 0, text: 0, random: 100)
        migration.compression = .none
        migration.workload = "uniform:5MB/s"
        // One connection: the ABORT and the close that the source runs into travel on it.
        migration.adjustSource = { $0.streams = 1 }
        var relay: Relay?
        let batches = Atomic<Int>(0)
        migration.route = { port in
            // The 20th PAGE_BATCH claims 5,000 entries (at most 4,096): the destination aborts.
            let made = try Relay(to: port, options: .halfClose) { frame in
                guard frame.direction == .toDestination, frame.type == FrameType.pageBatch.rawValue,
                    frame.payloadCount >= 8
                else { return .forward }
                if batches.add(1, ordering: .relaxed).newValue == 20 {
                    frame.withPayload {
                        $0.storeBytes(of: UInt32(5_000).littleEndian, toByteOffset: 4, as: UInt32.self)
                    }
                }
                return .forward
            }
            relay = made
            return made.port
        }
        let started = MonotonicClock.now()
        let outcome = try migration.run(in: scratch)
        let seconds = MonotonicClock.seconds(since: started)
        relay?.stop()
        guard case .failure(let error) = outcome.source else {
            Issue.record("the migration should have failed")
            return
        }
        let failure = try #require(error as? MigrationError)
        #expect(failure.code == .peerAborted, "\(failure)")
        #expect(failure.message.contains("4096") || failure.message.contains("5000"), "\(failure.message)")
        #expect(failure.guest == .source)
        #expect(outcome.guestWasRunningAfterFailure)
        #expect(seconds < 5, "no resume attempts against a destination that said it gave up: \(seconds) s")
        print("destination aborted while the source was sending: \(failure.message.prefix(200))")
    }
}
