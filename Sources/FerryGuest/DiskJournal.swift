import FerrySystem

/// Where a journal's writer stands: what a migrating guest carries to continue its disk's
/// journal on the destination without a gap.
public struct DiskCursor: Sendable, Equatable {
    public var path: String
    public var geometry: DiskGeometry
    /// The sequence number the next record gets.
    public var nextSeq: UInt64
    /// The boot this writer's records belong to.
    public var bootCount: UInt64

    public init(path: String, geometry: DiskGeometry, nextSeq: UInt64, bootCount: UInt64) {
        self.path = path
        self.geometry = geometry
        self.nextSeq = nextSeq
        self.bootCount = bootCount
    }
}

/// The writer of a disk's journal (docs/disk.md). Holds the disk's `ImageLock` while open: one
/// writer at a time. Not thread-safe: one thread uses it at a time.
public final class DiskJournal {
    public let path: String
    public let geometry: DiskGeometry
    public private(set) var nextSeq: UInt64
    public private(set) var bootCount: UInt64
    /// What the disk held when it was opened by `boot` (nil when continued after a migration).
    public let resumedFrom: DiskJournalScan?
    private let file: PositionedFile
    private var lock: ImageLock?
    private var sector = [UInt8](repeating: 0, count: DiskJournalFormat.sectorSize)
    private var block = [UInt8](repeating: 0, count: DiskJournalFormat.dataBlockSize)
    /// Records written since the last `flush()`.
    public private(set) var unflushed = 0

    private init(
        path: String, geometry: DiskGeometry, nextSeq: UInt64, bootCount: UInt64, file: PositionedFile, lock: ImageLock,
        resumedFrom: DiskJournalScan?
    ) {
        self.path = path
        self.geometry = geometry
        self.nextSeq = nextSeq
        self.bootCount = bootCount
        self.file = file
        self.lock = lock
        self.resumedFrom = resumedFrom
    }

    deinit { lock?.release() }

    /// Creates the disk file `path` of `bytes`, sparse (`ftruncate`), unless it exists; returns
    /// whether it was created.
    @discardableResult
    public static func createDisk(path: String, bytes: Int) throws(GuestError) -> Bool {
        guard bytes >= DiskJournalFormat.minimumDiskBytes, bytes % DiskJournalFormat.sectorSize == 0 else {
            throw GuestError(
                .invalidDisk,
                "disk \(path): \(bytes) bytes; a disk needs at least \(DiskJournalFormat.minimumDiskBytes) bytes, in whole 512-byte sectors"
            )
        }
        if ImageFile.exists(path: path) { return false }
        do {
            try ImageFile.create(path: path, size: bytes, overwrite: false)
        } catch let error as SystemError {
            throw GuestError.system(error, hint: "pick a disk path in a directory that exists and is writable")
        } catch {
            throw GuestError(.system, "\(error)")
        }
        return true
    }

    /// Opens the disk at `path` for a guest that boots: locks it, writes a superblock with `seed`
    /// on a fresh (all-zero) disk, finds the journal's head and writes a boot record after it.
    public static func boot(path: String, seed: UInt64, progress: UInt64 = 0, checksum: UInt64 = 0) throws(GuestError)
        -> DiskJournal
    {
        let (file, lock, size) = try open(path: path)
        var scan = try DiskJournalScan.read(file, diskBytes: size, verifyData: false)
        if scan.superblock == nil {
            guard size >= DiskJournalFormat.minimumDiskBytes else {
                throw GuestError(
                    .invalidDisk,
                    "disk \(path): \(size) bytes; a disk needs at least \(DiskJournalFormat.minimumDiskBytes) bytes")
            }
            let superblock = DiskSuperblock(
                journalSectors: DiskJournalFormat.journalSectors(diskBytes: size), seed: seed)
            try write(file, DiskJournalFormat.superblock(journalSectors: superblock.journalSectors, seed: seed), at: 0)
            scan.superblock = superblock
        }
        let superblock = scan.superblock!
        let geometry = DiskGeometry(diskBytes: size, journalSectors: superblock.journalSectors, seed: superblock.seed)
        let journal = DiskJournal(
            path: path, geometry: geometry, nextSeq: (scan.head?.seq ?? 0) + 1, bootCount: scan.boots + 1, file: file,
            lock: lock, resumedFrom: scan)
        try journal.append(.boot, progress: progress, checksum: checksum)
        try journal.flush()
        return journal
    }

    /// Opens the disk of `cursor` to continue its journal where another writer (the source of a
    /// migration) left it: locks it and checks that the journal's head is the record before
    /// `cursor.nextSeq`. Writes nothing.
    public static func continuing(_ cursor: DiskCursor) throws(GuestError) -> DiskJournal {
        let (file, lock, size) = try open(path: cursor.path)
        try verify(cursor, file: file, size: size)
        return DiskJournal(
            path: cursor.path, geometry: cursor.geometry, nextSeq: cursor.nextSeq, bootCount: cursor.bootCount,
            file: file, lock: lock, resumedFrom: nil)
    }

