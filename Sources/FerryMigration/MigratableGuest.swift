import FerryProtocol
import FerrySystem
import Logging

/// A running guest as the source agent sees it: its memory, how its writes are tracked, how it
/// pauses, what describes it (`GUEST_CONFIG`) and its state besides memory (`DEVICE_STATE`).
/// Called once per round or at the blackout, never per page.
///
/// A VMM adopts Ferry by implementing this for its guests on the source and
/// `IncomingGuestKind`/`IncomingGuest` on the destination; Ferry's own guests do so in
/// `FerryGuestMigration` (the built-in guest) and `FerryKVMMigration` (the KVM guest), and
/// `Examples/CounterGuest` is a complete third kind.
///
/// The source agent calls, in order: `guestKind`, `cpuStateFormat`, `vcpus`, `configuration` and
/// `memory` for the handshake; `makeDirtyTracker(_:)` once, then `pause()` and `resume()` once
/// to measure a pause; `throttlePercent` during the pre-copy rounds; `pause()` at the blackout
/// and `deviceState()` while paused; then either `stopForHandover()` (the destination resumed
/// the guest) or `resume()` (the migration failed before `COMMIT`: the guest goes on here).
public protocol MigratableGuest: AnyObject {
    /// `HELLO.guest_kind`: which `IncomingGuestKind` rebuilds the guest on the destination.
    var guestKind: UInt16 { get }
    /// `HELLO.cpu_state_format`: the version of the vCPU sections of `deviceState()`.
    var cpuStateFormat: UInt16 { get }
    /// `HELLO.vcpu_count` (1…64): the number of vCPU sections `deviceState()` returns.
    var vcpus: Int { get }
    /// The guest's memory, every region of it (the pages migrate in its numbering).
    var memory: GuestMemory { get }
    /// What travels in `GUEST_CONFIG` to describe the guest to its kind on the destination.
    var configuration: GuestDescription { get }

    /// A dirty tracker over `memory` (not started). Memory the guest writes through this
    /// process's mappings can use `memory.makeWriteTracker(choice)`.
    func makeDirtyTracker(_ choice: TrackerChoice) throws -> (tracker: any DirtyTracker, why: String)
    /// Parks every vCPU (no guest write until `resume()` or `stopForHandover()`); returns the
    /// nanoseconds it took. Called at the blackout, and once during setup to measure its cost.
    func pause() -> UInt64
    /// Lets the vCPUs run on after `pause()`: after the setup's measurement, and when the
    /// migration fails during the blackout (the guest stays the source's).
    func resume()
    /// How much auto-converge slows the vCPUs down, 0…99 percent; the engine sets it during
    /// pre-copy while the guest dirties memory faster than it can be sent, and back to 0 when
    /// the migration ends.
    var throttlePercent: Int { get set }
    /// The guest's state besides memory, taken while it is paused: one vCPU section per vCPU
    /// (kind `DeviceStateSection.vcpu`, version `cpuStateFormat`, vCPU 0 first), then any
    /// device sections of the guest kind's own.
    func deviceState() throws -> [DeviceStateSection]
    /// The device state as `deviceState()` would take it, without handing anything over (no
    /// disk flushed or released): taken once during setup, the vCPUs paused, so that the
    /// blackout's forecast knows its size and the time to read it. nil (the default): the kind
    /// cannot take it apart from the handover, and the forecast leaves it out.
    func deviceStateProbe() throws -> [DeviceStateSection]?
    /// Ends the guest's vCPUs for good (it runs on the destination now); returns each vCPU's steps.
    func stopForHandover() -> [UInt64]
    /// A count of the guest's work (steps: writes, instructions, …, as the kind defines them),
    /// all vCPUs together, readable at any time while it runs; it grows only while the vCPUs
    /// run. The report's progress rates come from it (`GuestProgressReport`). nil (the
    /// default): the guest keeps no such count.
    var progressSteps: UInt64? { get }
}

extension MigratableGuest {
    public var progressSteps: UInt64? { nil }
    public func deviceStateProbe() throws -> [DeviceStateSection]? { nil }
}

/// What describes a guest to its kind on the destination (`GUEST_CONFIG`'s `seed` and `workload`,
/// and the attachment that follows it): the engine carries them, the guest kind gives them meaning.
public struct GuestDescription: Sendable, Equatable {
    /// A number for the guest kind (Ferry's guests: the workload's seed).
    public var seed: UInt64
    /// Parameters as text (≤ 1024 UTF-8 bytes).
    public var parameters: String
    /// An opaque file of any length for the guest kind, or nil (Protocol.md 3.25). Source: the
    /// file to send (its length and hash as `GuestAttachment.measure` gives them); destination:
    /// the file it was received into, beside the image, its length and hash verified.
    public var attachment: GuestAttachment?

    public init(seed: UInt64 = 0, parameters: String = "", attachment: GuestAttachment? = nil) {
        self.seed = seed
        self.parameters = parameters
        self.attachment = attachment
    }
}

/// Guest kinds of `HELLO.guest_kind` (Protocol.md 3.1) that Ferry itself defines.
public enum GuestKind {
    /// Ferry's built-in guest (`FerryGuestMigration`), CPU state format 1.
    public static let builtin: UInt16 = 1
    /// Ferry's KVM guest (`FerryKVMMigration`), CPU state format 2.
    public static let kvm: UInt16 = 2
}

