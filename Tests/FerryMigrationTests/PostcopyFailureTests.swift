import FerryProtocol
import FerrySystem
import FerryTestSupport
import Foundation
import Synchronization
import Testing

@testable import FerryMigration

/// Post-copy's failures that the fault matrix (FaultMatrixTests, docs/fault-matrix.md) found,
/// each injected in-process on loopback: a lost COMMIT, a push that goes silent, a lost
/// VERIFIED after COMPLETE, and where the destination's image is while pages are missing.
@Suite(.serialized, .tags(.slow), .skippable(.slow)) struct PostcopyFailureTests {
    /// The COMMIT of the switch cut on its way: the destination keeps its verified state and
    /// waits; the source, without RESUMED, asks it where the guest is, sends COMMIT again on
    /// that connection and pushes the pages there (before: the source reported the guest lost
    /// at once while the destination discarded it — the guest ran nowhere).
    @Test("a COMMIT lost in the switch to post-copy is sent again; the guest migrates")
    func aLostCommitIsResolved() throws {
        let scratch = Scratch()
        var migration = PostcopyTests.migration()
        let relay = migration.cutFirst(.commit, going: .toDestination)
        defer { relay.value?.stop() }
        let outcome = try migration.run(in: scratch)
        let report = try outcome.source.get()
        let destination = try outcome.destination.get()
        #expect(relay.value?.cutCount == 1)
        #expect(report.postcopy != nil && report.guestLocation == .destination && report.verified)
        #expect(report.handoff?.contains("the first COMMIT was lost") == true, "\(report.handoff ?? "")")
        #expect(destination.report.verified)
        #expect(FileManager.default.fileExists(atPath: scratch.file("destination.img")))
    }

    /// The connection goes silent both ways at the first page the push sends (a partition, no
    /// FIN, no RST): the source notices within --stall-timeout that nothing is acknowledged,
    /// reconnects with RESUME — which wakes the destination's read of the silent connection —
    /// and sends the rest (before: both sides waited forever, the guest's faulting vCPUs with them).
    @Test("a push that goes silent is noticed within --stall-timeout and resumed")
    func aSilentPushIsResumed() throws {
        let scratch = Scratch()
        var migration = PostcopyTests.migration()
        migration.adjustSource = {
            $0.settings.postcopy = PostcopySettings(afterRounds: 1)
            $0.stallTimeout = .seconds(1)
        }
        let relay = Box<PhaseFaultRelay>()
        migration.route = { port in
            let made = try PhaseFaultRelay(upstreamPort: port, phase: .push, fault: .blackhole)
            relay.value = made
            return made.port
        }
        defer { relay.value?.stop() }
        let started = MonotonicClock.now()
        let outcome = try migration.run(in: scratch)
        let report = try outcome.source.get()
        let destination = try outcome.destination.get()
        #expect(relay.value?.injected == true)
        #expect(report.resumes == 1 && destination.report.resumes == 1, "\(report.resumes)")
        #expect(report.verified && destination.report.verified && report.guestLocation == .destination)
        #expect(MonotonicClock.seconds(since: started) < 15)
    }

    /// Damage after RESUMED, either way: a bit flipped in the push's first batch (the
    /// destination finds a page whose hash differs, or a batch that does not decode) or in the
    /// first PAGE_REQUEST's count (the source finds a request that does not parse). The side that finds it
    /// drops the connection without ABORT, and the migration resumes as after a cut: nothing
    /// damaged reached the guest (before: the guest was lost).
    @Test(
        "damage on the wire during post-copy is dropped with its connection and resumed; the guest verifies",
        arguments: [(WirePhase.push, "push: a page flipped"), (WirePhase.pageRequest, "request: its count flipped")])
    func damageIsResumed(_ phase: WirePhase, _ what: String) throws {
        let scratch = Scratch()
        var migration = PostcopyTests.migration()
        let relay = Box<PhaseFaultRelay>()
        migration.route = { port in
            let made = try PhaseFaultRelay(
                upstreamPort: port, phase: phase, fault: phase == .push ? .flipPayloadBit : .flipPayloadByte(0))
            relay.value = made
            return made.port
        }
        defer { relay.value?.stop() }
        let outcome = try migration.run(in: scratch)
        let report = try outcome.source.get()
        let destination = try outcome.destination.get()
        #expect(relay.value?.injected == true, "\(what): \(relay.value?.phasesReached ?? [])")
        #expect(report.resumes == 1 && destination.report.resumes == 1, "\(what): \(report.resumes)")
        #expect(report.verified && destination.report.verified && report.guestLocation == .destination, "\(what)")
        #expect(FileManager.default.fileExists(atPath: scratch.file("destination.img")))
    }

    /// The first PAGE_REQUEST rewritten to name its first page twice (a destination may ask
    /// for a page again): the source sends it once and counts it once. Before, it counted the
    /// page twice: the report's requested + pushed came to one more than the stale pages, and a
    /// destination repeating more pages than the last batch holds would have ended the push
    /// with pages unsent (the guest lost at the final verification).
    @Test("a page asked for twice is sent and counted once; the guest verifies")
    func aPageAskedForTwiceIsSentOnce() throws {
        let scratch = Scratch()
        var migration = PostcopyTests.migration()
        let rewritten = Mutex(false)
        let relay = Box<Relay>()
        migration.route = { port in
            let made = try Relay(to: port, options: .halfClose) { frame in
                guard frame.direction == .toSource, frame.type == 38, !rewritten.withLock({ $0 }),
                    let count = frame.payload(UInt32.self, at: 0), count < 511
                else { return .forward }
                let header = FrameParser.headerSize
                frame.bytes += frame.bytes[(header + 8)..<(header + 16)]  // the first page again
                let length = UInt32(frame.bytes.count - header)
                frame.bytes.withUnsafeMutableBytes { raw in
                    raw.storeBytes(of: (count + 1).littleEndian, toByteOffset: header, as: UInt32.self)
                    raw.storeBytes(of: length.littleEndian, toByteOffset: 4, as: UInt32.self)
                }
                rewritten.withLock { $0 = true }
                return .forward
            }
            relay.value = made
            return made.port
        }
        defer { relay.value?.stop() }
        let outcome = try migration.run(in: scratch)
        let report = try outcome.source.get()
        let destination = try outcome.destination.get()
        #expect(rewritten.withLock { $0 })
        #expect(report.verified && destination.report.verified && report.guestLocation == .destination)
        let postcopy = try #require(report.postcopy)
        #expect(postcopy.requestedPages + postcopy.pushedPages == postcopy.stalePages, "\(postcopy)")
    }

    /// The destination's VERIFIED after COMPLETE is lost: it has left post-copy (it takes no
    /// RESUME any more) and runs the guest. The source, no answer within --stall-timeout of
    /// COMPLETE being acknowledged, asks it with its token and hears the memory verified (before:
    /// it waited --reply-timeout, then reported the guest lost while it ran on the destination).
    /// Also: while pages are missing the image is `PATH.partial`, never `PATH`.
    @Test("a lost VERIFIED after COMPLETE is asked for; PATH appears only once the memory verified")
    func aLostVerifiedIsAskedFor() throws {
        let scratch = Scratch()
        var migration = PostcopyTests.migration()
        migration.adjustSource = {
            $0.settings.postcopy = PostcopySettings(afterRounds: 1)
            $0.stallTimeout = .seconds(1)
        }
        let path = scratch.file("destination.img")
        // At COMPLETE (the guest runs on the destination, its last pages on the way): which files exist.
        let seen = Mutex<(path: Bool, partial: Bool)?>(nil)
        let relay = Box<Relay>()
        migration.route = { port in
            let completed = Atomic<Bool>(false)
            let made = try Relay(to: port, options: .halfClose) { frame in
                if frame.direction == .toDestination && frame.type == FrameType.complete.rawValue {
                    let files = (ImageFile.exists(path: path), ImageFile.exists(path: path + ".partial"))
                    seen.withLock { $0 = $0 ?? files }
                    completed.store(true, ordering: .releasing)
                }
                if frame.direction == .toSource && frame.type == FrameType.verified.rawValue
                    && completed.load(ordering: .acquiring)
                {
                    return .drop
                }
                return .forward
            }
            relay.value = made
            return made.port
        }
        defer { relay.value?.stop() }
        let outcome = try migration.run(in: scratch)
        let report = try outcome.source.get()
        let destination = try outcome.destination.get()
        #expect(report.handoff?.contains("VERIFIED was lost") == true, "\(report.handoff ?? "")")
        #expect(report.verified && report.guestLocation == .destination && destination.report.verified)
        let files = try #require(seen.withLock { $0 }, "COMPLETE never passed")
        #expect(!files.path && files.partial, "during post-copy: PATH \(files.path), PATH.partial \(files.partial)")
        #expect(ImageFile.exists(path: path) && !ImageFile.exists(path: path + ".partial"))
    }

    /// The destination's background mapper (which maps the present pages into the guest's view
    /// run by run) fails, injected through its test seam: post-copy ends at once with that
    /// failure named — before, it was taken for a lost connection and the session waited for a
    /// resume — the source is told with ABORT, both sides report the guest lost, and the source
    /// does not resume its copy.
    @Test("a failure to map the present pages ends post-copy at once, named; both sides report the guest lost")
    func aMappingFailureLosesTheGuestAtOnce() throws {
        let scratch = Scratch()
        var migration = PostcopyTests.migration()
        migration.adjustDestination = {
            $0.beforePostcopyMapping = { _ in
                throw SystemError(call: "ioctl(UFFDIO_CONTINUE) (injected)", errno: Errno(ENOMEM))
            }
        }
        let outcome = try migration.run(in: scratch)
        let destinationError = try #require(outcome.destination.failure as? MigrationError)
        #expect(destinationError.code == .system && destinationError.guest == .lost, "\(destinationError)")
        #expect(
            destinationError.message.contains("mapping the guest's present pages")
                && destinationError.message.contains("the guest is lost"), "\(destinationError)")
        #expect(outcome.destinationReport?.resumes == 0, "a mapping failure was taken for a lost connection")
        let sourceError = try #require(outcome.source.failure as? MigrationError)
        #expect(sourceError.code == .peerAborted && sourceError.guest == .lost, "\(sourceError)")
        #expect(sourceError.message.contains("mapping the guest's present pages"), "\(sourceError)")
        #expect(outcome.sourceReport?.resumes == 0, "the source reconnected to a destination that gave up")
        #expect(!outcome.guestWasRunningAfterFailure, "the source resumed a guest it handed over")
        #expect(!FileManager.default.fileExists(atPath: scratch.file("destination.img")))
        #expect(FileManager.default.fileExists(atPath: scratch.file("destination.img.lost")))
    }
}
