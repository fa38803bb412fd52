import FerryGuest
import FerryProtocol
import FerrySystem
import FerryTestSupport
import Foundation
import Synchronization
import Testing

@testable import FerryMigration

/// `MigrationCancellation` in process (issue 13, item 2): a cancel from another thread during
/// round 0 ends the migration on both sides at once, with the guest on the source. The
/// signals that trigger it in `ferry` are tested in `SignalTests` and the fault matrix.
@Suite struct CancellationTests {
    /// A migration whose round 0 takes ~4 s (32 MiB at 8 MB/s), cancelled on `side` once round 0
    /// has sent a few batches.
    static func cancelledInRoundZero(source: Bool) throws -> (LoopbackMigration.Outcome, Double) {
        let scratch = Scratch()
        let cancellation = MigrationCancellation()
        let cancelledAt = Mutex<UInt64>(0)
        var migration = LoopbackMigration()
        migration.workload = "uniform:2MB/s"
        migration.maxBandwidth = 8e6
        migration.mix = ImageMix(zero: 0, sparse: 0, text: 0, random: 100)
        migration.sourceProgress = { progress in
            guard progress.kind == .live, progress.round == 0, progress.pagesSent > 1_000 else { return }
            if cancellation.cancel("test") { cancelledAt.withLock { $0 = MonotonicClock.now() } }
        }
        if source {
            migration.adjustSource = { $0.cancellation = cancellation }
        } else {
            migration.destinationCancellation = cancellation
        }
        let outcome = try migration.run(in: scratch)
        let start = cancelledAt.withLock { $0 }
        return (outcome, start == 0 ? .infinity : MonotonicClock.seconds(since: start))
    }

    @Test func aCancelledSourceAbortsAndKeepsItsGuest() throws {
        let (outcome, seconds) = try Self.cancelledInRoundZero(source: true)
        let source = try #require(outcome.source.failure as? MigrationError, "the source must fail")
        #expect(source.code == .cancelled && source.guest == .source, "\(source)")
        #expect(outcome.guestWasRunningAfterFailure, "the guest keeps running on the source")
        #expect(outcome.sourceReport?.outcome == .cancelled)
        let destination = try #require(outcome.destination.failure as? MigrationError)
        #expect(destination.code == .peerAborted && destination.message.contains("cancelled (test)"), "\(destination)")
        // Both sides done long before round 0 (~4 s) or the destination's resume timeout (30 s).
        #expect(seconds < 2, "both sides ended \(seconds) s after the cancel")
    }

    @Test func aCancelledDestinationAbortsAndTheSourceKeepsItsGuest() throws {
        let (outcome, seconds) = try Self.cancelledInRoundZero(source: false)
        let destination = try #require(outcome.destination.failure as? MigrationError)
        #expect(destination.code == .cancelled && destination.guest == .notHere, "\(destination)")
        let source = try #require(outcome.source.failure as? MigrationError, "the source must fail")
        #expect(source.code == .peerAborted && source.guest == .source, "\(source)")
        #expect(source.message.contains("cancelled (test)"), "\(source.message)")
        #expect(outcome.guestWasRunningAfterFailure)
        #expect(seconds < 2, "both sides ended \(seconds) s after the cancel")
    }

    /// A destination cancelled after it sent `VERIFIED`, whose `COMMIT` arrives 3 s later (a
    /// slow network): the source decides, so the destination waits for `COMMIT` as if there were
    /// no cancel and the guest migrates. (A shortened wait would discard a guest whose source
    /// had already handed it over: it would run nowhere.)
    @Test func aDestinationCancelledAfterVerifiedStillTakesALateCommit() throws {
        let scratch = Scratch()
        let cancellation = MigrationCancellation()
        var migration = LoopbackMigration()
        migration.destinationCancellation = cancellation
        migration.route = { port in
            try Relay(to: port) { frame in
                if frame.direction == .toSource && frame.type == FrameType.verified.rawValue {
                    cancellation.cancel("test")
                }
                return frame.direction == .toDestination && frame.type == FrameType.commit.rawValue
                    ? .delay(milliseconds: 3_000) : .forward
            }.port
        }
        let outcome = try migration.run(in: scratch)
        #expect(cancellation.isCancelled, "the relay saw VERIFIED and cancelled the destination")
        #expect(outcome.source.failure == nil, "\(String(describing: outcome.source.failure))")
        #expect(outcome.destination.failure == nil, "\(String(describing: outcome.destination.failure))")
        #expect(!outcome.guestWasRunningAfterFailure)
    }

    @Test func aCancelEndsASleep() {
        let cancellation = MigrationCancellation()
        let start = MonotonicClock.now()
        #expect(cancellation.sleep(seconds: 0.05), "an uncancelled sleep runs out")
        Thread {
            Thread.sleep(forTimeInterval: 0.1)
            cancellation.cancel("test")
        }.start()
        #expect(!cancellation.sleep(seconds: 10))
        #expect(MonotonicClock.seconds(since: start) < 2)
    }

    @Test func theLastPointOfCancelHonoursAnEarlierCancelAndRefusesLaterOnes() throws {
        let early = MigrationCancellation()
        #expect(early.cancel("before"))
        #expect(throws: MigrationError.self) { try early.passCommitPoint(during: "the blackout", guest: .source) }
        #expect(!early.isPastCommit)
        let late = MigrationCancellation()
        try late.passCommitPoint(during: "the blackout", guest: .source)
        #expect(late.isPastCommit)
        #expect(!late.cancel("after"), "a cancel after COMMIT is refused")
        #expect(late.reason == nil && !late.isCancelled)
    }

    /// A cancel racing the last point of cancel is either honoured there (the migration ends
    /// cancelled) or refused (it goes on to COMMIT): never both, never lost.
    @Test func aCancelRacingTheLastPointOfCancelIsHonouredOrRefused() {
        var honoured = 0
        for _ in 0..<2_000 {
            let cancellation = MigrationCancellation()
            let accepted = Mutex<Bool?>(nil)
            let ready = DispatchSemaphore(value: 0)
            let thread = Thread {
                ready.signal()
                accepted.withLock { $0 = cancellation.cancel("race") }
            }
            thread.start()
            ready.wait()
            let thrown = (try? cancellation.passCommitPoint(during: "the blackout", guest: .source)) == nil
            while accepted.withLock({ $0 }) == nil { sched_yield() }
            let took = accepted.withLock { $0 } ?? false
            #expect(took == thrown && took != cancellation.isPastCommit)
            if took { honoured += 1 }
        }
        print("cancel racing the last point of cancel: honoured \(honoured) of 2000, refused the rest")
    }

    @Test func aCancelBeforeTheMigrationStartsEndsItAtOnce() throws {
        let cancellation = MigrationCancellation()
        #expect(cancellation.cancel("early"))
        #expect(!cancellation.cancel("again"), "the first reason stays")
        #expect(cancellation.reason == "early")
        var migration = LoopbackMigration()
        migration.adjustSource = { $0.cancellation = cancellation }
        migration.acceptTimeoutMs = 1_000
        let outcome = try migration.run(in: Scratch())
        let source = try #require(outcome.source.failure as? MigrationError)
        #expect(source.code == .cancelled && source.message.contains("the handshake"), "\(source)")
    }
}
