import FerryGuest
import FerryGuestMigration
import FerryHostModel
import FerryKVM
import FerryKVMMigration
import FerryProtocol
import FerrySystem
import Logging

/// The disk a `ferry vmm --spec` guest boots on (docs/vmm-control.md, "The guest's disk"): the
/// specification's one disk, at its path or `STATE_DIR/GUEST_ID.NAME.disk`, created sparse at its
/// size if missing. A guest received by migration or restored from a suspend file gets its disk
/// from the device state instead (the section of kind 2 names it).
struct GuestDisk: Sendable, Equatable {
    var name: String
    var path: String
    var sizeBytes: Int

    /// The built-in guest's step records per second, and the rate the KVM guest's journal
    /// interval is chosen for unless its workload gives `journal=N`.
    static let recordsPerSecond = GuestDiskBoot.defaultRecordsPerSecond

    /// `spec`'s disk, nil without one; two or more are refused (one disk per guest).
    static func resolve(_ spec: GuestSpecification, stateDirectory: String, id: GuestID) throws(VMMError) -> GuestDisk?
    {
        guard spec.disks.count <= 1 else {
            throw VMMError(
                .configuration,
                "the guest specification has \(spec.disks.count) disks (\(spec.disks.map(\.name).joined(separator: ", "))); ferry vmm runs one disk per guest: keep one in disks"
            )
        }
        guard let disk = spec.disks.first else { return nil }
        let path = disk.path ?? "\(stateDirectory)/\(id.hex).\(disk.name).disk"
        if ImageFile.exists(path: path), let actual = try? ImageFile.size(path: path), actual != disk.sizeBytes {
            throw VMMError(
                .configuration,
                "disk \(disk.name) at \(path) is \(actual) bytes but the specification says \(disk.sizeBytes); fix size_bytes or give the disk another path"
            )
        }
        return GuestDisk(name: disk.name, path: path, sizeBytes: disk.sizeBytes)
    }

    /// The built-in guest's writer (not started) on this disk; the resume line goes to `console`.
    func openForBuiltin(_ guest: Guest, seed: UInt64, console: ConsoleLog, logger: Logger) throws -> DiskWriter {
        let opened = try GuestDiskBoot(path: path, sizeBytes: sizeBytes, recordsPerSecond: Self.recordsPerSecond)
            .open(for: guest, seed: seed, logger: logger)
        for line in opened.lines { console.append(line) }
        return opened.writer
    }

    /// The KVM guest's parameters for a boot on a disk: the journal interval for
    /// `recordsPerSecond` unless the workload text gives `journal=N`.
    static func kvmParameters(_ parameters: KVMGuestParameters, workload: String) -> KVMGuestParameters {
        var parameters = parameters
        let items = workload.split(separator: ":", maxSplits: 1).dropFirst().first?.split(separator: ",") ?? []
        if !items.contains(where: { $0.hasPrefix("journal=") }) {
            parameters.journalInterval = parameters.journalInterval(recordsPerSecond: recordsPerSecond)
        }
        return parameters
    }

    /// The KVM guest's disk, opened and locked (created if missing).
    func openForKVM() throws -> KVMDisk {
        try KVMDisk.opening(path: path, sizeBytes: sizeBytes)
    }

    /// A restored built-in guest's writer (not started): the journal continues at the cursor the
    /// suspend saved (same boot, no gap). nil when the guest had no disk.
    static func continuingBuiltin(_ guest: Guest, _ sections: [DeviceStateSection], logger: Logger) throws
        -> DiskWriter?
    {
        guard let section = sections.first(where: { $0.kind == BuiltinDiskSection.kind }) else { return nil }
        let disk = try BuiltinDiskSection(section)
        let journal = try DiskJournal.continuing(disk.cursor)
        return try guest.diskWriter(journal: journal, recordsPerSecond: disk.recordsPerSecond, logger: logger)
    }

    /// A restored KVM guest's disk (the program's journal lives in its memory and continues).
    static func continuingKVM(_ sections: [DeviceStateSection]) throws -> KVMDisk? {
        guard let section = try KVMDiskSection.find(in: sections) else { return nil }
        let disk = try KVMDisk(path: section.path)
        guard disk.sectors == section.sectors else {
            disk.release()
            throw VMMError(
                .configuration,
                "disk \(section.path) has \(disk.sectors) sectors now, \(section.sectors) when the guest was suspended; give the guest its disk back"
            )
        }
        return disk
    }
}
