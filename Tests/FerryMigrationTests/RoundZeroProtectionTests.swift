import FerryGuest
import FerryGuestMigration
import FerryKVMMigration
import FerrySystem
import FerryTestSupport
import Foundation
import Synchronization
import Testing

@testable import FerryMigration

@Suite(.serialized, .tags(.slow), .skippable(.slow)) struct RoundZeroProtectionTests {
    static let trackers: [TrackerChoice] =
        DirtyTrackers.uffdUnavailableReason() == nil ? [.uffd, .mprotect] : [.mprotect]

    /// The region is protected from its start upwards, one chunk ahead of the page asked for:
    /// a write after a page's protection is recorded, one to a page not reached yet is not.
    @Test(arguments: trackers)
    func protectionRunsOneChunkAheadOfTheReader(choice: TrackerChoice) throws {
        let chunk = RoundZeroProtection.pagesPerChunk
        let pages = 3 * chunk + 100  // the last chunk is short
        let region = try MappedRegion.anonymous(size: pages * systemPageSize)
        let tracker = try DirtyTrackers.make(choice, base: region.base, length: region.size, pageSize: systemPageSize)
            .tracker
        defer { tracker.stop() }
        try tracker.startDeferred()
        func write(_ page: Int) {
            (region.base + page * systemPageSize).storeBytes(of: UInt64(page + 1), as: UInt64.self)
        }

        let protection = RoundZeroProtection(tracker: tracker, pageCount: pages)
        #expect(try protection.protect(through: 5) == chunk)  // chunks 0 and 1 protected
        #expect(try protection.protect(through: 9) == chunk)  // nothing new
        write(100)  // protected: recorded
        write(2 * chunk - 1)  // protected (lookahead): recorded
        write(2 * chunk + 5)  // not yet: not recorded
        #expect(try protection.protect(through: chunk) == 2 * chunk)  // chunk 2 now
        #expect(try protection.protect(through: 3 * chunk + 50) == pages)
        write(pages - 1)
        try protection.protectAll()  // nothing left: a no-op
        var bitmap = DirtyBitmap(count: pages)
        // Everything is protected (else the harvest would report the rest): exactly the writes
        // made after their page's protection.
        #expect(try tracker.harvest(into: &bitmap) == 3)
        var reported: [Int] = []
        bitmap.forEachSetBit { reported.append($0) }
        #expect(reported == [100, 2 * chunk - 1, pages - 1])
    }

    /// Four threads walk their stripes concurrently (as the streams do) with a sparse bitmap,
    /// then each protects the rest: everything ends up protected, each page once.
    @Test(arguments: trackers)
    func concurrentStreamsProtectEverything(choice: TrackerChoice) throws {
        let pages = 5 * RoundZeroProtection.pagesPerChunk + 700
        let region = try MappedRegion.anonymous(size: pages * systemPageSize)
        let tracker = try DirtyTrackers.make(choice, base: region.base, length: region.size, pageSize: systemPageSize)
            .tracker
        defer { tracker.stop() }
        try tracker.startDeferred()
        let protection = RoundZeroProtection(tracker: tracker, pageCount: pages)
        let stripes = PageStripes(streamCount: 4)
        var sparse = DirtyBitmap(count: pages)
        for page in stride(from: 0, to: pages / 2, by: 37) { sparse.set(page) }  // nothing in the upper half
        let toSend = sparse
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 4) { stream in
            do {
                var protectedEnd = 0
                try stripes.forEachPage(in: toSend, of: stream) { page in
                    if page >= protectedEnd { protectedEnd = try protection.protect(through: page) }
                }
                try protection.protectAll()
            } catch {
                failures.withLock { $0.append("stream \(stream): \(error)") }
            }
        }
        #expect(failures.withLock { $0 }.isEmpty)
        (region.base + (pages - 1) * systemPageSize).storeBytes(of: 1, as: UInt8.self)
        var bitmap = DirtyBitmap(count: pages)
        #expect(try tracker.harvest(into: &bitmap) == 1)
        #expect(bitmap[pages - 1])
    }

    /// A guest writing fast during the whole migration, with the destination image compared to
    /// the source image as the source left it: any write lost by the tracker shows up as a
    /// difference. Both trackers, with the protection done in round 0 block by block and with
    /// the whole region protected at setup.
    @Test(arguments: trackers, [true, false])
    func noWriteIsLost(tracker: TrackerChoice, protectDuringRoundZero: Bool) throws {
        let scratch = Scratch()
        var migration = LoopbackMigration()
        migration.size = 3 * RoundZeroProtection.pagesPerChunk * systemPageSize  // three chunks
        migration.holeTail = migration.size / 3  // the last chunk a hole, for the guest to write into
        migration.runBefore = 0  // ... while round 0 runs
        migration.workload = "uniform:100MB/s"
        migration.tracker = tracker
        migration.protectDuringRoundZero = protectDuringRoundZero
        migration.runFor = 0
        let outcome = try migration.run(in: scratch)
        let report = try outcome.source.get()
        #expect(report.verified)
        #expect(report.tracker == tracker.rawValue)
        // Holes are skipped only with protection in round 0. How many of the last chunk's pages
        // are still holes when round 0 gets there depends on how fast the guest fills them (on a
        // loaded machine, all of them): `holesOfAnIdleGuestGoUnread` counts them exactly.
        if !protectDuringRoundZero { #expect(report.holePages == 0, "\(report.holePages) holes") }
        _ = try outcome.destination.get()
        #expect(
            try Transparency.difference(between: scratch.file("destination.img"), and: scratch.file("source.img"))
                == nil)
    }

    /// An idle guest's hole (the last chunk) is sent as zero markers without being read: every
    /// page of it, no more.
    @Test func holesOfAnIdleGuestGoUnread() throws {
        let scratch = Scratch()
        var migration = LoopbackMigration()
        migration.size = 3 * RoundZeroProtection.pagesPerChunk * systemPageSize
        migration.holeTail = migration.size / 3
        migration.workload = "idle"
        migration.runFor = 0
        let outcome = try migration.run(in: scratch)
        let report = try outcome.source.get()
        #expect(report.holePages == RoundZeroProtection.pagesPerChunk)
        _ = try outcome.destination.get()
        #expect(
            try Transparency.difference(between: scratch.file("destination.img"), and: scratch.file("source.img"))
                == nil)
    }
}
