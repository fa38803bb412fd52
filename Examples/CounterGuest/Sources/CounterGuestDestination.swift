import FerryMigration
import FerryProtocol
import FerrySystem
import Logging

/// Receives counter guests: register it with the destination,
///
///     DestinationOptions(listen: ..., imagePath: ..., guestKinds: GuestKindRegistry([CounterGuestKind()]))
///
/// and a source's `HELLO` with guest kind 0x100 is answered by this type.
public struct CounterGuestKind: IncomingGuestKind {
    public init() {}

    public var guestKind: UInt16 { CounterGuestFormat.guestKind }
    public var name: String { "counter guest" }

    /// Asked when `HELLO` arrives, before the destination reserves anything: can this host run
    /// such a guest at all? A non-nil answer refuses the source (reason `unsupported`) with this
    /// text, and its guest keeps running there.
    public func refusal(cpuStateFormat: UInt16, vcpus: Int) -> String? {
        cpuStateFormat == CounterGuestFormat.vcpuFormat
            ? nil
            : "its vCPU format is \(cpuStateFormat); this destination reads counter guests of format \(CounterGuestFormat.vcpuFormat)"
    }

    /// Asked when `GUEST_CONFIG` arrives, before the image exists: read the guest's description
    /// and memory layout, and return the receiving end of this one guest. Throwing fails the
    /// migration (the error's `MigrationClassifiedError` code picks the `ABORT` reason).
    public func prepare(_ offer: IncomingGuestOffer, logger: Logger) throws -> any IncomingGuest {
        let layout = offer.layout
        guard layout.count == 2, layout[0].guestPhysicalAddress == CounterGuestFormat.ramAddress,
            layout[1].guestPhysicalAddress == CounterGuestFormat.vramAddress
        else {
            throw CounterGuestError(
                "a counter guest has RAM at guest-physical 0 and video memory at \(CounterGuestFormat.vramAddress); the source sent \(layout.map(\.guestPhysicalAddress))"
            )
        }
        let rate = try CounterGuestFormat.stepsPerSecond(from: offer.description.parameters)
        return CounterIncomingGuest(stepsPerSecond: rate, vcpus: offer.vcpus, logger: logger)
    }
}

/// A counter guest arriving. The engine calls, in this order: `attach(memory:)` (the image
/// exists; pages arrive into it from now on), `load(_:)` (`DEVICE_STATE`, during the blackout),
/// `start(hold:)` (`COMMIT`: the guest is ours), `waitUntilDone(seconds:)` and `stop()`. If the
/// migration fails before `start`, `discard()` instead.
public final class CounterIncomingGuest: IncomingGuest {
    let stepsPerSecond: Int
    let vcpus: Int
    let logger: Logger
    private var memory: GuestMemory?
    /// The state `DEVICE_STATE` carried: what the source's guest stopped with.
    public private(set) var loaded: CounterMachineState?
    /// The guest, once started here.
    public private(set) var machine: CounterMachine?
    /// The state it stopped with here (after `stop()`).
    public private(set) var final: CounterMachineState?

    init(stepsPerSecond: Int, vcpus: Int, logger: Logger) {
        self.stepsPerSecond = stepsPerSecond
        self.vcpus = vcpus
        self.logger = logger
    }

    /// The destination's copy of the guest's memory: the regions of `GUEST_CONFIG`, in its order,
    /// backed by the destination's image file (the engine lays them back to back in it). Pages
    /// are written into it while the source runs; nothing may run on it yet. A VMM would map it
    /// into its new VM here, long before the blackout.
    public func attach(memory: GuestMemory) throws {
        guard memory.regions.count == 2 else {
            throw CounterGuestError("a counter guest has 2 memory regions, not \(memory.regions.count)")
        }
        self.memory = memory
    }

    /// The source's `deviceState()`, section for section. Decode and check everything now: a
    /// throw here fails the migration before `VERIFIED`, while the source still owns the guest.
    public func load(_ sections: [DeviceStateSection]) throws {
        let state = try CounterGuestFormat.state(from: sections)
        guard state.vcpus.count == vcpus else {
            throw CounterGuestError("DEVICE_STATE has \(state.vcpus.count) vCPUs; HELLO said \(vcpus)")
        }
        loaded = state
    }

    /// `COMMIT` arrived: the guest is this host's now. Build it over the received memory with the
    /// loaded registers and run it. `hold` (the destination's `runFor` is 0): resume it but let
    /// it write nothing, so that the image stays exactly what the source handed over; here the
    /// vCPU threads simply do not start.
    public func start(hold: Bool) throws {
        guard let memory, let loaded else { preconditionFailure("start before attach and load") }
        let ram = memory.regions[0]
        let vram = memory.regions[1]
        let machine = CounterMachine(
            ram: ram.base, ramSize: ram.size, vram: vram.base, vramSize: vram.size,
            stepsPerSecond: stepsPerSecond, state: loaded)
        self.machine = machine
        if !hold { machine.start() }
        logger.info(
            "counter guest resumed", metadata: ["counter.ticks": "\(loaded.device.ticks)", "counter.held": "\(hold)"])
    }

    /// The destination lets the guest run `runFor` seconds; a guest that can finish by itself
    /// returns early. This one runs forever.
    public func waitUntilDone(seconds: Double) {
        MonotonicClock.sleep(seconds: seconds)
    }

    /// The destination agent is done with the guest (it returns from `run()` next): stop it.
    /// A VMM that keeps its guest running would hand it over to its own loop instead.
    public func stop() -> IncomingGuestOutcome {
        let state = machine?.stop() ?? loaded
        final = state
        machine = nil
        return IncomingGuestOutcome(vcpuSteps: state?.vcpus.map(\.counter) ?? [])
    }

    /// The migration failed before `start`: nothing runs yet, and the image is the engine's to
    /// remove. A VMM would tear down the VM it built in `attach`.
    public func discard() {
        loaded = nil
        memory = nil
    }
}
