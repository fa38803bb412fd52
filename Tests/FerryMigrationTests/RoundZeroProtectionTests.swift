import FerryGuest
import FerrySystem
import Foundation
import Testing

@testable import FerryMigration

@Suite(.serialized) struct RoundZeroProtectionTests {
    static let trackers: [TrackerChoice] = DirtyTrackers.uffdUnavailableReason() == nil ? [.uffd, .mprotect] : [.mprotect]

    /// Each stream protects its own blocks (page p is in block p / 512, on stream (p/512) % N),
    /// each no later than its first page is reached, the ones it skips included, and all of them
    /// by the end; a block of the stream not reached yet stays unprotected.
    @Test(arguments: trackers)
    func stripeProtectionProtectsEachStreamsBlocksOnce(choice: TrackerChoice) throws {
        let pages = 7 * 512 + 100  // the last block is short
        let region = try MappedRegion.anonymous(size: pages * systemPageSize)
        let tracker = try DirtyTrackers.make(choice, base: region.base, length: region.size, pageSize: systemPageSize).tracker
        defer { tracker.stop() }
        try tracker.startDeferred()
        let stripes = PageStripes(streamCount: 3)
        func write(_ page: Int) { (region.base + page * systemPageSize).storeBytes(of: UInt64(page + 1), as: UInt64.self) }

        // Stream 1 owns blocks 1, 4, 7. Reaching page 4*512+3 protects blocks 1 and 4, not 7.
        let stream1 = StripeProtection(tracker: tracker, stripes: stripes, stream: 1, pageCount: pages)
        #expect(try stream1.protectBlocks(through: 4 * 512 + 3) == 5 * 512)
        write(512 + 7)        // block 1: protected, recorded
        write(4 * 512 + 500)  // block 4: protected, recorded
        write(7 * 512 + 50)   // block 7: not yet protected, not recorded
        write(0)              // block 0 (stream 0): not yet protected, not recorded
        #expect(try stream1.protectBlocks(through: 7 * 512 + 99) == pages)
        for stream in 0..<3 {
            try StripeProtection(tracker: tracker, stripes: stripes, stream: stream, pageCount: pages).protectRemainingBlocks()
        }
        write(7 * 512 + 99)   // the last page, protected by now
        var bitmap = DirtyBitmap(count: pages)
        // Everything is protected: the harvest reports exactly the writes made after protection.
        #expect(try tracker.harvest(into: &bitmap) == 3)
        var reported: [Int] = []
        bitmap.forEachSetBit { reported.append($0) }
        #expect(reported == [512 + 7, 4 * 512 + 500, 7 * 512 + 99])
    }

    /// A guest writing fast during the whole migration, with the destination image compared to
    /// the source image as the source left it: any write lost by the tracker shows up as a
    /// difference. Both trackers, with the protection done in round 0 block by block and with
    /// the whole region protected at setup.
    @Test(arguments: trackers, [true, false])
    func noWriteIsLost(tracker: TrackerChoice, protectDuringRoundZero: Bool) throws {
        let scratch = Scratch()
        var migration = LoopbackMigration()
        migration.workload = "uniform:100MB/s"
        migration.tracker = tracker
        migration.protectDuringRoundZero = protectDuringRoundZero
        migration.runFor = 0
        let outcome = try migration.run(in: scratch)
        let report = try outcome.source.get()
        #expect(report.verified)
        #expect(report.tracker == tracker.rawValue)
        _ = try outcome.destination.get()
        #expect(try Transparency.difference(between: scratch.file("destination.img"), and: scratch.file("source.img")) == nil)
    }
}
