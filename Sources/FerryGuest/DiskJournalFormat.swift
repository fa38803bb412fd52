/// The on-disk journal both guest kinds keep on their disks (docs/disk.md): a superblock in
/// sector 0, a ring of J record sectors after it, and a data area of 4 KiB blocks after the
/// ring. 512-byte sectors, little-endian; every sector ends in a hash of its first 504 bytes.
/// The KVM guest program writes the same bytes (Tools/kvm-guest/guest.c); a test checks they agree.
public enum DiskJournalFormat {
    public static let sectorSize = 512
    public static let dataBlockSize = 4096
    /// Sectors per data block.
    public static let sectorsPerBlock = dataBlockSize / sectorSize
    /// The bytes a sector's hash covers; the hash is the 8 bytes after them.
    public static let hashedBytes = 504
    public static let defaultJournalSectors = 4096
    /// The smallest disk that holds a superblock, a ring and one data block: 64 KiB.
    public static let minimumDiskBytes = 64 << 10
    public static let version: UInt32 = 1
    /// "FERRYJNL" as the first 8 bytes of the superblock.
    public static let superblockMagic: UInt64 = 0x4C4E_4A59_5252_4546
    /// "FJR1" as the first 4 bytes of a record.
    public static let recordMagic: UInt32 = 0x3152_4A46
    static let hashStart: UInt64 = 0x6A09_E667_F3BC_C908
    static let golden: UInt64 = 0x9E37_79B9_7F4A_7C15
    /// The first filler word of a record (the fields end here).
    static let fillerOffset = 56

    /// Ring sectors for a disk of `diskBytes`: 4096, or half of what follows the superblock on a
    /// smaller disk (so the data area is at least as large as the ring).
    public static func journalSectors(diskBytes: Int) -> UInt32 {
        let sectors = diskBytes / sectorSize
        return UInt32(min(defaultJournalSectors, (sectors - 1) / 2))
    }

    /// h = 0x6a09e667f3bcc908; for each 8-byte word w at offset o: h = mix(h ^ w) + o.
    public static func hash(_ bytes: UnsafeRawBufferPointer, count: Int) -> UInt64 {
        var h = hashStart
        var offset = 0
        while offset < count {
            let word = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
            h = Mixing.finalize(h ^ word) &+ UInt64(offset)
            offset += 8
        }
        return h
    }

    /// The sector's own hash (bytes 0..<504) equals the one stored at 504.
    public static func sectorHashMatches(_ sector: UnsafeRawBufferPointer) -> Bool {
        hash(sector, count: hashedBytes) == sector.load64(at: hashedBytes)
    }

    /// Stores the hash of bytes 0..<504 at 504.
    static func seal(_ sector: UnsafeMutableRawBufferPointer) {
        sector.store64(hash(UnsafeRawBufferPointer(sector), count: hashedBytes), at: hashedBytes)
    }

    /// Word `i` of step `seq`'s data block: mix(seed + seq * golden + i).
    @inline(__always)
    public static func dataWord(seed: UInt64, seq: UInt64, index: Int) -> UInt64 {
        Mixing.finalize(seed &+ seq &* golden &+ UInt64(index))
    }

    /// Fills `block` (4 KiB) with step `seq`'s data and returns its hash (the sector hash run
    /// over all 4096 bytes).
    public static func fillDataBlock(_ block: UnsafeMutableRawBufferPointer, seed: UInt64, seq: UInt64) -> UInt64 {
        for index in 0..<(dataBlockSize / 8) {
            block.store64(dataWord(seed: seed, seq: seq, index: index), at: index * 8)
        }
        return hash(UnsafeRawBufferPointer(block), count: dataBlockSize)
    }

    /// The superblock of a disk with `journalSectors` ring sectors and `seed`.
    public static func superblock(journalSectors: UInt32, seed: UInt64) -> [UInt8] {
        var sector = [UInt8](repeating: 0, count: sectorSize)
        sector.withUnsafeMutableBytes { s in
            s.store64(superblockMagic, at: 0)
            s.store32(version, at: 8)
            s.store32(journalSectors, at: 12)
            s.store64(seed, at: 16)
            seal(s)
        }
        return sector
    }
}

/// Sector 0 as read back.
public struct DiskSuperblock: Sendable, Equatable {
    public var journalSectors: UInt32
    public var seed: UInt64

    public init(journalSectors: UInt32, seed: UInt64) {
        self.journalSectors = journalSectors
        self.seed = seed
    }

    /// nil for an all-zero sector (a fresh disk); throws for anything else that is not a
    /// superblock of version 1.
    public static func parse(_ sector: UnsafeRawBufferPointer, path: String) throws(GuestError) -> DiskSuperblock? {
        if sector.allSatisfy({ $0 == 0 }) { return nil }
        guard sector.load64(at: 0) == DiskJournalFormat.superblockMagic else {
            throw GuestError(
                .invalidDisk,
                "\(path): sector 0 is not a Ferry journal superblock (no FERRYJNL); use a new or zeroed disk")
        }
        guard DiskJournalFormat.sectorHashMatches(sector) else {
            throw GuestError(.invalidDisk, "\(path): the superblock's hash does not match its bytes (corrupt sector 0)")
        }
        let version = sector.load32(at: 8)
        guard version == DiskJournalFormat.version else {
            throw GuestError(.invalidDisk, "\(path): journal version \(version); this Ferry reads version 1")
        }
        return DiskSuperblock(journalSectors: sector.load32(at: 12), seed: sector.load64(at: 16))
    }
}

