import FerryKVM
import FerryMigration
import FerryProtocol
import FerrySystem
import Logging

/// The KVM guest on the source: a VM over the mapped image, tracked by KVM's dirty log; guest
/// kind 2, vCPU sections of format 2 (Protocol.md 3.8.2).
public final class KVMMigratableGuest: MigratableGuest {
    public let guest: KVMGuest
    public let memory: GuestMemory

    public init(_ guest: KVMGuest) {
        self.guest = guest
        memory = GuestMemory(base: guest.machine.memory, size: guest.machine.size, pageSize: KVMGuestLayout.pageSize)
    }

    public var guestKind: UInt16 { GuestKind.kvm }
    public var cpuStateFormat: UInt16 { KVMVCPUState.cpuStateFormat }
    public var vcpus: Int { guest.parameters.vcpus }
    public var configuration: GuestDescription {
        GuestDescription(seed: guest.parameters.seed, parameters: guest.parameters.workload)
    }
    /// The steps the vCPUs published in their status records (on the source all of memory is
    /// present; the destination's side keeps no count: reading it could wait on a post-copy page).
    public var progressSteps: UInt64? { guest.stepsPerVCPU.reduce(0, +) }

    /// Always KVM's dirty log: write protection of the mapping does not see a KVM guest's writes.
    public func makeDirtyTracker(_ choice: TrackerChoice) throws -> (tracker: any DirtyTracker, why: String) {
        guard choice == .auto else {
            throw MigrationError(
                .configuration,
                "--tracker \(choice.rawValue) cannot see a KVM guest's writes; a KVM guest is tracked by KVM's dirty log (use --tracker auto)",
                guest: .source)
        }
        return (guest.makeDirtyTracker(), "KVM guest: KVM's dirty log of its memory slot")
    }

    public func pause() -> UInt64 { guest.pause() }

    /// After a failed handover the disk is taken back first; when another writer holds it by
    /// now, the guest runs on without it (its journal stops) rather than write a disk it lost.
    public func resume() {
        if let disk = guest.disk, !disk.isLocked {
            do {
                try disk.reacquire()
            } catch {
                guest.detachDisk()
            }
        }
        guest.resume()
    }
    public var throttlePercent: Int {
        get { guest.throttlePercent }
        set { guest.throttlePercent = newValue }
    }
    /// The vCPU sections, and with a disk its section: the disk is flushed (`fdatasync`) and its
    /// lock given up here, so the destination can open it when it resumes.
    public func deviceState() throws -> [DeviceStateSection] {
        var sections = try guest.states().enumerated().map { index, state in state.section(vcpu: index) }
        if let disk = guest.disk {
            try disk.sync()
            disk.release()
            sections.append(KVMDiskSection(path: disk.path, sectors: disk.sectors).section)
        }
        return sections
    }
    /// The vCPU sections alone: the disk is neither flushed nor released.
    public func deviceStateProbe() throws -> [DeviceStateSection]? {
        try guest.states().enumerated().map { index, state in state.section(vcpu: index) }
    }
    /// Graceful shutdown where the guest runs (a failed migration): with a disk, the program
    /// writes its clean-shutdown record and flushes, the disk is synced and released. Returns
    /// each vCPU's steps.
    public func shutdown() throws -> [UInt64] {
        if let disk = guest.disk {
            try guest.shutdown(timeoutSeconds: 10)
            disk.release()
        }
        guest.stop()
        return guest.stepsPerVCPU
    }

    public func stopForHandover() -> [UInt64] {
        guest.stop()
        return guest.stepsPerVCPU
    }
}

/// Receives KVM guests (guest kind 2) where KVM is usable.
public struct KVMGuestKind: IncomingGuestKind {
    public init() {}

    public var guestKind: UInt16 { GuestKind.kvm }
    public var name: String { "KVM guest" }

    public func refusal(cpuStateFormat: UInt16, vcpus: Int) -> String? {
        if cpuStateFormat != KVMVCPUState.cpuStateFormat {
            return "its vCPU format is \(cpuStateFormat); the KVM guest's is \(KVMVCPUState.cpuStateFormat)"
        }
        if let why = KVMDevice.unavailableReason() { return "KVM is not usable on this destination: \(why)" }
        return nil
    }

