import FerryHostModel
import FerrySystem
import FerryVMM
import Foundation
import Glibc

/// Where a guest's files are under the agent's state directory (docs/agent.md, "State
/// directory"): the `ferry vmm` files in `guests/` (named by the guest's ID: socket, memory
/// image, suspend file, log), and disks without a path of their own in `disks/`.
public struct GuestFiles: Sendable {
    /// `STATE/guests`, given to every `ferry vmm` as `--state-dir`.
    public let guestsDirectory: String
    /// `STATE/disks`.
    public let disksDirectory: String

    public init(guestsDirectory: String, disksDirectory: String) {
        self.guestsDirectory = guestsDirectory
        self.disksDirectory = disksDirectory
    }

    public func socketPath(_ id: GuestID) -> String {
        VMMConfiguration.socketPath(stateDirectory: guestsDirectory, id: id)
    }
    public func suspendPath(_ id: GuestID) -> String { "\(guestsDirectory)/\(id.hex).suspend" }
    public func specPath(_ id: GuestID) -> String { "\(guestsDirectory)/\(id.hex).json" }
    public func launchLogPath(_ id: GuestID) -> String { "\(guestsDirectory)/\(id.hex).launch.log" }
    public func logPath(_ id: GuestID) -> String { "\(guestsDirectory)/\(id.hex).log" }

    /// Every file of the guest's process in `guests/` (never its disks).
    func processFiles(_ id: GuestID) -> [String] {
        let stem = "\(guestsDirectory)/\(id.hex)"
        return [".sock", ".img", ".img.lock", ".suspend", ".json", ".log", ".launch.log"].map { stem + $0 }
    }

    /// The default path of a disk without one: `disks/GUEST.DISK.raw` (names hold no `.`).
    public func defaultDiskPath(guest: GuestName, disk: String) -> String {
        "\(disksDirectory)/\(guest.value).\(disk).raw"
    }

    /// The specification with every disk's path filled in (the default where it had none).
    func resolvingDiskPaths(_ spec: GuestSpecification) -> GuestSpecification {
        var resolved = spec
        for index in resolved.disks.indices where resolved.disks[index].path == nil {
            resolved.disks[index].path = defaultDiskPath(guest: spec.name, disk: resolved.disks[index].name)
        }
        return resolved
    }

    /// Creates the disks' files, sparse, that do not exist yet (empty, or a copy of the disk's
    /// template); a file that exists is used as it is when its size matches and refused otherwise. Returns the paths it created (to remove
    /// them again if the guest cannot be defined).
    func createDisks(_ spec: GuestSpecification) throws(AgentAPIError) -> [String] {
        var created: [String] = []
        for (index, disk) in spec.disks.enumerated() {
            guard let path = disk.path else { continue }
            var info = stat()
            if stat(path, &info) == 0 {
                guard info.st_mode & S_IFMT == S_IFREG, Int(info.st_size) == disk.sizeBytes else {
                    removeFiles(created)
                    throw AgentAPIError(
                        .conflict, .conflict,
                        "disks[\(index)].path: \(path) exists and is not a \(disk.sizeBytes)-byte file; remove it,"
                            + " or give the disk another path or its size (\(info.st_size) bytes)",
                        field: "disks[\(index)].path")
                }
                continue
            }
            if let template = disk.template {
                do throws(AgentAPIError) {
                    try DiskTemplate.copy(template, to: path, sizeBytes: disk.sizeBytes, field: "disks[\(index)]")
                    created.append(path)
                } catch {
                    removeFiles(created)
                    throw error
                }
                continue
            }
            do {
                try ImageFile.create(path: path, size: disk.sizeBytes, overwrite: false)
                created.append(path)
            } catch {
                removeFiles(created)
                throw AgentAPIError(
                    .unprocessableContent, .invalidField,
                    "disks[\(index)].path: cannot create \(path) (\(error)); give a path in a writable directory",
                    field: "disks[\(index)].path")
            }
        }
        return created
    }

    func removeFiles(_ paths: [String]) {
        for path in paths { unlink(path) }
    }

    /// The disks whose files are missing now, by name.
    func missingDisks(_ spec: GuestSpecification) -> [String] {
        spec.disks.filter { disk in disk.path.map { access($0, F_OK) != 0 } ?? false }.map(\.name)
    }

    /// The disks' sizes and the bytes their files hold (`st_blocks`), over `specs`.
    static func diskBytes(_ specs: [GuestSpecification]) -> (provisioned: UInt64, allocated: UInt64) {
        var provisioned: UInt64 = 0
        var allocated: UInt64 = 0
        for disk in specs.flatMap(\.disks) {
            provisioned += UInt64(disk.sizeBytes)
            var info = stat()
            if let path = disk.path, stat(path, &info) == 0 { allocated += UInt64(info.st_blocks) * 512 }
        }
        return (provisioned, allocated)
    }
}
