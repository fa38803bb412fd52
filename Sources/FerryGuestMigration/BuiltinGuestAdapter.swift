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
    /// The guest's disk, if it has one: paused with the vCPUs, flushed and released at the
    /// handover, its journal's cursor in a device section (`BuiltinDiskSection`).
    public let disk: DiskWriter?

    /// `guest` runs over `memory` (one region at guest-physical 0), with `disk` if it has one.
    public init(_ guest: Guest, setup: GuestSetup, memory: UnsafeMutableRawPointer, disk: DiskWriter? = nil) {
        self.guest = guest
        self.setup = setup
        self.disk = disk
        self.memory = GuestMemory(base: memory, size: guest.size, pageSize: setup.configuration.pageSize)
    }

    public var guestKind: UInt16 { GuestKind.builtin }
    public var cpuStateFormat: UInt16 { BuiltinGuestKind.vcpuFormat }
    public var vcpus: Int { setup.configuration.vcpus }
    public var configuration: GuestDescription { setup.description }

    public func makeDirtyTracker(_ choice: TrackerChoice) throws -> (tracker: any DirtyTracker, why: String) {
        try memory.makeWriteTracker(choice)
    }

    public func pause() -> UInt64 {
        let begin = MonotonicClock.now()
        disk?.pause()
        guest.pause()
        return MonotonicClock.now() &- begin
    }

    /// After a failed handover the disk is taken back before the vCPUs run on.
    public func resume() {
        disk?.resume()
        guest.resume()
    }
    public var throttlePercent: Int {
        get { guest.throttlePercent }
        set { guest.throttlePercent = newValue }
    }
    /// Pages written, all vCPUs together.
    public var progressSteps: UInt64? { guest.totalSteps }

    /// The vCPU sections, and with a disk its section: the disk is flushed (`fdatasync`) and its
    /// lock given up here, so the destination can open it when it resumes; this side writes no
    /// more unless the migration fails and `resume()` takes the disk back.
    public func deviceState() throws -> [DeviceStateSection] {
        var sections = vcpuSections()
        if let disk {
            let cursor = try disk.releaseForHandover()
            sections.append(BuiltinDiskSection(cursor: cursor, recordsPerSecond: disk.recordsPerSecond).section)
        }
        return sections
    }

    /// The vCPU sections alone: the disk is not touched (its section is a few dozen bytes).
    public func deviceStateProbe() throws -> [DeviceStateSection]? { vcpuSections() }

    private func vcpuSections() -> [DeviceStateSection] {
        guest.states().enumerated().map { index, state in
            var body: [UInt8] = []
            state.record.encode(into: &body)
            return DeviceStateSection(
                kind: DeviceStateSection.vcpu, version: BuiltinGuestKind.vcpuFormat,
                instance: UInt32(index), body: body)
        }
    }

    /// Graceful shutdown where the guest runs (a failed migration, the end of a run): the vCPUs
    /// stop, the disk finishes its record, writes the clean-shutdown record and is flushed.
    /// Returns each vCPU's steps.
    public func shutdown() throws -> [UInt64] {
        disk?.pause()
        let steps = guest.stop().map(\.step)
        try disk?.shutdown()
        return steps
    }

    public func stopForHandover() -> [UInt64] {
        disk?.stopForHandover()
        return guest.stop().map(\.step)
    }
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
    /// The disk's section, when the guest came with a disk.
    public private(set) var diskSection: BuiltinDiskSection?
    /// The disk's writer while the guest runs here.
    public private(set) var disk: DiskWriter?
    /// Where the disk's journal stood when the guest stopped here (after its clean-shutdown record).
    public private(set) var finalDiskCursor: DiskCursor?
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
            } else if section.kind == BuiltinDiskSection.kind {
                let disk = try BuiltinDiskSection(section)
                // Before VERIFIED: a disk this host cannot continue fails the migration while the
                // source still owns the guest, not after COMMIT.
                try DiskJournal.checkContinuable(disk.cursor)
                diskSection = disk
            } else if !section.isOptional {
                throw MigrationError(
                    .protocolViolation, "the built-in guest has no device of kind \(section.kind)", guest: .notHere)
            }
        }
        self.states = states
    }

    /// Whether `start(hold:)` starts the vCPUs paused (parked before their first step): a guest
    /// that was paused on its source arrives without running a step here.
    public var startsPaused = false

    public func start(hold: Bool) throws {
        guard let memory else { preconditionFailure("start before attach") }
        // Held: each vCPU's step limit is the step it arrived at, so it writes nothing.
        let guest = try Guest(
            memory: memory.regions[0].base, size: memory.size, configuration: setup.configuration,
            initialStates: states, stepLimits: hold ? states.map(\.step) : nil, logger: logger)
        if let diskSection {
            // The disk opens (and locks) only now: the source flushed and released it at the blackout.
            let journal = try DiskJournal.continuing(diskSection.cursor)
            let writer = try guest.diskWriter(
                journal: journal, recordsPerSecond: diskSection.recordsPerSecond, logger: logger)
            disk = writer
            if !hold { writer.start() }
        }
        self.guest = guest
        guest.start(paused: startsPaused)
    }

    public func waitUntilDone(seconds: Double) {
        MonotonicClock.sleep(seconds: seconds)
    }

    /// Pages written, all vCPUs together (the source's included), from the vCPUs' own counters.
    public var progressSteps: UInt64? { guest?.totalSteps }

    /// Stops the guest; a disk gets a graceful shutdown (the record in progress finished, the
    /// clean-shutdown record written, the disk flushed).
    public func stop() -> IncomingGuestOutcome {
        var failure: String?
        if let guest {
            if let disk {
                disk.pause()
                finalStates = guest.stop()
                do {
                    finalDiskCursor = try disk.shutdown()
                } catch {
                    failure = "the disk's clean shutdown failed: \(error)"
                }
                failure = failure ?? disk.failure
                self.disk = nil
            } else {
                finalStates = guest.stop()
            }
            self.guest = nil
        }
        return IncomingGuestOutcome(vcpuSteps: finalStates.map(\.step), failure: failure)
    }

    public func discard() {}
}

extension SourceAgent {
    /// The built-in guest over `memory`, the shared mapping of `imagePath` (`size` bytes).
    public convenience init(
        memory: UnsafeMutableRawPointer, size: Int, imagePath: String, guest: Guest, guestSetup: GuestSetup,
        disk: DiskWriter? = nil, options: SourceOptions, logger: Logger, progress: ProgressHandler? = nil
    ) {
        self.init(
            guest: BuiltinMigratableGuest(guest, setup: guestSetup, memory: memory, disk: disk), imagePath: imagePath,
            options: options, logger: logger, progress: progress)
    }
}
