import FerrySystem

/// A ring sector or data block that does not hold what the journal says it should.
public struct DiskCorruption: Sendable, Equatable, CustomStringConvertible {
    /// The disk sector (512-byte units from the start of the disk).
    public var sector: Int
    /// The record that should be there (or whose data block this is), when one is known.
    public var seq: UInt64?
    public var reason: String

    public var description: String {
        "sector \(sector)\(seq.map { " (record \($0))" } ?? ""): \(reason)"
    }
}

/// What a disk's journal holds: read back by `DiskJournalScan.read(path:verifyData:)`.
///
/// The head is found from the oldest intact record in the ring: its successors are followed while
/// each is intact in its own sector; the first torn or corrupt one ends the chain, and the last
/// intact one is the head. Afterwards every ring sector is checked against the head: it must hold
/// the newest record ≤ head that maps to it (or nothing, when no such record exists yet). The
/// sector of record head+1 may hold a half-written record (`tornSector`, what a crash during a
/// write leaves) unless intact records newer than the head exist: then the break is a corruption.
public struct DiskJournalScan: Sendable {
    /// nil: a fresh disk (sector 0 all zero).
    public var superblock: DiskSuperblock?
    public var head: DiskRecord?
    /// The first record of the chain (the oldest the ring still holds).
    public var oldestSeq: UInt64?
    /// The sector of record head+1 when it holds a torn write (not a corruption).
    public var tornSector: Int?
    /// The first problem in chain order (ring sectors, then data blocks), if any.
    public var firstCorruption: DiskCorruption?
    /// Step records whose data block was read and matched.
    public var verifiedDataBlocks = 0
    /// Step records whose data block a later step (at the same offset) has since overwritten.
    public var overwrittenDataBlocks = 0

    /// The boot count of the head record (0 on a fresh disk).
    public var boots: UInt64 { head?.bootCount ?? 0 }
    /// The head is a clean-shutdown record.
    public var cleanShutdown: Bool { head?.kind == .cleanShutdown }
    /// Records in the chain.
    public var chainLength: UInt64 {
        guard let head, let oldestSeq else { return 0 }
        return head.seq - oldestSeq + 1
    }

    /// "disk: resumed at record 1234 (boot 3, clean shutdown: yes)", or the fresh-disk line.
    public var resumeLine: String {
        guard let head else { return "disk: new journal (no records yet)" }
        return
            "disk: resumed at record \(head.seq) (boot \(head.bootCount), clean shutdown: \(cleanShutdown ? "yes" : "no"))"
    }

    /// Reads the superblock and the ring of the disk at `path`; with `verifyData` also the data
    /// block of every step record in the chain.
    public static func read(path: String, verifyData: Bool = true) throws(GuestError) -> DiskJournalScan {
        let file: PositionedFile
        let size: Int
        do throws(SystemError) {
            file = try PositionedFile(reading: path)
            size = try file.size()
        } catch {
            throw GuestError.system(error, hint: "give --disk the path of a disk file")
        }
        return try read(file, diskBytes: size, verifyData: verifyData)
    }

    /// As `read(path:verifyData:)`, on an open file of `diskBytes`.
    public static func read(_ file: PositionedFile, diskBytes: Int, verifyData: Bool) throws(GuestError)
        -> DiskJournalScan
    {
        var scan = DiskJournalScan()
        var sector0 = [UInt8](repeating: 0, count: DiskJournalFormat.sectorSize)
        try readFully(file, into: &sector0, at: 0)
        let parsed = sector0.withUnsafeBytes { bytes in
            Result { () throws(GuestError) in try DiskSuperblock.parse(bytes, path: file.path) }
        }
        let superblock = try parsed.get()
        guard let superblock else { return scan }
        scan.superblock = superblock
        let ringSectors = Int(superblock.journalSectors)
        guard ringSectors >= 1,
            (1 + ringSectors) * DiskJournalFormat.sectorSize + DiskJournalFormat.dataBlockSize <= diskBytes
        else {
            throw GuestError(
                .invalidDisk,
                "\(file.path): the superblock names \(ringSectors) journal sectors, which do not fit a disk of \(diskBytes) bytes"
            )
        }
        var ring = [UInt8](repeating: 0, count: ringSectors * DiskJournalFormat.sectorSize)
        try readFully(file, into: &ring, at: DiskJournalFormat.sectorSize)
        let slots = ring.withUnsafeBytes { bytes in
            (0..<ringSectors).map { index in
                slot(bytes, index: index, journalSectors: superblock.journalSectors)
            }
        }
        scan.findHead(slots: slots, journalSectors: superblock.journalSectors)
        scan.checkRing(slots: slots, journalSectors: superblock.journalSectors)
        if verifyData, scan.firstCorruption == nil, scan.head != nil {
            let geometry = DiskGeometry(
                diskBytes: diskBytes, journalSectors: superblock.journalSectors, seed: superblock.seed)
            try scan.verifyData(file, slots: slots, geometry: geometry)
        }
        return scan
    }

    /// A ring sector, parsed: the record when it is intact and in its own sector.
    private static func slot(_ ring: UnsafeRawBufferPointer, index: Int, journalSectors: UInt32) -> Result<
        DiskRecord, DiskRecord.Defect
    > {
        let size = DiskJournalFormat.sectorSize
        let parsed = DiskRecord.parse(UnsafeRawBufferPointer(rebasing: ring[(index * size)..<((index + 1) * size)]))
        if case .success(let record) = parsed,
            record.seq == 0 || DiskRecord.sector(seq: record.seq, journalSectors: journalSectors) != index + 1
        {
            return .failure(.badMagic)
        }
        return parsed
    }

