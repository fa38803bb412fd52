import FerryGuest
import FerryGuestMigration
import FerryKVMMigration
import FerryMigration
import FerryProtocol
import FerrySystem
import Logging

/// Keeps a received guest running in this process after its migration: wraps each guest kind so
/// that the VMM gets the guest when the engine starts it (on `COMMIT`), and so that the engine's
/// "run the guest for a while, then stop it" (`IncomingGuest.waitUntilDone`) lasts until the VMM
/// releases it (the guest leaves by migration, shuts down, or is suspended). The destination
/// session keeps the image mapped for that long; nothing in the engine changes.
final class IncomingCapture: @unchecked Sendable {
    private let condition = MonotonicCondition()
    private var released = false
    private let onStart: @Sendable (RunningGuest) -> Void
    /// The guest was paused on its source: a built-in guest starts with its vCPUs parked, so it
    /// runs no step here before `onStart` pauses it (a KVM guest is paused by `onStart`).
    let startPaused: Bool

    init(startPaused: Bool = false, onStart: @escaping @Sendable (RunningGuest) -> Void) {
        self.startPaused = startPaused
        self.onStart = onStart
    }

    /// `registry`'s kinds, each wrapped.
    func wrap(_ registry: GuestKindRegistry) -> GuestKindRegistry {
        GuestKindRegistry(registry.kinds.values.map { CapturingKind(inner: $0, capture: self) })
    }

    /// Lets the destination session stop the guest and finish.
    func release() {
        condition.withLock {
            released = true
            condition.broadcast()
        }
    }

    func waitForRelease() {
        condition.withLock { while !released { condition.wait() } }
    }

    func started(_ guest: any IncomingGuest, memory: GuestMemory?) {
        if let builtin = guest as? BuiltinIncomingGuest, let running = builtin.running, let memory {
            onStart(
                RunningGuest(
                    BuiltinMigratableGuest(
                        running, setup: builtin.setup, memory: memory.regions[0].base, disk: builtin.disk),
                    kind: .builtin, mapping: nil))
        } else if let kvm = guest as? KVMIncomingGuest, let running = kvm.guest {
            onStart(RunningGuest(KVMMigratableGuest(running), kind: .kvm, mapping: nil))
        }
    }
}

private struct CapturingKind: IncomingGuestKind {
    let inner: any IncomingGuestKind
    let capture: IncomingCapture

    var guestKind: UInt16 { inner.guestKind }
    var name: String { inner.name }
    func refusal(cpuStateFormat: UInt16, vcpus: Int) -> String? {
        inner.refusal(cpuStateFormat: cpuStateFormat, vcpus: vcpus)
    }
    func prepare(_ offer: IncomingGuestOffer, logger: Logger) throws -> any IncomingGuest {
        CapturingGuest(inner: try inner.prepare(offer, logger: logger), capture: capture)
    }
}

private final class CapturingGuest: IncomingGuest {
    let inner: any IncomingGuest
    let capture: IncomingCapture
    var memory: GuestMemory?

    init(inner: any IncomingGuest, capture: IncomingCapture) {
        self.inner = inner
        self.capture = capture
    }

    func attach(memory: GuestMemory) throws {
        self.memory = memory
        try inner.attach(memory: memory)
    }
    func load(_ sections: [DeviceStateSection]) throws { try inner.load(sections) }
    func start(hold: Bool) throws {
        if capture.startPaused, let builtin = inner as? BuiltinIncomingGuest { builtin.startsPaused = true }
        try inner.start(hold: false)
        capture.started(inner, memory: memory)
    }
    func waitUntilDone(seconds: Double) { capture.waitForRelease() }
    func stop() -> IncomingGuestOutcome { inner.stop() }
    func discard() { inner.discard() }
}
