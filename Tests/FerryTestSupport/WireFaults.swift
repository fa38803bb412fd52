import Foundation

/// Where a migration is, as a man in the middle sees it on the control connection. Each phase is
/// reached at one frame, the trigger, and a fault planned for the phase is applied to that frame.
public enum WirePhase: String, CaseIterable, Sendable {
    /// `GUEST_CONFIG` (S→D): the handshake's last frame.
    case handshake = "handshake"
    /// The round-0 `PAGE_BATCH` (S→D) at which 40% of the image's bytes have gone by.
    case roundZero = "round 0"
    /// The first `PAGE_BATCH` of round 1 (S→D); the tests force pre-copy rounds 0…2.
    case laterRound = "later round"
    /// `DEVICE_STATE` (S→D): the vCPUs are paused.
    case blackout = "blackout"
    /// `VERIFIED` (D→S): the destination holds a verified image, COMMIT not yet written.
    case verified = "handoff: VERIFIED"
    /// `COMMIT` (S→D): the source has written it, the destination has not read it.
    case commit = "handoff: COMMIT"
    /// `RESUMED` (D→S): the guest runs on the destination.
    case afterCommit = "after commit"
    /// `POSTCOPY_BEGIN` (S→D): the switch to post-copy; the vCPUs are paused, the device state
    /// went before it, the destination's `VERIFIED` of the state is still to come.
    case postcopySwitch = "post-copy: switch"
    /// `COMMIT` (S→D) of a post-copy switch: from here on the source never resumes its copy.
    case postcopyCommit = "post-copy: COMMIT"
    /// The first `PAGE_REQUEST` (D→S): a vCPU on the destination waits for a page only the
    /// source has.
    case pageRequest = "post-copy: first request"
    /// The first `PAGE_BATCH` (S→D) after post-copy's `RESUMED`: the push of the stale pages.
    case push = "post-copy: push"
    /// `COMPLETE` (S→D) after the push: every stale page was sent.
    case postcopyComplete = "post-copy: COMPLETE"

    /// The phases of a pre-copy migration, in the order they come.
    public static let precopy: [WirePhase] = [
        .handshake, .roundZero, .laterRound, .blackout, .verified, .commit, .afterCommit,
    ]
    /// The phases that only a migration that switches to post-copy (Protocol.md section 11) reaches.
    public static let postcopy: [WirePhase] = [
        .postcopySwitch, .postcopyCommit, .pageRequest, .push, .postcopyComplete,
    ]

    /// Whether the phase is reached only in post-copy.
    public var isPostcopy: Bool { Self.postcopy.contains(self) }

    /// Whether the guest runs on the destination from this phase on with pages only the
    /// source has (after post-copy's `RESUMED`).
    public var afterPostcopyResume: Bool { [.pageRequest, .push, .postcopyComplete].contains(self) }
}

/// What is done to the trigger frame.
public enum WireFault: Sendable {
    /// Closes both sides (FIN to source and destination); the frame is not forwarded.
    case cut
    /// Calls the closure (e.g. the test kills an agent), then forwards the frame as usual.
    case hook(@Sendable () -> Void)
    /// Cuts the connection at the frame (as `.cut`), then calls the closure (e.g. a stranger
    /// acts while the source has lost its connection).
    case cutThen(@Sendable () -> Void)
    /// Flips bit 0 of the frame's last payload byte (of its last header byte if it has no payload).
    case flipPayloadBit
    /// Flips bit 0 of payload byte `offset`.
    case flipPayloadByte(Int)
    /// Flips bit 1 of the header's `length` field: the receiver reads a frame 2 bytes off.
    case flipHeaderBit
    /// The connection goes silent both ways, as in a network partition: nothing is forwarded or
    /// closed (no FIN, no RST) until the relay stops.
    case blackhole
    /// Forwards the header and half the payload (half the header if there is none), then closes both sides.
    case truncate
    /// Forwards the frame twice.
    case duplicate
    /// Holds the frame and forwards it after the next frame in the same direction.
    case reorder
    /// Forwards the frame one byte every `milliseconds` (a wedged peer that answers at a
    /// trickle), then relays the frames after it as usual.
    case drip(milliseconds: Int)

    /// The relay's verdict for the trigger frame (a hook runs here, before it is forwarded).
    func apply() -> Relay.Verdict {
        switch self {
        case .cut: return .cut
        case .hook(let body):
            body()
            return .forward
        case .cutThen(let body): return .cutThen(body)
        case .flipPayloadBit: return .corrupt(.lastByte)
        case .flipPayloadByte(let offset): return .corrupt(.payloadByte(offset))
        case .flipHeaderBit: return .corrupt(.headerLength)
        case .blackhole: return .wedge
        case .truncate: return .truncate
        case .duplicate: return .duplicate
        case .reorder: return .holdUntilNext
        case .drip(let milliseconds): return .drip(milliseconds: milliseconds)
        }
    }
}

