import FerryGuest
import FerryGuestMigration
import FerryKVMMigration
import FerryProtocol
import FerrySystem
import FerryTestSupport
import Foundation
import Synchronization
import Testing

@testable import FerryMigration

@Suite(.serialized, .tags(.slow), .skippable(.slow)) struct LoopbackMigrationTests {
    /// Every workload kind: the migrated guest, run on at the destination, must equal a guest that
    /// ran the same steps per vCPU without migrating — byte for byte.
    @Test(arguments: ["idle", "uniform:40MB/s", "hotset:40MB/s,5%,90%", "sweep:40MB/s", "trace"])
    func migrationIsTransparent(workload: String) throws {
        let scratch = Scratch()
        var migration = LoopbackMigration()
        if workload == "trace" {
            var lines = ["# t_ms page page ...", ""]
            for t in stride(from: 5, through: 400, by: 5) {
                lines.append(
                    "\(t) "
                        + (0..<20).map { String(($0 * 97 + t * 13) % (migration.size / systemPageSize)) }.joined(
                            separator: " "))
            }
            migration.traceText = lines.joined(separator: "\n")
        } else {
            migration.workload = workload
        }
        let outcome = try migration.run(in: scratch)
        let report = try outcome.source.get()
        let destination = try outcome.destination.get()
        #expect(report.verified)
        #expect(report.guestLocation == .destination)
        #expect(destination.report.verified)
        #expect(report.downtimeMs > 0)
        #expect(report.pages.total >= migration.size / systemPageSize)
        if workload != "idle" {
            // The guest kept writing on the destination.
            #expect(zip(destination.finalStates.map(\.step), report.vcpuSteps).allSatisfy { $0 >= $1 })
            #expect(destination.finalStates.map(\.step).reduce(0, +) > 0)
        }
        try Transparency.runReference(
            imagePath: scratch.file("reference.img"), setup: outcome.setup,
            steps: destination.finalStates.map(\.step), logger: testLogger)
        #expect(
            try Transparency.difference(between: scratch.file("destination.img"), and: scratch.file("reference.img"))
                == nil)
        #expect(!FileManager.default.fileExists(atPath: scratch.file("destination.img.partial")))
    }

    /// With --run-for 0 the destination image equals the source image as the source left it.
    @Test(arguments: [TrackerChoice.uffd, .mprotect])
    func destinationEqualsSourceWithRunForZero(tracker: TrackerChoice) throws {
        if tracker == .uffd, let reason = DirtyTrackers.uffdUnavailableReason() {
            try Test.cancel("userfaultfd tracker unavailable: \(reason)")
        }
        let scratch = Scratch()
        var migration = LoopbackMigration()
        migration.workload = "uniform:60MB/s"
        migration.tracker = tracker
        migration.runFor = 0
        let outcome = try migration.run(in: scratch)
        let report = try outcome.source.get()
        #expect(report.tracker == tracker.rawValue)
        _ = try outcome.destination.get()
        #expect(
            try Transparency.difference(between: scratch.file("destination.img"), and: scratch.file("source.img"))
                == nil)
    }

    @Test(arguments: [CompressionChoice.lz4, .none, .auto])
    func everyCompressionChoiceMigrates(mode: CompressionChoice) throws {
        let scratch = Scratch()
        var migration = LoopbackMigration()
        migration.workload = "uniform:20MB/s"
        migration.compression = mode
        migration.runFor = 0
        let outcome = try migration.run(in: scratch)
        let report = try outcome.source.get()
        if mode == .none { #expect(report.pages.lz4 == 0) } else { #expect(report.pages.lz4 > 0) }
        // Mostly-zero pages of the standard mix go as words, except when told never to compress.
        if mode == .none { #expect(report.pages.words == 0) } else { #expect(report.pages.words > 0) }
        #expect(report.pages.zero > 0)
        #expect(
            try Transparency.difference(between: scratch.file("destination.img"), and: scratch.file("source.img"))
                == nil)
    }

    /// A destination that does not list the words codec in ACCEPT (one that predates it) gets no
    /// words entries: a relay clears the bit in ACCEPT and reads every PAGE_BATCH table.
    @Test func wordsOnlyToADestinationThatDecodesThem() throws {
        for clear in [false, true] {
            let scratch = Scratch()
            var migration = LoopbackMigration()
            migration.workload = "uniform:20MB/s"
            migration.runFor = 0
            let seen = Mutex<(offered: Bool, words: Int)>((false, 0))
            migration.route = { port in
                try Relay(to: port, options: .halfClose) { frame in
                    if frame.direction == .toSource && frame.type == FrameType.accept.rawValue {
                        frame.withPayload { payload in
                            var codecs = CodecSet(rawValue: payload.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
                            seen.withLock { $0.offered = codecs.contains(.words) }
                            if clear { codecs.remove(.words) }
                            payload.storeBytes(of: codecs.rawValue, toByteOffset: 4, as: UInt32.self)
                        }
                    }
                    if frame.direction == .toDestination && frame.type == FrameType.pageBatch.rawValue {
                        let words = frame.withPayload { payload in
                            let count = Int(payload.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
                            return (0..<count).filter { payload[8 + $0 * 24 + 20] == PageEncoding.words.rawValue }.count
                        }
                        seen.withLock { $0.words += words }
                    }
                    return .forward
                }.port
            }
            let outcome = try migration.run(in: scratch)
            let report = try outcome.source.get()
            _ = try outcome.destination.get()
            #expect(seen.withLock { $0.offered }, "the destination should list the words codec")
            #expect(seen.withLock { $0.words } == report.pages.words)
            if clear { #expect(report.pages.words == 0) } else { #expect(report.pages.words > 0) }
            #expect(report.pages.lz4 + report.pages.raw > 0)
            #expect(
                try Transparency.difference(between: scratch.file("destination.img"), and: scratch.file("source.img"))
                    == nil)
        }
    }
}