/// A kind of guest a destination can receive: checks an offered guest and makes the receiving
/// end of one. Registered with the destination (`DestinationOptions.guestKinds`).
public protocol IncomingGuestKind: Sendable {
    /// `HELLO.guest_kind` this kind receives.
    var guestKind: UInt16 { get }
    /// A name for messages ("built-in guest", "KVM guest").
    var name: String { get }
    /// Why this host cannot take such a guest (a vCPU format it does not read, a hypervisor that
    /// is not usable here), or nil. Answered before anything is reserved.
    func refusal(cpuStateFormat: UInt16, vcpus: Int) -> String?
    /// Reads the guest's description from `GUEST_CONFIG`, before its memory exists; throws
    /// (naming the problem) when it is not one this kind can run.
    func prepare(_ offer: IncomingGuestOffer, logger: Logger) throws -> any IncomingGuest
}

/// What the source said about a guest, for its kind on the destination.
public struct IncomingGuestOffer: Sendable {
    /// `HELLO.cpu_state_format`, already accepted by `IncomingGuestKind.refusal`.
    public var cpuStateFormat: UInt16
    /// `HELLO.vcpu_count`.
    public var vcpus: Int
    /// Bytes per page (this host's page size: a source with another is refused).
    public var pageSize: Int
    /// `GUEST_CONFIG`'s seed, parameters and attachment, as the source's `configuration` gave them.
    public var description: GuestDescription
    /// The guest's memory regions (guest-physical address, pages), in page-numbering order: the
    /// `GuestMemory` that `IncomingGuest.attach(memory:)` gets has these regions.
    public var layout: [MemoryRegionDescriptor]
    /// Called for each line the guest prints once it runs here (guests that have a console).
    public var consoleLine: (@Sendable (GuestConsoleLine) -> Void)?
}

/// A line a guest printed on its console.
public struct GuestConsoleLine: Sendable, Equatable {
    public var vcpu: Int
    public var text: String

    public init(vcpu: Int, text: String) {
        self.vcpu = vcpu
        self.text = text
    }
}

/// The receiving end of one guest on the destination, from `GUEST_CONFIG` until it stops here.
/// The engine calls, in order: `attach(memory:)` once the image exists (pages then arrive into
/// it), `load(_:)` when `DEVICE_STATE` arrives (before `VERIFIED`: a state this host refuses fails
/// the migration while the source still owns the guest), `start(hold:)` on `COMMIT`, then
/// `waitUntilDone(seconds:)` and `stop()`. `discard()` instead, at any point before `start`.
public protocol IncomingGuest: AnyObject {
    /// The image exists: `memory` has the regions of `IncomingGuestOffer.layout`, laid back to
    /// back in the destination's image file, and pages arrive into it from now on. Build the VM
    /// over it here (long before the blackout), but run nothing on it yet.
    func attach(memory: GuestMemory) throws
    /// The sections of `DEVICE_STATE`, vCPUs first (their number and version already checked
    /// against `HELLO`). Throws when one is malformed or one of a mandatory kind is unknown.
    func load(_ sections: [DeviceStateSection]) throws
    /// Runs the guest. `hold`: resume it but keep it exactly as handed over (no guest writes),
    /// for checks that compare images.
    func start(hold: Bool) throws
    /// Waits up to `seconds` while the guest runs; returns earlier if it finished by itself.
    func waitUntilDone(seconds: Double)
    /// Stops the guest; what it did here. The agent returns this guest in
    /// `DestinationResult.guest` afterwards.
    func stop() -> IncomingGuestOutcome
    /// The migration failed before `start`: release what `attach` built.
    func discard()
    /// As `MigratableGuest.progressSteps`, between `start(hold:)` and `stop()`; nil otherwise,
    /// or for a guest that keeps no count. Read while the guest may still wait on post-copy
    /// pages: it must not touch guest memory that may not have arrived.
    var progressSteps: UInt64? { get }
}

extension IncomingGuest {
    public var progressSteps: UInt64? { nil }
}

/// What a received guest did on the destination.
public struct IncomingGuestOutcome: Sendable {
    /// Steps (writes, instructions, …: the guest kind says) each vCPU had done in all, source included.
    public var vcpuSteps: [UInt64]
    /// Lines it printed here.
    public var console: [GuestConsoleLine]
    /// Why it failed after it resumed here, if it did.
    public var failure: String?

    public init(vcpuSteps: [UInt64], console: [GuestConsoleLine] = [], failure: String? = nil) {
        self.vcpuSteps = vcpuSteps
        self.console = console
        self.failure = failure
    }
}

/// The guest kinds a destination receives, by `HELLO.guest_kind`.
public struct GuestKindRegistry: Sendable {
    /// Each registered kind by its `guestKind`.
    public private(set) var kinds: [UInt16: any IncomingGuestKind] = [:]

    /// A registry of `kinds`; a later kind with the same `guestKind` replaces an earlier one.
    public init(_ kinds: [any IncomingGuestKind] = []) {
        for kind in kinds { register(kind) }
    }

    /// Adds `kind`, replacing any registered for the same `guestKind`.
    public mutating func register(_ kind: any IncomingGuestKind) {
        kinds[kind.guestKind] = kind
    }

    /// The kind registered for `guestKind`, if any.
    public subscript(_ guestKind: UInt16) -> (any IncomingGuestKind)? { kinds[guestKind] }

    /// "1 (built-in guest), 2 (KVM guest)", for refusals.
    public var summary: String {
        kinds.keys.sorted().map { "\($0) (\(kinds[$0]!.name))" }.joined(separator: ", ")
    }
}

/// An error of a guest kind that knows how the engine should classify it (for exit codes and
/// ABORT reasons). The engine wraps an adapter's error in a `MigrationError` with this code
/// (e.g. `.protocolViolation`: the peer sent a state this side cannot use, ABORT reason
/// `protocol`); an error that does not conform is classified `.system`, and a `MigrationError`
/// keeps its own code.
public protocol MigrationClassifiedError: Error {
    /// The `MigrationError.Code` this error is reported as.
    var migrationCode: MigrationError.Code { get }
}
