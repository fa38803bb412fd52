import FerryGuest
import FerryMigration
import FerryProtocol
import Logging

/// The built-in guest's disk as a `DEVICE_STATE` section (kind 2, version 1, instance 0): where
/// its journal's writer stands and how fast it writes, so the destination continues the same
/// journal on the same disk (storage both ends see) without a gap.
///
/// Body, little-endian: u64 next_seq, u64 boot_count, u64 disk_bytes, u64 seed, u32
/// journal_sectors, u32 path_length, f64 records_per_second, path (UTF-8, ≤ 4096 bytes).
public struct BuiltinDiskSection: Sendable, Equatable {
    public static let kind: UInt16 = 2
    public static let version: UInt16 = 1
    static let fixedBytes = 48
    static let maxPathBytes = 4096

    public var cursor: DiskCursor
    public var recordsPerSecond: Double

    public init(cursor: DiskCursor, recordsPerSecond: Double) {
        self.cursor = cursor
        self.recordsPerSecond = recordsPerSecond
    }

    public var section: DeviceStateSection {
        var body: [UInt8] = []
        func append<T: FixedWidthInteger>(_ value: T) {
            withUnsafeBytes(of: value.littleEndian) { body.append(contentsOf: $0) }
        }
        let path = Array(cursor.path.utf8)
        append(cursor.nextSeq)
        append(cursor.bootCount)
        append(UInt64(cursor.geometry.diskBytes))
        append(cursor.geometry.seed)
        append(cursor.geometry.journalSectors)
        append(UInt32(path.count))
        append(recordsPerSecond.bitPattern)
        body.append(contentsOf: path)
        return DeviceStateSection(kind: Self.kind, version: Self.version, instance: 0, body: body)
    }

    public init(_ section: DeviceStateSection) throws {
        func refuse(_ why: String) -> MigrationError {
            MigrationError(.protocolViolation, "the built-in guest's disk section: \(why)", guest: .notHere)
        }
        guard section.version == Self.version else { throw refuse("version \(section.version); this Ferry reads 1") }
        let body = section.body
        guard body.count >= Self.fixedBytes else { throw refuse("\(body.count) bytes, fewer than 48") }
        func load<T: FixedWidthInteger>(_ offset: Int, as type: T.Type) -> T {
            body.withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: T.self)) }
        }
        let pathLength = Int(load(36, as: UInt32.self))
        guard pathLength > 0, pathLength <= Self.maxPathBytes, body.count == Self.fixedBytes + pathLength,
            let path = String(validating: body[Self.fixedBytes...], as: UTF8.self)
        else { throw refuse("a path of \(pathLength) bytes in a body of \(body.count)") }
        let diskBytes = load(16, as: UInt64.self)
        let journalSectors = load(32, as: UInt32.self)
        let rate = Double(bitPattern: load(40, as: UInt64.self))
        guard diskBytes <= UInt64(Int.max), journalSectors > 0, rate > 0, rate.isFinite, load(0, as: UInt64.self) > 0
        else { throw refuse("disk of \(diskBytes) bytes, \(journalSectors) journal sectors, rate \(rate)") }
        let geometry = DiskGeometry(
            diskBytes: Int(diskBytes), journalSectors: journalSectors, seed: load(24, as: UInt64.self))
        cursor = DiskCursor(
            path: path, geometry: geometry, nextSeq: load(0, as: UInt64.self), bootCount: load(8, as: UInt64.self))
        recordsPerSecond = rate
    }
}

extension Guest {
    /// What the built-in guest records in its disk's journal: its steps over all vCPUs, and a
    /// checksum of the steps per vCPU (the built-in workload keeps no running checksum).
    public var diskProgress: (steps: UInt64, checksum: UInt64) {
        let steps = stepsPerVCPU
        var checksum: UInt64 = 0x6A09_E667_F3BC_C908
        for (index, step) in steps.enumerated() {
            checksum =
                (checksum ^ step).multipliedReportingOverflow(by: 0x9E37_79B9_7F4A_7C15).partialValue
                &+ UInt64(index)
        }
        return (steps.reduce(0, +), checksum)
    }

    /// A disk writer recording this guest's progress in `journal` at `recordsPerSecond`.
    public func diskWriter(journal: DiskJournal, recordsPerSecond: Double, logger: Logger) throws -> DiskWriter {
        try DiskWriter(journal: journal, recordsPerSecond: recordsPerSecond, logger: logger) { [self] in diskProgress }
    }
}