/// Frame types of Protocol.md section 3 that the tests' relays need, as numbers (read with
/// `FrameParser`, independent of FerryProtocol).
public enum WireType {
    public static let hello: UInt16 = 1, accept: UInt16 = 2, guestConfig: UInt16 = 4, pageBatch: UInt16 = 5,
        deviceState: UInt16 = 8
    public static let complete: UInt16 = 9, verified: UInt16 = 10, commit: UInt16 = 11, resumed: UInt16 = 12
    /// Post-copy (Protocol.md section 11).
    public static let postcopyBegin: UInt16 = 37, pageRequest: UInt16 = 38
    /// The disk move (Protocol.md section 10).
    public static let diskHello: UInt16 = 25, diskAccept: UInt16 = 26, diskBlock: UInt16 = 27, diskEnd: UInt16 = 28
}

extension WireFault {
    /// The relay's verdict for a frame this fault is applied to (for relays a test builds itself).
    public var verdict: Relay.Verdict { apply() }
}

/// A `Relay` in front of a destination agent that follows the migration's phase on the control
/// connection (the one that opens with `HELLO`) and injects one fault at the chosen phase. Page
/// streams and other connections are relayed untouched.
///
/// `@unchecked Sendable`: the mutable state is guarded by `lock`.
public final class PhaseFaultRelay: @unchecked Sendable {
    public let phase: WirePhase
    public let fault: WireFault
    private var relay: Relay!
    private let lock = NSLock()
    private var reached: [WirePhase] = []
    private var didInject = false
    private var imageBytes = 0
    private var acceptedSession: UInt64?
    private var roundZeroBytes = 0
    /// Post-copy on the control connection: `POSTCOPY_BEGIN` seen, then its `RESUMED`.
    private var postcopyBegun = false
    private var postcopyResumed = false

    public init(upstreamPort: UInt16, phase: WirePhase, fault: WireFault) throws {
        self.phase = phase
        self.fault = fault
        var options = Relay.Options()
        if case .blackhole = fault {
            // A partition drops packets: what the source wrote and nobody acknowledged waits in
            // its own send buffer (≤ tcp_wmem's 4 MiB); see `Relay.Options.sourceReceiveBuffer`.
            options.sourceReceiveBuffer = 256 << 10
        }
        // The relay's threads keep this alive (as they keep the relay) until `stop()`.
        relay = try Relay(to: upstreamPort, options: options) { frame in self.verdict(&frame) }
    }

    public var port: UInt16 { relay.port }
    /// The phases the control connection went through, in order.
    public var phasesReached: [WirePhase] { lock.withLock { reached } }
    /// Whether the fault was applied.
    public var injected: Bool { lock.withLock { didInject } }
    /// `ACCEPT.session_id` of the migration, as an observer of the control connection reads it
    /// (a stranger who learned it somewhere: a log, a report, a shoulder).
    public var sessionID: UInt64? { lock.withLock { acceptedSession } }

    /// Closes the listener and every relayed connection and waits for the relay threads.
    public func stop() { relay.stop() }

    private func verdict(_ frame: inout Relay.Frame) -> Relay.Verdict {
        let type = frame.type
        if frame.index == 0 && frame.direction == .toDestination && type == WireType.hello,
            let pageSize = frame.payload(UInt32.self, at: 12), let pageCount = frame.payload(UInt64.self, at: 16)
        {
            lock.withLock { imageBytes = Int(pageSize) * Int(pageCount) }
        }
        if frame.index == 0 && frame.direction == .toSource && type == WireType.accept,
            let id = frame.payload(UInt64.self, at: 24)
        {
            lock.withLock { acceptedSession = id }
        }
        guard frame.connection.opening == WireType.hello, let reachedNow = phase(of: frame) else { return .forward }
        let inject = lock.withLock { () -> Bool in
            reached.append(reachedNow)
            guard reachedNow == phase, !didInject else { return false }
            didInject = true
            return true
        }
        return inject ? fault.apply() : .forward
    }

    /// The phase this frame opens, if it is a trigger frame (each phase counts once).
    private func phase(of frame: Relay.Frame) -> WirePhase? {
        let (begun, resumed) = lock.withLock { (postcopyBegun, postcopyResumed) }
        let candidate: WirePhase?
        switch (frame.direction, frame.type) {
        case (.toDestination, WireType.guestConfig): candidate = .handshake
        case (.toDestination, WireType.pageBatch) where resumed: candidate = .push
        case (.toDestination, WireType.pageBatch) where frame.payloadCount >= 4:
            if frame.payload(UInt32.self, at: 0) == 0 {
                candidate = lock.withLock { () -> WirePhase? in
                    roundZeroBytes += frame.bytes.count
                    return imageBytes > 0 && roundZeroBytes * 10 >= imageBytes * 4 ? .roundZero : nil
                }
            } else {
                candidate = .laterRound
            }
        case (.toDestination, WireType.deviceState): candidate = .blackout
        case (.toDestination, WireType.postcopyBegin):
            lock.withLock { postcopyBegun = true }
            candidate = .postcopySwitch
        case (.toDestination, WireType.commit): candidate = begun ? .postcopyCommit : .commit
        case (.toDestination, WireType.complete) where resumed: candidate = .postcopyComplete
        case (.toSource, WireType.verified): candidate = begun ? nil : .verified
        case (.toSource, WireType.resumed) where begun:
            lock.withLock { postcopyResumed = true }
            candidate = nil
        case (.toSource, WireType.resumed): candidate = .afterCommit
        case (.toSource, WireType.pageRequest): candidate = .pageRequest
        default: candidate = nil
        }
        guard let candidate else { return nil }
        return lock.withLock { reached.contains(candidate) ? nil : candidate }
    }
}