    public func prepare(_ offer: IncomingGuestOffer, logger: Logger) throws -> any IncomingGuest {
        guard offer.layout.count == 1, offer.layout[0].guestPhysicalAddress == 0 else {
            throw KVMError(
                .invalidConfiguration,
                "the KVM guest has one memory region at guest-physical 0; the source sent \(offer.layout.count)")
        }
        let parameters = try KVMGuestParameters(
            workload: offer.description.parameters, seed: offer.description.seed, vcpus: offer.vcpus)
        var consoleLine: (@Sendable (KVMConsoleLine) -> Void)?
        if let forward = offer.consoleLine {
            consoleLine = { line in forward(GuestConsoleLine(vcpu: line.vcpu, text: line.text)) }
        }
        return KVMIncomingGuest(parameters: parameters, logger: logger, consoleLine: consoleLine)
    }
}

/// A KVM guest arriving: its VM is built over the image as soon as the image exists (long
/// before the blackout), its vCPU states are loaded when DEVICE_STATE arrives, and its vCPUs
/// start on COMMIT.
public final class KVMIncomingGuest: IncomingGuest {
    let parameters: KVMGuestParameters
    let logger: Logger
    let consoleLine: (@Sendable (KVMConsoleLine) -> Void)?
    public private(set) var guest: KVMGuest?
    /// The disk the guest came with (opened when it resumes here).
    public private(set) var diskSection: KVMDiskSection?

    init(parameters: KVMGuestParameters, logger: Logger, consoleLine: (@Sendable (KVMConsoleLine) -> Void)?) {
        self.parameters = parameters
        self.logger = logger
        self.consoleLine = consoleLine
    }

    public func attach(memory: GuestMemory) throws {
        guest = try KVMGuest(
            memory: memory.regions[0].base, size: memory.size, parameters: parameters, origin: .incoming,
            logger: logger, onConsoleLine: consoleLine)
    }

    public func load(_ sections: [DeviceStateSection]) throws {
        try guest?.restore(try KVMVCPUState.states(from: sections))
        diskSection = try KVMDiskSection.find(in: sections)
        // Before VERIFIED: a disk this host cannot open fails the migration while the source
        // still owns the guest, not after COMMIT.
        if let diskSection { try KVMDisk.checkOpenable(path: diskSection.path, sectors: diskSection.sectors) }
    }

    /// Held (`hold`): not started at all, since a KVM guest has no step limit to hold it with;
    /// the image stays what the source handed over. A disk is opened (and locked) only now: the
    /// source flushed and released it at the blackout.
    public func start(hold: Bool) throws {
        guard !hold, let guest else { return }
        if let diskSection {
            let disk = try KVMDisk(path: diskSection.path)
            guard disk.sectors == diskSection.sectors else {
                disk.release()
                throw KVMError(
                    .invalidConfiguration,
                    "disk \(diskSection.path) has \(disk.sectors) sectors here, \(diskSection.sectors) on the source: both ends must see the same disk"
                )
            }
            guest.attach(disk: disk)
        }
        guest.start()
    }

    /// A KVM guest with a step limit ends earlier when every vCPU halted.
    public func waitUntilDone(seconds: Double) {
        _ = try? guest?.waitUntilHalted(timeoutSeconds: seconds)
    }

    /// With a disk: a graceful shutdown (the clean-shutdown record, the disk synced and released).
    public func stop() -> IncomingGuestOutcome {
        guard let guest else { return IncomingGuestOutcome(vcpuSteps: []) }
        var failure = guest.failure
        if let disk = guest.disk {
            do {
                if try !guest.shutdown(timeoutSeconds: 10) {
                    failure = failure ?? "the guest did not halt within 10 s of the shutdown request"
                }
            } catch {
                failure = failure ?? "\(error)"
            }
            disk.release()
        }
        guest.stop()
        return IncomingGuestOutcome(
            vcpuSteps: guest.stepsPerVCPU,
            console: guest.consoleLines.map { GuestConsoleLine(vcpu: $0.vcpu, text: $0.text) },
            failure: failure)
    }

    public func discard() { guest?.stop() }
}
