import FerryGuest
import FerrySystem
import FerryTestSupport
import Foundation
import Glibc
import Logging
import Testing

/// The disk journal (docs/disk.md) on real sparse files: written, read back, damaged on purpose.
@Suite struct DiskJournalTests {
    /// A journal of `steps` step records after its boot record, closed cleanly.
    private func writeJournal(path: String, steps: Int, seed: UInt64 = 7, clean: Bool = true) throws -> DiskCursor {
        let journal = try DiskJournal.boot(path: path, seed: seed)
        for step in 0..<steps { try journal.appendStep(progress: UInt64(step), checksum: UInt64(step) * 3) }
        if clean { try journal.appendCleanShutdown(progress: UInt64(steps), checksum: 0) } else { try journal.flush() }
        journal.close()
        return journal.cursor
    }

    private func overwrite(_ path: String, sector: Int, with bytes: [UInt8], at offset: Int = 0) throws {
        let fd = open(path, O_WRONLY)
        defer { close(fd) }
        let written = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(sector * 512 + offset)) }
        #expect(written == bytes.count)
    }

    private func readSector(_ path: String, _ sector: Int) throws -> [UInt8] {
        let file = try PositionedFile(reading: path)
        var bytes = [UInt8](repeating: 0, count: 512)
        _ = try bytes.withUnsafeMutableBytes { try file.read(at: sector * 512, into: $0) }
        return bytes
    }

    @Test func aFreshDiskGetsASuperblockAndTheJournalReadsBack() throws {
        let scratch = Scratch("journal-roundtrip")
        let path = scratch.file("disk")
        #expect(try DiskJournal.createDisk(path: path, bytes: 64 << 20))
        #expect(try !DiskJournal.createDisk(path: path, bytes: 64 << 20), "an existing disk is kept")
        #expect(try DiskJournalScan.read(path: path).superblock == nil)
        _ = try writeJournal(path: path, steps: 50)

        let scan = try DiskJournalScan.read(path: path)
        #expect(scan.superblock == DiskSuperblock(journalSectors: 4096, seed: 7))
        #expect(scan.head?.seq == 52 && scan.head?.kind == .cleanShutdown)
        #expect(scan.oldestSeq == 1 && scan.boots == 1 && scan.cleanShutdown)
        #expect(scan.firstCorruption == nil && scan.tornSector == nil)
        #expect(scan.verifiedDataBlocks + scan.overwrittenDataBlocks == 50 && scan.verifiedDataBlocks > 40)
        let record = try #require(scan.head)
        #expect(record.progress == 50)
        // Sparse: a 64 MiB disk holds the superblock, ring sectors and 50 data blocks.
        var info = stat()
        stat(path, &info)
        let allocated = Int(info.st_blocks) * 512
        #expect(allocated > 0 && allocated < 2 << 20, "\(allocated) bytes allocated")
    }

    @Test func aSecondBootResumesAfterTheHeadAndCountsTheBoot() throws {
        let scratch = Scratch("journal-reboot")
        let path = scratch.file("disk")
        try DiskJournal.createDisk(path: path, bytes: 1 << 20)
        _ = try writeJournal(path: path, steps: 20)
        let second = try DiskJournal.boot(path: path, seed: 99)
        #expect(second.resumedFrom?.resumeLine == "disk: resumed at record 22 (boot 1, clean shutdown: yes)")
        #expect(second.nextSeq == 24 && second.bootCount == 2 && second.geometry.seed == 7, "the disk keeps its seed")
        try second.appendStep(progress: 1, checksum: 1)
        try second.flush()
        second.close()
        let scan = try DiskJournalScan.read(path: path)
        #expect(scan.head?.seq == 24 && scan.boots == 2 && !scan.cleanShutdown)
        #expect(scan.resumeLine == "disk: resumed at record 24 (boot 2, clean shutdown: no)")
        #expect(scan.firstCorruption == nil)
    }

    @Test func oneWriterAtATime() throws {
        let scratch = Scratch("journal-lock")
        let path = scratch.file("disk")
        try DiskJournal.createDisk(path: path, bytes: 1 << 20)
        let first = try DiskJournal.boot(path: path, seed: 1)
        do {
            _ = try DiskJournal.boot(path: path, seed: 1)
            Issue.record("a second writer opened a locked disk")
        } catch {
            #expect(error.message.contains("in use"), "\(error)")
        }
        first.close()
        _ = try DiskJournal.boot(path: path, seed: 1)
    }

    /// The destination continues only the journal the source left: the same disk (size, seed)
    /// with its head right before the cursor.
    @Test func continuingRefusesADiskThatIsNotWhereTheCursorSays() throws {
        let scratch = Scratch("journal-continue")
        let path = scratch.file("disk")
        try DiskJournal.createDisk(path: path, bytes: 1 << 20)
        let cursor = try writeJournal(path: path, steps: 4, clean: false)
        let continued = try DiskJournal.continuing(cursor)
        #expect(continued.nextSeq == 6 && continued.bootCount == 1)
        continued.close()
        var ahead = cursor
        ahead.nextSeq += 3  // records the source wrote that this disk does not hold (not flushed, or another disk)
        do {
            _ = try DiskJournal.continuing(ahead)
            Issue.record("continued a journal with a gap")
        } catch {
            #expect(error.message.contains("record 8, which the guest wrote last, is not on it"), "\(error)")
        }
        var resized = cursor
        resized.geometry.diskBytes = 2 << 20
        do {
            _ = try DiskJournal.continuing(resized)
            Issue.record("continued on a disk of another size")
        } catch {
            #expect(error.message.contains("same disk"), "\(error)")
        }
    }

    @Test func aBitFlipEndsTheChainAndIsReported() throws {
        let scratch = Scratch("journal-bitflip")
        let path = scratch.file("disk")
        try DiskJournal.createDisk(path: path, bytes: 1 << 20)
        _ = try writeJournal(path: path, steps: 30)
        // Record 10 lives in sector 10: flip one bit of its progress field.
        var sector = try readSector(path, 10)
        sector[24] ^= 0x04
        try overwrite(path, sector: 10, with: sector)
        let scan = try DiskJournalScan.read(path: path)
        #expect(scan.head?.seq == 9)
        #expect(scan.tornSector == nil, "newer records follow the break: not a torn write")
        let corruption = try #require(scan.firstCorruption)
        #expect(corruption.sector == 10 && corruption.seq == 10 && corruption.reason.contains("hash"), "\(corruption)")
        // The next boot continues from the intact chain.
        let journal = try DiskJournal.boot(path: path, seed: 7)
        #expect(journal.nextSeq == 11)
    }

    @Test func aTornHeadIsNotACorruption() throws {
        let scratch = Scratch("journal-torn")
        let path = scratch.file("disk")
        try DiskJournal.createDisk(path: path, bytes: 1 << 20)
        _ = try writeJournal(path: path, steps: 5, clean: false)
        // A crash while writing record 7: half of sector 7 written.
        var torn = DiskRecord(kind: .step, seq: 7, bootCount: 1, progress: 5, checksum: 0).encoded
        for index in 256..<512 { torn[index] = 0 }
        try overwrite(path, sector: 7, with: torn)
        let scan = try DiskJournalScan.read(path: path)
        #expect(scan.head?.seq == 6 && scan.tornSector == 7 && scan.firstCorruption == nil)
        #expect(scan.resumeLine == "disk: resumed at record 6 (boot 1, clean shutdown: no)")
    }

    @Test func theRingWrapsAndStaysVerifiable() throws {
        let scratch = Scratch("journal-wrap")
        let path = scratch.file("disk")
        try DiskJournal.createDisk(path: path, bytes: 64 << 10)
        #expect(DiskJournalFormat.journalSectors(diskBytes: 64 << 10) == 63)
        _ = try writeJournal(path: path, steps: 200)
        var scan = try DiskJournalScan.read(path: path)
        #expect(scan.head?.seq == 202 && scan.oldestSeq == 202 - 63 + 1)
        #expect(scan.firstCorruption == nil && scan.tornSector == nil)
        // 8 data blocks for 200 steps: most blocks were overwritten by later steps, which is no corruption.
        #expect(scan.verifiedDataBlocks > 0 && scan.overwrittenDataBlocks > 0)
        // A torn write of record 203 over record 140 (sector 14): the head stays 202.
        try overwrite(path, sector: DiskRecord.sector(seq: 203, journalSectors: 63), with: [0xFF, 0xFF], at: 100)
        scan = try DiskJournalScan.read(path: path)
        #expect(scan.head?.seq == 202 && scan.oldestSeq == 141 && scan.tornSector == 14 && scan.firstCorruption == nil)
    }

    @Test func aDamagedDataBlockIsReported() throws {
        let scratch = Scratch("journal-data")
        let path = scratch.file("disk")
        try DiskJournal.createDisk(path: path, bytes: 16 << 20)
        _ = try writeJournal(path: path, steps: 10)
        let sector = try readSector(path, 5)
        let record = try sector.withUnsafeBytes { try DiskRecord.parse($0).get() }
        #expect(record.kind == .step && record.seq == 5)
        try overwrite(path, sector: Int(record.dataOffset) / 512, with: [1, 2, 3], at: 300)
        let scan = try DiskJournalScan.read(path: path)
        let corruption = try #require(scan.firstCorruption)
        #expect(corruption.seq == 5 && corruption.reason.contains("data block"), "\(corruption)")
        #expect(try DiskJournalScan.read(path: path, verifyData: false).firstCorruption == nil)
    }

    @Test func aDiskThatIsNotAJournalIsRefusedByName() throws {
        let scratch = Scratch("journal-foreign")
        let path = scratch.file("disk")
        try DiskJournal.createDisk(path: path, bytes: 1 << 20)
        try overwrite(path, sector: 0, with: Array("not a journal".utf8))
        do {
            _ = try DiskJournal.boot(path: path, seed: 1)
            Issue.record("booted on a foreign disk")
        } catch {
            #expect(error.code == .invalidDisk && error.message.contains(path) && error.message.contains("FERRYJNL"))
        }
        do {
            try DiskJournal.createDisk(path: scratch.file("tiny"), bytes: 4096)
            Issue.record("created a disk too small for a journal")
        } catch {
            #expect(error.code == .invalidDisk && error.message.contains("at least 65536"))
        }
    }

    /// The writer thread: records at its rate, none while paused, a clean shutdown at the end.
    @Test func theWriterKeepsItsRateAndPausesBetweenRecords() throws {
        let scratch = Scratch("journal-writer")
        let path = scratch.file("disk")
        try DiskJournal.createDisk(path: path, bytes: 8 << 20)
        let journal = try DiskJournal.boot(path: path, seed: 3)
        let writer = try DiskWriter(
            journal: journal, recordsPerSecond: 200, logger: Logger(label: "test")
        ) { (steps: 42, checksum: 9) }
        writer.start()
        MonotonicClock.sleep(seconds: 0.5)
        writer.pause()
        let paused = writer.recordsWritten
        #expect((40...130).contains(paused), "\(paused) records in 0.5 s at 200/s")
        MonotonicClock.sleep(seconds: 0.2)
        #expect(writer.recordsWritten == paused, "no record while paused")
        writer.resume()
        MonotonicClock.sleep(seconds: 0.1)
        let cursor = try writer.shutdown()
        let scan = try DiskJournalScan.read(path: path)
        #expect(scan.head?.seq == cursor.nextSeq - 1 && scan.cleanShutdown && scan.firstCorruption == nil)
        #expect(
            scan.head?.progress == 42
                && scan.verifiedDataBlocks + scan.overwrittenDataBlocks == Int(writer.recordsWritten))
        #expect(writer.recordsWritten > paused)
    }
}
