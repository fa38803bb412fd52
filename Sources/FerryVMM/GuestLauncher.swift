import FerryGuest
import FerryGuestMigration
import FerryHostModel
import FerryKVM
import FerryKVMMigration
import FerryMigration
import FerryProtocol
import FerrySystem
import Logging

/// Builds and starts a guest in this process: afresh from its specification (`boot`), or from a
/// suspend file (`restore`). Either way its memory is the image file `IMAGE`, mapped shared.
struct GuestLauncher {
    /// The built-in guest's workload when the specification gives none: it writes, so its
    /// progress (vCPU steps) moves.
    static let defaultBuiltinWorkload = "uniform:8MB/s"
    /// The KVM guest's default workload (`ferry send --guest kvm`'s syntax).
    static let defaultKVMWorkload = "kvm"

    let logger: Logger
    let console: ConsoleLog

    /// A fresh boot of `spec`, on `disk` if it has one.
    func boot(_ spec: GuestSpecification, imagePath: String, disk: GuestDisk?) throws(VMMError) -> RunningGuest {
        let mapping = try ImageMapping(path: imagePath, size: spec.memoryBytes, create: true)
        let description = GuestDescription(
            seed: spec.seed,
            parameters: spec.workload
                ?? (spec.kind == .kvm ? Self.defaultKVMWorkload : Self.defaultBuiltinWorkload))
        return try start(
            spec.kind, vcpus: spec.vcpus, description: description, mapping: mapping, states: nil, disk: disk)
    }

    func restore(_ record: SuspendRecord) throws(VMMError) -> RunningGuest {
        let mapping = try ImageMapping(path: record.image, size: record.specification.memoryBytes, create: false)
        let description = GuestDescription(seed: record.seed, parameters: record.parameters)
        return try start(
            record.specification.kind, vcpus: record.specification.vcpus, description: description, mapping: mapping,
            states: try record.sections, disk: nil)
    }

    /// Starts the guest's vCPUs over `mapping`, from `states` (DEVICE_STATE sections; a disk
    /// section among them continues its disk) or a fresh boot (on `disk`).
    private func start(
        _ kind: GuestSpecification.Kind, vcpus: Int, description: GuestDescription, mapping: ImageMapping,
        states: [DeviceStateSection]?, disk: GuestDisk?
    ) throws(VMMError) -> RunningGuest {
        do {
            switch kind {
            case .builtin: return try startBuiltin(vcpus, description, mapping, states, disk)
            case .kvm: return try startKVM(vcpus, description, mapping, states, disk)
            }
        } catch let error as VMMError {
            throw error
        } catch {
            throw VMMError(.guest, "cannot start the \(kind.rawValue) guest: \(error)", cause: error)
        }
    }

    private func startBuiltin(
        _ vcpus: Int, _ description: GuestDescription, _ mapping: ImageMapping, _ sections: [DeviceStateSection]?,
        _ disk: GuestDisk?
    ) throws -> RunningGuest {
        let setup = try GuestSetup.make(
            workload: description.parameters, vcpus: vcpus, seed: description.seed, pageSize: systemPageSize,
            pageCount: mapping.region.size / systemPageSize, attachTrace: false)
        let states = try sections.map { sections in
            try sections.filter { $0.kind == DeviceStateSection.vcpu }.map { section in
                VCPUState(
                    try section.body.withUnsafeBytes { bytes throws(ProtocolError) in try VCPURecord(bytes: bytes) })
            }
        }
        let guest = try Guest(
            memory: mapping.region.base, size: mapping.region.size, configuration: setup.configuration,
            initialStates: states, logger: logger)
        let writer =
            if let sections {
                try GuestDisk.continuingBuiltin(guest, sections, logger: logger)
            } else {
                try disk?.openForBuiltin(guest, seed: description.seed, console: console, logger: logger)
            }
        guest.start()
        writer?.start()
        return RunningGuest(
            BuiltinMigratableGuest(guest, setup: setup, memory: mapping.region.base, disk: writer), kind: .builtin,
            mapping: mapping)
    }

    private func startKVM(
        _ vcpus: Int, _ description: GuestDescription, _ mapping: ImageMapping, _ sections: [DeviceStateSection]?,
        _ disk: GuestDisk?
    ) throws -> RunningGuest {
        var parameters = try KVMGuestParameters(workload: description.parameters, seed: description.seed, vcpus: vcpus)
        if disk != nil { parameters = GuestDisk.kvmParameters(parameters, workload: description.parameters) }
        let states = try sections.map { try KVMVCPUState.states(from: $0) }
        let kvmDisk = try sections.map { try GuestDisk.continuingKVM($0) } ?? disk?.openForKVM()
        let console = self.console
        let guest = try KVMGuest(
            memory: mapping.region.base, size: mapping.region.size, parameters: parameters, initialStates: states,
            logger: logger
        ) { line in console.append(line.text, vcpu: line.vcpu) }
        if let kvmDisk { guest.attach(disk: kvmDisk) }
        guest.start()
        return RunningGuest(KVMMigratableGuest(guest), kind: .kvm, mapping: mapping)
    }
}