    private mutating func findHead(slots: [Result<DiskRecord, DiskRecord.Defect>], journalSectors: UInt32) {
        let intact = slots.compactMap { try? $0.get() }
        guard let oldest = intact.min(by: { $0.seq < $1.seq }) else { return }
        var head = oldest
        while head.seq - oldest.seq + 1 < UInt64(journalSectors) {
            let next = head.seq + 1
            guard case .success(let record) = slots[DiskRecord.sector(seq: next, journalSectors: journalSectors) - 1],
                record.seq == next
            else { break }
            head = record
        }
        self.head = head
        oldestSeq = oldest.seq
    }

    /// Every ring sector against the head (see the type's note).
    private mutating func checkRing(slots: [Result<DiskRecord, DiskRecord.Defect>], journalSectors: UInt32) {
        let headSeq = head?.seq ?? 0
        let ring = UInt64(journalSectors)
        let newerThanHead = slots.contains { (try? $0.get())?.seq ?? 0 > headSeq }
        let tornCandidate = DiskRecord.sector(seq: headSeq + 1, journalSectors: journalSectors)
        var problems: [(order: UInt64, corruption: DiskCorruption)] = []
        for index in 0..<slots.count {
            let sector = index + 1
            let position = UInt64(sector)
            // The newest record ≤ head that lives in this sector, if any.
            let expected: UInt64? = headSeq >= position ? headSeq - (headSeq - position) % ring : nil
            let found = try? slots[index].get()
            if let expected, found?.seq == expected, expected >= (oldestSeq ?? 0) { continue }
            if expected == nil, case .failure(.empty) = slots[index] { continue }
            if sector == tornCandidate && !newerThanHead {
                tornSector = sector
                continue
            }
            let reason: String
            switch slots[index] {
            case .success(let record):
                reason = "holds record \(record.seq), which does not follow the head \(headSeq)"
            case .failure(let defect):
                reason = Self.describe(defect)
            }
            let seq = expected ?? (sector == tornCandidate ? headSeq + 1 : nil)
            problems.append((seq ?? .max, DiskCorruption(sector: sector, seq: seq, reason: reason)))
        }
        firstCorruption = problems.min(by: { $0.order < $1.order })?.corruption
    }

    private static func describe(_ defect: DiskRecord.Defect) -> String {
        switch defect {
        case .empty: "empty where a record should be"
        case .badHash: "the record's hash does not match its bytes (torn or corrupt)"
        case .badMagic: "not a record of this ring (no FJR1, or a sequence number that belongs elsewhere)"
        case .badKind(let kind): "record kind \(kind) is none of boot (1), step (2), clean shutdown (3)"
        case .badFiller: "the record's filler words are not those of its sequence number"
        }
    }

    /// The data block of each step record in the chain. A block may since have been overwritten
    /// by a later step (up to head+1, whose block is written before its record) at the same offset.
    private mutating func verifyData(
        _ file: PositionedFile, slots: [Result<DiskRecord, DiskRecord.Defect>], geometry: DiskGeometry
    ) throws(GuestError) {
        guard let head, let oldestSeq else { return }
        var block = [UInt8](repeating: 0, count: DiskJournalFormat.dataBlockSize)
        var expected = [UInt8](repeating: 0, count: DiskJournalFormat.dataBlockSize)
        for seq in oldestSeq...head.seq {
            guard
                case .success(let record) = slots[
                    DiskRecord.sector(seq: seq, journalSectors: geometry.journalSectors) - 1],
                record.kind == .step
            else { continue }
            let sector = Int(record.dataOffset) / DiskJournalFormat.sectorSize
            guard record.dataOffset == geometry.dataOffset(seq: seq) else {
                firstCorruption = DiskCorruption(
                    sector: DiskRecord.sector(seq: seq, journalSectors: geometry.journalSectors), seq: seq,
                    reason: "the record names data offset \(record.dataOffset), not \(geometry.dataOffset(seq: seq))")
                return
            }
            try Self.readFully(file, into: &block, at: Int(record.dataOffset))
            let hash = block.withUnsafeBytes { DiskJournalFormat.hash($0, count: DiskJournalFormat.dataBlockSize) }
            if hash == record.dataHash {
                verifiedDataBlocks += 1
                continue
            }
            let later = (seq + 1)...(head.seq + 1)
            let overwritten = later.contains { other in
                guard geometry.dataOffset(seq: other) == record.dataOffset else { return false }
                let otherHash = expected.withUnsafeMutableBytes {
                    DiskJournalFormat.fillDataBlock($0, seed: geometry.seed, seq: other)
                }
                return otherHash == hash
            }
            if overwritten {
                overwrittenDataBlocks += 1
            } else {
                firstCorruption = DiskCorruption(
                    sector: sector, seq: seq,
                    reason: "the data block at byte \(record.dataOffset) does not match its record's hash")
                return
            }
        }
    }

    static func readFully(_ file: PositionedFile, into buffer: inout [UInt8], at offset: Int) throws(GuestError) {
        let result = buffer.withUnsafeMutableBytes { bytes in
            Result { () throws(SystemError) in try file.read(at: offset, into: bytes) }
        }
        let got: Int
        do throws(SystemError) {
            got = try result.get()
        } catch {
            throw GuestError.system(error)
        }
        guard got == buffer.count else {
            throw GuestError(
                .invalidDisk,
                "\(file.path): \(buffer.count) bytes at \(offset) lie past its end (it has been cut short)")
        }
    }
}
