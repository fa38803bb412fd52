import FerryGuest
import FerryKVM
import FerryProtocol
import FerrySystem

/// A running guest as the source agent sees it: what HELLO and GUEST_CONFIG say about it, how
/// its writes are tracked, how it pauses, and how its vCPU state goes into `CPU_STATE`.
/// Called once per round or at the blackout, never per page.
///
/// Two kinds: Ferry's built-in guest (`BuiltinMigratableGuest`: guest kind 1, CPU state
/// format 1, tracked by write protection) and the KVM guest (`KVMMigratableGuest`: guest kind
/// 2, CPU state format 2, tracked by KVM's dirty log).
public protocol MigratableGuest: AnyObject {
    /// `HELLO.guest_kind`.
    var guestKind: UInt16 { get }
    /// `HELLO.cpu_state_format`.
    var cpuStateFormat: UInt16 { get }
    var vcpus: Int { get }
    /// `GUEST_CONFIG.seed`, `.workload` and `.trace`.
    var seed: UInt64 { get }
    var workloadText: String { get }
    var traceBytes: [UInt8] { get }

    /// A dirty tracker over the guest's memory (not started).
    func makeDirtyTracker(_ choice: TrackerChoice, memory: UnsafeMutableRawPointer, size: Int,
                          pageSize: Int) throws -> (tracker: any DirtyTracker, why: String)
    /// Parks every vCPU; returns the nanoseconds it took.
    func pause() -> UInt64
    func resume()
    /// 0…99 (auto-converge).
    var throttlePercent: Int { get set }
    /// Every vCPU's state as a `CPU_STATE` message; the guest is paused.
    func cpuState() throws -> CPUState
    /// Ends the guest's vCPUs for good (it runs on the destination now); returns each vCPU's steps.
    func stopForHandover() -> [UInt64]
}

/// Guest kinds of `HELLO.guest_kind` (Protocol.md 3.1).
public enum GuestKind {
    /// Ferry's built-in guest (`FerryGuest`), CPU state format 1.
    public static let builtin: UInt16 = 1
    /// Ferry's KVM guest (`FerryKVM`), CPU state format 2.
    public static let kvm: UInt16 = 2
}

/// The built-in guest: vCPU threads writing the mapped image, tracked by write protection.
public final class BuiltinMigratableGuest: MigratableGuest {
    public let guest: Guest
    public let setup: GuestSetup

    public init(_ guest: Guest, setup: GuestSetup) {
        self.guest = guest
        self.setup = setup
    }

    public var guestKind: UInt16 { GuestKind.builtin }
    public var cpuStateFormat: UInt16 { CPUState.builtinFormat }
    public var vcpus: Int { setup.configuration.vcpus }
    public var seed: UInt64 { setup.configuration.seed }
    public var workloadText: String { setup.workloadText }
    public var traceBytes: [UInt8] { setup.traceBytes }

    public func makeDirtyTracker(_ choice: TrackerChoice, memory: UnsafeMutableRawPointer, size: Int,
                                 pageSize: Int) throws -> (tracker: any DirtyTracker, why: String) {
        try DirtyTrackers.make(choice, base: memory, length: size, pageSize: pageSize)
    }

    public func pause() -> UInt64 { guest.pause() }
    public func resume() { guest.resume() }
    public var throttlePercent: Int {
        get { guest.throttlePercent }
        set { guest.throttlePercent = newValue }
    }
    public func cpuState() throws -> CPUState { CPUState(builtin: guest.states().map(\.record)) }
    public func stopForHandover() -> [UInt64] { guest.stop().map(\.step) }
}

/// The KVM guest: a VM over the mapped image, tracked by KVM's dirty log.
public final class KVMMigratableGuest: MigratableGuest {
    public let guest: KVMGuest

    public init(_ guest: KVMGuest) {
        self.guest = guest
    }

    public var guestKind: UInt16 { GuestKind.kvm }
    public var cpuStateFormat: UInt16 { KVMVCPUState.cpuStateFormat }
    public var vcpus: Int { guest.parameters.vcpus }
    public var seed: UInt64 { guest.parameters.seed }
    public var workloadText: String { guest.parameters.workload }
    public var traceBytes: [UInt8] { [] }

    /// Always KVM's dirty log: write protection of the mapping does not see a KVM guest's writes.
    public func makeDirtyTracker(_ choice: TrackerChoice, memory: UnsafeMutableRawPointer, size: Int,
                                 pageSize: Int) throws -> (tracker: any DirtyTracker, why: String) {
        guard choice == .auto else {
            throw MigrationError(.configuration, "--tracker \(choice.rawValue) cannot see a KVM guest's writes; a KVM guest is tracked by KVM's dirty log (use --tracker auto)", guest: .source)
        }
        guard memory == guest.machine.memory, size == guest.machine.size, pageSize == KVMGuestLayout.pageSize else {
            throw MigrationError(.configuration, "the memory to migrate (\(size) bytes) is not the KVM guest's memory (\(guest.machine.size) bytes)", guest: .source)
        }
        return (guest.makeDirtyTracker(), "KVM guest: KVM's dirty log of its memory slot")
    }

    public func pause() -> UInt64 { guest.pause() }
    public func resume() { guest.resume() }
    public var throttlePercent: Int {
        get { guest.throttlePercent }
        set { guest.throttlePercent = newValue }
    }
    public func cpuState() throws -> CPUState { CPUState(kvm: try guest.states()) }
    public func stopForHandover() -> [UInt64] {
        guest.stop()
        return guest.stepsPerVCPU
    }
}
