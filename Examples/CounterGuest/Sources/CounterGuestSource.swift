import FerryMigration
import FerryProtocol
import FerrySystem

/// The counter guest on the source: what `SourceAgent` migrates.
///
/// The adapter owns the guest's two mappings and its `CounterMachine`, and answers the engine's
/// questions. The engine calls it once per pre-copy round or at the blackout, never per page:
/// pages it reads itself, through `memory`.
///
///     let guest = try CounterMigratableGuest(vcpus: 2, seed: 7)
///     guest.machine.start()
///     let report = try SourceAgent(guest: guest, options: options, logger: logger).migrate()
///     // Now the guest runs on the destination; `guest.machine` is stopped.
public final class CounterMigratableGuest: MigratableGuest {
    /// 16 MiB at guest-physical 0.
    public let ram: MappedRegion
    /// 1 MiB at guest-physical 4 GiB: a second mapping, nowhere near RAM in either address space.
    public let vram: MappedRegion
    public let machine: CounterMachine
    public let memory: GuestMemory
    public let seed: UInt64
    public let stepsPerSecond: Int

    public init(
        vcpus: Int, seed: UInt64, stepsPerSecond: Int = 20_000,
        ramSize: Int = 16 << 20, vramSize: Int = 1 << 20
    ) throws {
        ram = try MappedRegion.anonymous(size: ramSize)
        vram = try MappedRegion.anonymous(size: vramSize)
        // Fault both in now (the guest "boots" with RAM full of seeded data and video memory
        // blank), so that the first pre-copy round does not pay for page allocation.
        try ram.populate(writable: true)
        try vram.populate(writable: true)
        var fill = seed | 1
        for word in 0..<(ramSize / 8) {
            fill = fill &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            (ram.base + word * 8).storeBytes(of: fill, as: UInt64.self)
        }
        // The regions in the order their pages are numbered on the wire (RAM's first). The
        // engine checks they are whole pages and do not overlap in the guest's address space.
        memory = try GuestMemory(
            regions: [
                GuestMemoryRegion(guestPhysicalAddress: CounterGuestFormat.ramAddress, base: ram.base, size: ram.size),
                GuestMemoryRegion(
                    guestPhysicalAddress: CounterGuestFormat.vramAddress, base: vram.base, size: vram.size),
            ], pageSize: systemPageSize)
        machine = CounterMachine(
            ram: ram.base, ramSize: ram.size, vram: vram.base, vramSize: vram.size,
            stepsPerSecond: stepsPerSecond, state: .initial(vcpus: vcpus, seed: seed))
        self.seed = seed
        self.stepsPerSecond = stepsPerSecond
    }

    /// Sent in `HELLO`: the destination looks up the `IncomingGuestKind` registered for it.
    public var guestKind: UInt16 { CounterGuestFormat.guestKind }
    /// Sent in `HELLO`: the version of the vCPU sections `deviceState()` returns. A destination
    /// whose kind does not read it refuses the guest (`IncomingGuestKind.refusal`) before
    /// anything is sent.
    public var cpuStateFormat: UInt16 { CounterGuestFormat.vcpuFormat }
    public var vcpus: Int { machine.vcpuCount }

    /// Sent in `GUEST_CONFIG` with `memory.layout`: everything the destination needs to rebuild
    /// the guest besides its memory and its device state. Here: the seed and the step rate.
    public var configuration: GuestDescription {
        GuestDescription(seed: seed, parameters: CounterGuestFormat.parameters(stepsPerSecond: stepsPerSecond))
    }

    /// How the engine learns which pages the guest wrote since the last round. The vCPUs write
    /// through this process's mappings, so write protection of those mappings sees every write:
    /// `GuestMemory` builds one tracker per region and numbers their pages as the wire does.
    /// (A guest written by hardware or a hypervisor, like a KVM guest, brings its own tracker.)
    public func makeDirtyTracker(_ choice: TrackerChoice) throws -> (tracker: any DirtyTracker, why: String) {
        try memory.makeWriteTracker(choice)
    }

    /// The blackout starts: park every vCPU where it is (the last pages, the device state and
    /// the digest are taken while nothing writes). Returns the nanoseconds that took.
    public func pause() -> UInt64 { machine.pause() }

    /// The migration failed before `COMMIT`: the guest goes on here as if nothing happened.
    public func resume() { machine.resume() }

    /// Auto-converge: when the guest dirties memory faster than the network carries it, the
    /// engine slows the vCPUs down in steps (0…99 percent).
    public var throttlePercent: Int {
        get { machine.throttlePercent }
        set { machine.throttlePercent = newValue }
    }

    /// Taken during the blackout, the vCPUs paused: their registers (one section per vCPU,
    /// vCPU 0 first, version `cpuStateFormat`), then the counter device. The engine sends the
    /// sections in `DEVICE_STATE`; the destination's `IncomingGuest.load` gets them unchanged.
    public func deviceState() throws -> [DeviceStateSection] {
        CounterGuestFormat.sections(of: machine.snapshot)
    }

    /// `COMMIT` is written: the guest runs on the destination from now on. End the vCPUs for
    /// good and return each vCPU's steps (they go into the source's report).
    public func stopForHandover() -> [UInt64] {
        machine.stop().vcpus.map(\.counter)
    }

    deinit { machine.stop() }
}
