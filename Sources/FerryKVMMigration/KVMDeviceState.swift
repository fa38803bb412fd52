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
    /// malformed, or a mandatory device section is present (the KVM guest has no devices).
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
            } else if !section.isOptional {
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
