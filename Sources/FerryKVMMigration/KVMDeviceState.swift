import FerryKVM
import FerryMigration
import FerryProtocol

/// KVM vCPU states as `DEVICE_STATE` vCPU sections of format 2 (Protocol.md 3.8.2): one
/// record per vCPU, each its own section.
extension KVMVCPUState {
    /// The vCPU section of vCPU `index`.
    public func section(vcpu index: Int) -> DeviceStateSection {
        DeviceStateSection(
            kind: DeviceStateSection.vcpu, version: Self.cpuStateFormat, instance: UInt32(index), body: encoded())
    }

    /// The states of the vCPU sections, vCPU 0 first; throws if one is of another format or
    /// malformed, or a mandatory device section of a kind it does not know is present (its one
    /// device is the disk, `KVMDiskSection`).
    public static func states(from sections: [DeviceStateSection]) throws -> [KVMVCPUState] {
        var states: [KVMVCPUState] = []
        for section in sections {
            if section.kind == DeviceStateSection.vcpu {
                guard section.version == cpuStateFormat else {
                    throw KVMError(
                        .invalidState,
                        "vCPU section of format \(section.version) is not the KVM vCPU format \(cpuStateFormat)")
                }
                states.append(try KVMVCPUState(record: section.body))
            } else if !section.isOptional && section.kind != KVMDiskSection.kind {
                throw KVMError(.invalidState, "the KVM guest has no device of kind \(section.kind)")
            }
        }
        return states
    }
}

extension KVMError: MigrationClassifiedError {
    public var migrationCode: MigrationError.Code {
        switch code {
        case .invalidState: return .protocolViolation
        case .invalidConfiguration, .unavailable: return .configuration
        case .syscall, .guestFailed: return .system
        }
    }
}

/// The KVM guest's disk as a `DEVICE_STATE` section (kind 2, version 1, instance 0). The disk
/// keeps no state of its own (its requests and the journal live in guest memory): the section
/// names the disk, so the destination opens the same one (storage both ends see) when it resumes.
/// Body, little-endian: u64 sectors, u32 path_length, u32 reserved (0), path (UTF-8, ≤ 4096 bytes).
public struct KVMDiskSection: Sendable, Equatable {
    public static let kind: UInt16 = 2
    public static let version: UInt16 = 1
    public var path: String
    public var sectors: UInt64

    public init(path: String, sectors: UInt64) {
        self.path = path
        self.sectors = sectors
    }

    public var section: DeviceStateSection {
        var body: [UInt8] = []
        withUnsafeBytes(of: sectors.littleEndian) { body.append(contentsOf: $0) }
        withUnsafeBytes(of: UInt32(path.utf8.count).littleEndian) { body.append(contentsOf: $0) }
        body.append(contentsOf: [0, 0, 0, 0])
        body.append(contentsOf: path.utf8)
        return DeviceStateSection(kind: Self.kind, version: Self.version, instance: 0, body: body)
    }

    /// The disk section among `sections`, if there is one.
    public static func find(in sections: [DeviceStateSection]) throws(KVMError) -> KVMDiskSection? {
        guard let section = sections.first(where: { $0.kind == kind }) else { return nil }
        guard section.version == version else {
            throw KVMError(
                .invalidState, "the KVM guest's disk section has version \(section.version); this Ferry reads 1")
        }
        let body = section.body
        guard body.count >= 16 else {
            throw KVMError(.invalidState, "the KVM guest's disk section has \(body.count) bytes, fewer than 16")
        }
        let sectors = body.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        let length = Int(
            body.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: 8, as: UInt32.self)) })
        guard length > 0, length <= 4096, body.count == 16 + length, sectors > 0,
            let path = String(validating: body[16...], as: UTF8.self)
        else {
            throw KVMError(
                .invalidState, "the KVM guest's disk section is malformed (path of \(length) bytes in \(body.count))")
        }
        return KVMDiskSection(path: path, sectors: sectors)
    }
}
