import ArgumentParser
import FerryGuest
import Foundation

struct DiskCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "disk",
        abstract:
            "Check guest disks and their journals (docs/disk.md); move a disk file between hosts (docs/disk-move.md).",
        subcommands: [Check.self, DiskSendCommand.self, DiskReceiveCommand.self]
    )

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Read a disk's journal and verify every record and data block.",
            discussion:
                "Prints the head (the newest record of the intact chain), the boot count, whether the guest shut down cleanly, and the first corruption. Exits 0 when the journal is intact (a torn last write, what a crash leaves, is intact), 9 (a guest error) when it is damaged. Reads only: safe while a guest writes the disk, though the head may then move on."
        )

        @Argument(help: "The disk file.")
        var path: String

        @Flag(name: .customLong("no-data"), help: "Check the records only, not their data blocks.")
        var noData = false

        func run() throws {
            runReportingErrors {
                let scan = try DiskJournalScan.read(path: path, verifyData: !noData)
                guard let superblock = scan.superblock else {
                    print("\(path): a fresh disk (no journal yet)")
                    return
                }
                print(
                    "\(path): journal of \(superblock.journalSectors) records, seed \(superblock.seed); \(scan.resumeLine.dropFirst("disk: ".count))"
                )
                print(
                    "chain: records \(scan.oldestSeq ?? 0)…\(scan.head?.seq ?? 0) (\(scan.chainLength)); data blocks verified \(scan.verifiedDataBlocks), since overwritten \(scan.overwrittenDataBlocks)"
                )
                if let torn = scan.tornSector {
                    print("torn write in sector \(torn) (the record after the head; a crash)")
                }
                if let corruption = scan.firstCorruption {
                    throw GuestError(.invalidDisk, "\(path): damaged at \(corruption)")
                }
            }
        }
    }
}
