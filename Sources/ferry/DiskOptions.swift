import ArgumentParser
import FerryGuest
import FerryGuestMigration
import FerryKVM
import Logging

/// `--disk`, `--disk-size` and `--disk-rate` of `ferry run` and `ferry send` (docs/disk.md).
struct DiskOptions: ParsableArguments {
    @Option(
        help:
            "A disk for the guest: a raw file holding its journal (created sparse with --disk-size if missing). A migrated guest's disk must be at the same path on the destination (shared storage)."
    )
    var disk: String?

    @Option(
        name: .customLong("disk-size"), help: "Size of a disk that --disk creates (64KiB to 1TiB; default 64MiB).",
        transform: SizeOption.within(64 << 10, 1 << 40, "a size from 64KiB to 1TiB, in 512-byte sectors, like 64MiB"))
    var diskSize = SizeOption(bytes: 64 << 20, text: "64MiB")

    @Option(
        name: .customLong("disk-rate"),
        help:
            "Step records the guest writes to its disk per second, each with a 4 KiB data block (0.001-100000; default 100, about 450 KiB/s). The KVM guest writes one every N steps of vCPU 0, N chosen from its rate (unpaced: every 4096 steps; journal=N in --workload sets N).",
        transform: NumberOption.real(0.001...100_000, unit: "records/s"))
    var diskRate = GuestDiskBoot.defaultRecordsPerSecond

    func validate() throws {
        if disk == nil && (diskSize.bytes != 64 << 20 || diskRate != GuestDiskBoot.defaultRecordsPerSecond) {
            throw ValidationError("--disk-size and --disk-rate need --disk")
        }
        if diskSize.bytes % 512 != 0 {
            throw ValidationError("--disk-size \(diskSize): must be whole 512-byte sectors")
        }
    }

    /// The KVM guest's disk (created if missing), opened and locked; nil without --disk. The
    /// program prints where its journal resumed when it boots.
    func openForKVM() throws -> KVMDisk? {
        guard let disk else { return nil }
        return try KVMDisk.opening(path: disk, sizeBytes: diskSize.bytes)
    }

    /// Steps of vCPU 0 between the KVM guest's step records for --disk-rate
    /// (`KVMGuestParameters.journalInterval(recordsPerSecond:)`).
    func kvmJournalInterval(_ parameters: KVMGuestParameters) -> UInt64 {
        parameters.journalInterval(recordsPerSecond: diskRate)
    }

    /// Opens the disk (creating it if missing) for a guest that boots: prints where its journal
    /// resumed and returns a writer for `guest`, not started. nil without --disk.
    func boot(for guest: Guest, seed: UInt64, logger: Logger) throws -> DiskWriter? {
        guard let disk else { return nil }
        let opened = try GuestDiskBoot(path: disk, sizeBytes: diskSize.bytes, recordsPerSecond: diskRate).open(
            for: guest, seed: seed, logger: logger)
        for line in opened.lines { HumanOutput.print(line) }
        return opened.writer
    }
}
