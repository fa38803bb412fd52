import FerryGuest
import Logging

/// The disk of a built-in guest that boots (docs/disk.md), opened the one way `ferry run`,
/// `ferry send` and `ferry vmm --spec` open it: the file is created sparse if missing, its
/// journal booted (a boot record after the head, flushed), and a `DiskWriter` made over it for
/// the guest, not yet started. `lines` says where the journal resumed (and the damage it
/// skipped), for the guest's console or the terminal.
public struct GuestDiskBoot: Sendable {
    /// Step records per second when nothing says otherwise (each 4.5 KiB written: 450 KiB/s).
    public static let defaultRecordsPerSecond = 100.0

    public var path: String
    /// The size of a disk this creates; a disk that exists keeps its own.
    public var sizeBytes: Int
    public var recordsPerSecond: Double

    public init(path: String, sizeBytes: Int, recordsPerSecond: Double = Self.defaultRecordsPerSecond) {
        self.path = path
        self.sizeBytes = sizeBytes
        self.recordsPerSecond = recordsPerSecond
    }

    /// The writer (not started) and the lines to show.
    public struct Opened {
        public let writer: DiskWriter
        public let lines: [String]
    }

    /// Creates the disk if missing, boots its journal (a fresh disk gets a superblock with
    /// `seed`) and makes `guest`'s writer.
    public func open(for guest: Guest, seed: UInt64, logger: Logger) throws -> Opened {
        try DiskJournal.createDisk(path: path, bytes: sizeBytes)
        let journal = try DiskJournal.boot(path: path, seed: seed)
        let writer = try guest.diskWriter(journal: journal, recordsPerSecond: recordsPerSecond, logger: logger)
        return Opened(writer: writer, lines: Self.lines(journal))
    }

    /// Where `journal` resumed when it booted, and the damage it continued after.
    static func lines(_ journal: DiskJournal) -> [String] {
        guard let scan = journal.resumedFrom else { return [] }
        var lines = [scan.resumeLine]
        if let corruption = scan.firstCorruption {
            lines.append(
                "disk: the journal is damaged at \(corruption); continued after record \(scan.head?.seq ?? 0)")
        }
        return lines
    }
}
