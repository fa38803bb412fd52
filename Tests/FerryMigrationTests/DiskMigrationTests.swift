import FerryGuest
import FerryGuestMigration
import FerryProtocol
import FerrySystem
import FerryTestSupport
import Foundation
import Testing

@testable import FerryMigration

/// The built-in guest's disk across a live migration on loopback (same file at both ends, as
/// on shared storage): the destination continues the source's journal without a gap.
@Suite(.serialized) struct DiskMigrationTests {
    @Test func theJournalContinuesOnTheDestinationWithoutAGap() throws {
        let scratch = Scratch()
        var migration = LoopbackMigration()
        migration.workload = "uniform:20MB/s"
        migration.diskRecordsPerSecond = 500
        migration.runBefore = 0.3
        migration.runFor = 0.3
        let outcome = try migration.run(in: scratch)
        let report = try outcome.source.get()
        #expect(report.guestLocation == .destination)
        let destination = try outcome.destination.get()
        #expect(destination.outcome.failure == nil, "\(destination.outcome.failure ?? "")")
        let incoming = try #require(destination.guest as? BuiltinIncomingGuest)
        let handedOver = try #require(incoming.diskSection).cursor
        let final = try #require(incoming.finalDiskCursor)
        #expect(handedOver.nextSeq > 50, "the source wrote records before the handover: \(handedOver.nextSeq)")
        #expect(final.nextSeq > handedOver.nextSeq + 20, "the destination wrote records: \(final.nextSeq)")

        // One chain from the boot record to the destination's clean shutdown: one boot, no gap, no
        // corruption, every data block as its record says.
        let scan = try DiskJournalScan.read(path: scratch.file("disk.img"))
        #expect(scan.firstCorruption == nil && scan.tornSector == nil, "\(String(describing: scan.firstCorruption))")
        #expect(scan.oldestSeq == 1 && scan.head?.seq == final.nextSeq - 1)
        #expect(scan.boots == 1 && scan.cleanShutdown)
        #expect(scan.verifiedDataBlocks + scan.overwrittenDataBlocks == Int(final.nextSeq) - 3)
        #expect(!ImageFile.exists(path: ImageLock.sidecarPath(for: scratch.file("disk.img"))), "the lock was released")
    }

    /// A migration that fails at the blackout leaves the disk with the source, which takes it
    /// back and writes on.
    @Test func aFailedHandoverLeavesTheDiskWithTheSource() throws {
        let scratch = Scratch()
        var migration = LoopbackMigration()
        migration.workload = "uniform:20MB/s"
        migration.diskRecordsPerSecond = 500
        migration.runBefore = 0.2
        let relay = migration.cutFirst(.complete, going: .toDestination)
        defer { relay.value?.stop() }
        let outcome = try migration.run(in: scratch)
        guard case .failure = outcome.source else {
            Issue.record("the migration succeeded through a relay that cut COMPLETE")
            return
        }
        #expect(outcome.guestWasRunningAfterFailure)
        let scan = try DiskJournalScan.read(path: scratch.file("disk.img"))
        #expect(scan.firstCorruption == nil && scan.boots == 1 && scan.cleanShutdown, "the source shut the disk down")
        #expect(scan.oldestSeq == 1 && (scan.head?.seq ?? 0) > 50)
    }
}

/// The source's guest whose disk another writer takes right after the blackout released it (as
/// a stray process on the destination's host might): the destination must refuse before
/// `VERIFIED`, and the source, unable to take the disk back, runs on without writing it.
private final class DiskThiefGuest: ForwardingMigratableGuest, @unchecked Sendable {
    let inner: BuiltinMigratableGuest
    let diskPath: String
    var thief: ImageLock?

    init(_ inner: BuiltinMigratableGuest, diskPath: String) {
        self.inner = inner
        self.diskPath = diskPath
    }

    var forwardee: any MigratableGuest { inner }
    func deviceState() throws -> [DeviceStateSection] {
        let sections = try inner.deviceState()
        thief = try ImageLock.acquire(path: diskPath)
        return sections
    }
}

extension DiskMigrationTests {
    @Test func aDiskTheDestinationCannotOpenFailsTheMigrationBeforeVerified() throws {
        let scratch = Scratch()
        var migration = LoopbackMigration()
        migration.workload = "uniform:20MB/s"
        migration.diskRecordsPerSecond = 500
        migration.runBefore = 0.2
        let wrapped = Box<DiskThiefGuest>()
        let path = scratch.file("disk.img")
        migration.wrapGuest = { inner in
            let guest = DiskThiefGuest(inner, diskPath: path)
            wrapped.value = guest
            return guest
        }
        let outcome = try migration.run(in: scratch)
        guard case .failure(let error) = outcome.source else {
            Issue.record("the migration succeeded although the destination could not open the disk")
            return
        }
        #expect("\(error)".contains("in use"), "\(error)")
        #expect(outcome.sourceReport?.guestLocation == .source)
        let guest = try #require(wrapped.value)
        #expect(guest.inner.disk?.failure?.contains("could not be taken back") == true)
        guest.thief?.release()
        let scan = try DiskJournalScan.read(path: path)
        #expect(scan.firstCorruption == nil && scan.boots == 1 && !scan.cleanShutdown, "no writes without the lock")
    }
}
