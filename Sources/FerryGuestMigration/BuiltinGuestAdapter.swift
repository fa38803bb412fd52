import FerryGuest
import FerryMigration
import FerryProtocol
import FerrySystem
import Logging

/// The built-in guest on the source: vCPU threads writing the mapped image, tracked by write
/// protection; guest kind 1, vCPU sections of format 1 (Protocol.md 3.8.1).
public final class BuiltinMigratableGuest: MigratableGuest {
    public let guest: Guest
    public let setup: GuestSetup
    public let memory: GuestMemory

    /// `guest` runs over `memory` (one region at guest-physical 0).
    public init(_ guest: Guest, setup: GuestSetup, memory: UnsafeMutableRawPointer) {
        self.guest = guest
        self.setup = setup
        self.memory = GuestMemory(base: memory, size: guest.size, pageSize: setup.configuration.pageSize)
    }

    public var guestKind: UInt16 { GuestKind.builtin }
    public var cpuStateFormat: UInt16 { BuiltinGuestKind.vcpuFormat }
    public var vcpus: Int { setup.configuration.vcpus }
    public var configuration: GuestDescription { setup.description }

    public func makeDirtyTracker(_ choice: TrackerChoice) throws -> (tracker: any DirtyTracker, why: String) {
        try memory.makeWriteTracker(choice)
    }

    public func pause() -> UInt64 { guest.pause() }
    public func resume() { guest.resume() }
    public var throttlePercent: Int {
        get { guest.throttlePercent }
        set { guest.throttlePercent = newValue }
    }

    public func deviceState() throws -> [DeviceStateSection] {
        guest.states().enumerated().map { index, state in
            var body: [UInt8] = []
            state.record.encode(into: &body)
            return DeviceStateSection(
                kind: DeviceStateSection.vcpu, version: BuiltinGuestKind.vcpuFormat,
                instance: UInt32(index), body: body)
        }
    }

    public func stopForHandover() -> [UInt64] { guest.stop().map(\.step) }
}

/// Receives built-in guests (guest kind 1).
public struct BuiltinGuestKind: IncomingGuestKind {
    /// The format of the built-in guest's vCPU sections.
    public static let vcpuFormat: UInt16 = 1

    public init() {}

    public var guestKind: UInt16 { GuestKind.builtin }
    public var name: String { "built-in guest" }

    public func refusal(cpuStateFormat: UInt16, vcpus: Int) -> String? {
        cpuStateFormat == Self.vcpuFormat
            ? nil : "its vCPU format is \(cpuStateFormat); the built-in guest's is \(Self.vcpuFormat)"
    }

    public func prepare(_ offer: IncomingGuestOffer, logger: Logger) throws -> any IncomingGuest {
        let pageCount = offer.layout.reduce(0) { $0 + Int($1.pageCount) }
        let setup = try GuestSetup.make(
            from: offer.description, vcpus: offer.vcpus, pageSize: offer.pageSize, pageCount: pageCount)
        return BuiltinIncomingGuest(setup: setup, logger: logger)
    }
}

/// A built-in guest arriving: its setup from GUEST_CONFIG, its registers from DEVICE_STATE, and
/// on COMMIT its vCPU threads over the received image.
public final class BuiltinIncomingGuest: IncomingGuest {
    public let setup: GuestSetup
    let logger: Logger
    private var memory: GuestMemory?
    private var states: [VCPUState] = []
    private var guest: Guest?
    /// The registers each vCPU ended with here (after `stop()`).
    public private(set) var finalStates: [VCPUState] = []
    /// The guest running here, between `start(hold:)` and `stop()`: a VMM that keeps the guest
    /// after the migration (`ferry vmm --incoming`) controls it through this.
    public var running: Guest? { guest }

    init(setup: GuestSetup, logger: Logger) {
        self.setup = setup
        self.logger = logger
    }

    public func attach(memory: GuestMemory) throws {
        guard memory.regions.count == 1 else {
            throw MigrationError(
                .protocolViolation, "the built-in guest has one memory region, not \(memory.regions.count)",
                guest: .notHere)
        }
        self.memory = memory
    }

    public func load(_ sections: [DeviceStateSection]) throws {
        var states: [VCPUState] = []
        for section in sections {
            if section.kind == DeviceStateSection.vcpu {
                let record = try section.body.withUnsafeBytes { bytes throws(ProtocolError) in
                    try VCPURecord(bytes: bytes)
                }
                states.append(VCPUState(record))
            } else if !section.isOptional {
                throw MigrationError(
                    .protocolViolation, "the built-in guest has no device of kind \(section.kind)", guest: .notHere)
            }
        }
        self.states = states
    }

    public func start(hold: Bool) throws {
        guard let memory else { preconditionFailure("start before attach") }
        // Held: each vCPU's step limit is the step it arrived at, so it writes nothing.
        let guest = try Guest(
            memory: memory.regions[0].base, size: memory.size, configuration: setup.configuration,
            initialStates: states, stepLimits: hold ? states.map(\.step) : nil, logger: logger)
        self.guest = guest
        guest.start()
    }

    public func waitUntilDone(seconds: Double) {
        MonotonicClock.sleep(seconds: seconds)
    }

    public func stop() -> IncomingGuestOutcome {
        if let guest {
            finalStates = guest.stop()
            self.guest = nil
        }
        return IncomingGuestOutcome(vcpuSteps: finalStates.map(\.step))
    }

    public func discard() {}
}

extension SourceAgent {
    /// The built-in guest over `memory`, the shared mapping of `imagePath` (`size` bytes).
    public convenience init(
        memory: UnsafeMutableRawPointer, size: Int, imagePath: String, guest: Guest, guestSetup: GuestSetup,
        options: SourceOptions, logger: Logger, progress: ProgressHandler? = nil
    ) {
        self.init(
            guest: BuiltinMigratableGuest(guest, setup: guestSetup, memory: memory), imagePath: imagePath,
            options: options, logger: logger, progress: progress)
    }
}
