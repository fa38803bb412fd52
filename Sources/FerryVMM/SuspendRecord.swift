import FerryGuestMigration
import FerryHostModel
import FerryKVMMigration
import FerryProtocol
import Foundation

/// What `suspend` writes to `STATE_DIR/GUEST_ID.suspend` (JSON) beside the guest's memory image:
/// the guest's identity and specification, the image's path, and its vCPU and device state as
/// the engine's `DEVICE_STATE` sections (the same bytes a migration carries). `ferry vmm
/// --restore FILE` maps the image and continues the guest from these states.
struct SuspendRecord: Codable {
    static let currentFormat = 1

    var format = SuspendRecord.currentFormat
    var guestID: GuestID
    var specification: GuestSpecification
    var image: String
    var guestKind: UInt16
    var cpuStateFormat: UInt16
    /// `GuestDescription` (seed, parameters) of the guest as it runs.
    var seed: UInt64
    var parameters: String
    /// The `DEVICE_STATE` payload, base64.
    var deviceState: String
    var vcpuSteps: [UInt64]
    var suspendedAt: String

    enum CodingKeys: String, CodingKey {
        case format, specification, image, seed, parameters
        case guestID = "guest_id"
        case guestKind = "guest_kind"
        case cpuStateFormat = "cpu_state_format"
        case deviceState = "device_state"
        case vcpuSteps = "vcpu_steps"
        case suspendedAt = "suspended_at"
    }

    var sections: [DeviceStateSection] {
        get throws(VMMError) {
            guard let data = Data(base64Encoded: deviceState) else {
                throw VMMError(.configuration, "the suspend file's device_state is not base64; the file is damaged")
            }
            do {
                return try [UInt8](data).withUnsafeBytes { bytes throws(ProtocolError) in
                    try DeviceState(payload: bytes).sections
                }
            } catch {
                throw VMMError(
                    .configuration, "the suspend file's device_state does not decode: \(error); the file is damaged",
                    cause: error)
            }
        }
    }

    static func encode(_ sections: [DeviceStateSection]) -> String {
        var bytes: [UInt8] = []
        DeviceState(sections: sections).encode(into: &bytes)
        return Data(bytes).base64EncodedString()
    }

    /// Writes the record to `path` whole (a temporary file, fsync, rename).
    func write(to path: String) throws(VMMError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        do {
            let data = try encoder.encode(self)
            let temporary = path + ".tmp"
            try data.write(to: URL(fileURLWithPath: temporary))
            let fd = open(temporary, O_RDONLY)
            if fd >= 0 {
                fsync(fd)
                close(fd)
            }
            guard rename(temporary, path) == 0 else { throw VMMError.system("rename", "saving \(path)") }
        } catch let error as VMMError {
            throw error
        } catch {
            throw VMMError(.system, "cannot write the suspend file \(path): \(error)", cause: error)
        }
    }

    static func read(from path: String) throws(VMMError) -> SuspendRecord {
        let record: SuspendRecord
        do {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            record = try JSONDecoder().decode(SuspendRecord.self, from: data)
        } catch {
            throw VMMError(
                .configuration, "cannot read the suspend file \(path): \(error); give the file suspend wrote",
                cause: error)
        }
        guard record.format == currentFormat else {
            throw VMMError(
                .configuration, "\(path) has suspend format \(record.format); this ferry reads \(currentFormat)")
        }
        return record
    }
}

/// What an agent may change in a suspend file that another host wrote.
public enum SuspendFile {
    /// Points the suspend file at `path` to the guest's memory image at `image` and its disks at
    /// their new paths (`disks`: old path → new path), in the specification and in the disk's
    /// device-state section alike (both moved to this host by a cold migration); rewrites the
    /// file whole.
    public static func relocate(_ path: String, image: String, disks: [String: String]) throws(VMMError) {
        var record = try SuspendRecord.read(from: path)
        record.image = image
        for index in record.specification.disks.indices {
            if let old = record.specification.disks[index].path, let new = disks[old] {
                record.specification.disks[index].path = new
            }
        }
        var sections = try record.sections
        do {
            for index in sections.indices where sections[index].kind == 2 {
                sections[index] = try relocated(sections[index], kind: record.specification.kind, disks: disks)
            }
        } catch let error as VMMError {
            throw error
        } catch {
            throw VMMError(.configuration, "\(path): the disk's device state does not decode: \(error)", cause: error)
        }
        record.deviceState = SuspendRecord.encode(sections)
        try record.write(to: path)
    }

    private static func relocated(
        _ section: DeviceStateSection, kind: GuestSpecification.Kind, disks: [String: String]
    ) throws -> DeviceStateSection {
        switch kind {
        case .builtin:
            var disk = try BuiltinDiskSection(section)
            guard let new = disks[disk.cursor.path] else { return section }
            disk.cursor.path = new
            return disk.section
        case .kvm:
            guard var disk = try KVMDiskSection.find(in: [section]), let new = disks[disk.path] else { return section }
            disk.path = new
            return disk.section
        }
    }
}