/// One journal record (a ring sector).
public struct DiskRecord: Sendable, Equatable {
    public enum Kind: UInt32, Sendable {
        case boot = 1
        case step = 2
        case cleanShutdown = 3
    }

    public var kind: Kind
    public var seq: UInt64
    public var bootCount: UInt64
    /// The guest's progress (steps) when it wrote the record.
    public var progress: UInt64
    /// The guest workload's checksum when it wrote the record.
    public var checksum: UInt64
    /// A step record's data block (byte offset on the disk and hash); 0 for other kinds.
    public var dataOffset: UInt64
    public var dataHash: UInt64

    public init(
        kind: Kind, seq: UInt64, bootCount: UInt64, progress: UInt64, checksum: UInt64, dataOffset: UInt64 = 0,
        dataHash: UInt64 = 0
    ) {
        self.kind = kind
        self.seq = seq
        self.bootCount = bootCount
        self.progress = progress
        self.checksum = checksum
        self.dataOffset = dataOffset
        self.dataHash = dataHash
    }

    /// The sector (1-based from the disk's start) that record `seq` lives in.
    public static func sector(seq: UInt64, journalSectors: UInt32) -> Int {
        1 + Int((seq - 1) % UInt64(journalSectors))
    }

    public func encode(into sector: UnsafeMutableRawBufferPointer) {
        sector.store32(DiskJournalFormat.recordMagic, at: 0)
        sector.store32(kind.rawValue, at: 4)
        sector.store64(seq, at: 8)
        sector.store64(bootCount, at: 16)
        sector.store64(progress, at: 24)
        sector.store64(checksum, at: 32)
        sector.store64(dataOffset, at: 40)
        sector.store64(dataHash, at: 48)
        var offset = DiskJournalFormat.fillerOffset
        while offset < DiskJournalFormat.hashedBytes {
            sector.store64(Mixing.finalize(seq &+ UInt64(offset)), at: offset)
            offset += 8
        }
        DiskJournalFormat.seal(sector)
    }

    public var encoded: [UInt8] {
        var sector = [UInt8](repeating: 0, count: DiskJournalFormat.sectorSize)
        sector.withUnsafeMutableBytes { encode(into: $0) }
        return sector
    }

    /// Why a ring sector is not a record (or nil when it is an intact one).
    public enum Defect: Error, Sendable, Equatable {
        /// All zero: never written.
        case empty
        case badHash
        case badMagic
        case badKind(UInt32)
        case badFiller
    }

    /// The record in `sector`, or why there is none.
    public static func parse(_ sector: UnsafeRawBufferPointer) -> Result<DiskRecord, Defect> {
        if sector.allSatisfy({ $0 == 0 }) { return .failure(.empty) }
        guard DiskJournalFormat.sectorHashMatches(sector) else { return .failure(.badHash) }
        guard sector.load32(at: 0) == DiskJournalFormat.recordMagic else { return .failure(.badMagic) }
        let rawKind = sector.load32(at: 4)
        guard let kind = Kind(rawValue: rawKind) else { return .failure(.badKind(rawKind)) }
        let seq = sector.load64(at: 8)
        var offset = DiskJournalFormat.fillerOffset
        while offset < DiskJournalFormat.hashedBytes {
            guard sector.load64(at: offset) == Mixing.finalize(seq &+ UInt64(offset)) else {
                return .failure(.badFiller)
            }
            offset += 8
        }
        return .success(
            DiskRecord(
                kind: kind, seq: seq, bootCount: sector.load64(at: 16), progress: sector.load64(at: 24),
                checksum: sector.load64(at: 32), dataOffset: sector.load64(at: 40), dataHash: sector.load64(at: 48)))
    }
}

/// Where the data blocks of a disk lie.
public struct DiskGeometry: Sendable, Equatable {
    public var diskBytes: Int
    public var journalSectors: UInt32
    public var seed: UInt64

    public init(diskBytes: Int, journalSectors: UInt32, seed: UInt64) {
        self.diskBytes = diskBytes
        self.journalSectors = journalSectors
        self.seed = seed
    }

    /// The first byte after the ring.
    public var dataAreaOffset: Int { (1 + Int(journalSectors)) * DiskJournalFormat.sectorSize }
    /// 4 KiB blocks in the data area.
    public var dataBlocks: UInt64 { UInt64((diskBytes - dataAreaOffset) / DiskJournalFormat.dataBlockSize) }

    /// Step `seq`'s data block: block mix(seed ^ seq) mod blocks of the data area.
    public func dataOffset(seq: UInt64) -> UInt64 {
        UInt64(dataAreaOffset) + (Mixing.finalize(seed ^ seq) % dataBlocks) * UInt64(DiskJournalFormat.dataBlockSize)
    }
}

extension UnsafeRawBufferPointer {
    @inline(__always)
    func load64(at offset: Int) -> UInt64 {
        UInt64(littleEndian: loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }
    @inline(__always)
    func load32(at offset: Int) -> UInt32 {
        UInt32(littleEndian: loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }
}

extension UnsafeMutableRawBufferPointer {
    @inline(__always)
    func store64(_ value: UInt64, at offset: Int) {
        storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt64.self)
    }
    @inline(__always)
    func store32(_ value: UInt32, at offset: Int) {
        storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt32.self)
    }
}