    /// Checks, before the handover, that `continuing(cursor)` will succeed here: the disk exists
    /// with the journal the cursor continues, and no one holds its lock (the source released it
    /// before it sent the cursor). Takes no lock and writes nothing; throws naming the problem,
    /// so a destination that cannot continue the journal fails while the source still owns the guest.
    public static func checkContinuable(_ cursor: DiskCursor) throws(GuestError) {
        if let conflict = ImageLock.conflict(path: cursor.path) { throw GuestError.system(conflict) }
        let file: PositionedFile
        let size: Int
        do throws(SystemError) {
            file = try PositionedFile(reading: cursor.path)
            size = try file.size()
        } catch {
            throw GuestError.system(error, hint: "the guest's disk must be at the same path here (shared storage)")
        }
        try verify(cursor, file: file, size: size)
    }

    /// The disk of `size` bytes in `file` holds the journal `cursor` continues. Only the
    /// superblock and the record before the cursor are read (this runs in the blackout and at the
    /// resume): those two sectors tell a different or unflushed disk.
    private static func verify(_ cursor: DiskCursor, file: PositionedFile, size: Int) throws(GuestError) {
        guard size == cursor.geometry.diskBytes else {
            throw GuestError(
                .invalidDisk,
                "disk \(cursor.path) has \(size) bytes here, \(cursor.geometry.diskBytes) on the source: both ends must see the same disk"
            )
        }
        var sector = [UInt8](repeating: 0, count: DiskJournalFormat.sectorSize)
        try DiskJournalScan.readFully(file, into: &sector, at: 0)
        let superblock = try sector.withUnsafeBytes { bytes in
            Result { () throws(GuestError) in try DiskSuperblock.parse(bytes, path: cursor.path) }
        }.get()
        var last: DiskRecord?
        if cursor.nextSeq > 1 {
            let at = DiskRecord.sector(seq: cursor.nextSeq - 1, journalSectors: cursor.geometry.journalSectors)
            try DiskJournalScan.readFully(file, into: &sector, at: at * DiskJournalFormat.sectorSize)
            last = try? sector.withUnsafeBytes { DiskRecord.parse($0) }.get()
        }
        guard superblock?.seed == cursor.geometry.seed,
            superblock?.journalSectors == cursor.geometry.journalSectors,
            cursor.nextSeq == 1 || last?.seq == cursor.nextSeq - 1
        else {
            throw GuestError(
                .invalidDisk,
                "disk \(cursor.path): record \(cursor.nextSeq - 1), which the guest wrote last, is not on it: this is not the disk the source wrote (both ends must see the same storage), or it was not flushed"
            )
        }
    }

    private static func open(path: String) throws(GuestError) -> (PositionedFile, ImageLock, Int) {
        do throws(SystemError) {
            let lock = try ImageLock.acquire(path: path)
            let file = try PositionedFile(updating: path)
            return (file, lock, try file.size())
        } catch {
            throw GuestError.system(error)
        }
    }

    public var cursor: DiskCursor {
        DiskCursor(path: path, geometry: geometry, nextSeq: nextSeq, bootCount: bootCount)
    }

    /// Writes step record `nextSeq`: its data block first, then the record.
    public func appendStep(progress: UInt64, checksum: UInt64) throws(GuestError) {
        try append(.step, progress: progress, checksum: checksum)
    }

    /// Writes the clean-shutdown record and makes everything durable.
    public func appendCleanShutdown(progress: UInt64, checksum: UInt64) throws(GuestError) {
        try append(.cleanShutdown, progress: progress, checksum: checksum)
        try flush()
    }

    private func append(_ kind: DiskRecord.Kind, progress: UInt64, checksum: UInt64) throws(GuestError) {
        precondition(lock != nil, "DiskJournal used after close()")
        let seq = nextSeq
        var record = DiskRecord(kind: kind, seq: seq, bootCount: bootCount, progress: progress, checksum: checksum)
        if kind == .step {
            let offset = geometry.dataOffset(seq: seq)
            let seed = geometry.seed
            record.dataOffset = offset
            record.dataHash = block.withUnsafeMutableBytes { DiskJournalFormat.fillDataBlock($0, seed: seed, seq: seq) }
            try Self.write(file, block, at: Int(offset))
        }
        sector.withUnsafeMutableBytes { record.encode(into: $0) }
        try Self.write(
            file, sector,
            at: DiskRecord.sector(seq: seq, journalSectors: geometry.journalSectors) * DiskJournalFormat.sectorSize)
        nextSeq = seq + 1
        unflushed += 1
    }

    /// `fdatasync`: every record written so far is durable.
    public func flush() throws(GuestError) {
        do throws(SystemError) {
            try file.sync()
        } catch {
            throw GuestError.system(error)
        }
        unflushed = 0
    }

    /// Gives the disk up (its lock); the journal is not used afterwards. Idempotent.
    public func close() {
        lock?.release()
        lock = nil
    }

    public var isOpen: Bool { lock != nil }

    private static func write(_ file: PositionedFile, _ bytes: [UInt8], at offset: Int) throws(GuestError) {
        let result = bytes.withUnsafeBytes { buffer in
            Result { () throws(SystemError) in try file.write(buffer, at: offset) }
        }
        do throws(SystemError) {
            try result.get()
        } catch {
            throw GuestError.system(error)
        }
    }
}
