import Foundation
import Glibc

/// Where a migration is, as a man in the middle sees it on the control connection. Each phase is
/// reached at one frame, the trigger, and a fault planned for the phase is applied to that frame.
enum WirePhase: String, CaseIterable, Sendable {
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
}

/// What the proxy does to the trigger frame.
enum WireFault: Sendable {
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
    /// closed (no FIN, no RST) until the proxy stops.
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
}

/// Frame types of Protocol.md section 3 that the proxy needs, parsed by hand (a second reader of
/// the header format, independent of FerryProtocol).
enum WireType {
    static let hello: UInt16 = 1, accept: UInt16 = 2, guestConfig: UInt16 = 4, pageBatch: UInt16 = 5, deviceState: UInt16 = 8
    static let verified: UInt16 = 10, commit: UInt16 = 11, resumed: UInt16 = 12
}

/// A TCP proxy in front of a destination agent that understands the 16-byte frame headers in
/// both directions, follows the migration's phase on the control connection (the one that opens
/// with `HELLO`) and injects one fault at the chosen phase. Page streams and other connections
/// are relayed untouched.
///
/// `@unchecked Sendable`: the mutable state is guarded by `lock`; each relay thread owns its
/// direction's buffers.
final class FaultProxy: @unchecked Sendable {
    let port: UInt16
    let phase: WirePhase
    let fault: WireFault
    private let upstreamPort: UInt16
    private let listenFD: Int32
    private let lock = NSLock()
    private var reached: [WirePhase] = []
    private var didInject = false
    private var imageBytes = 0
    private var acceptedSession: UInt64?
    private var roundZeroBytes = 0
    private var sockets: [Int32] = []
    private var stopping = false
    private var threads = 0
    private let idle = NSCondition()

    init(upstreamPort: UInt16, phase: WirePhase, fault: WireFault) throws {
        self.upstreamPort = upstreamPort
        self.phase = phase
        self.fault = fault
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ProxyError(description: "socket: errno \(errno)") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        if case .blackhole = fault {
            // A partition drops packets: what the source wrote and nobody acknowledged waits in its
            // own send buffer (≤ tcp_wmem's 4 MiB). A proxy that stops reading still acknowledges
            // into its receive buffer, which autotuning grows up to tcp_rmem's maximum (32 MiB on
            // this machine): more than is left of round 0, and whether the source ever stalls in
            // a write would depend on timing. A small fixed buffer (inherited by accepted
            // sockets) keeps the partition one that the source's writes run into.
            var bytes: Int32 = 256 << 10
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, socklen_t(MemoryLayout<Int32>.size))
        }
        var address = FaultProxy.loopback(port: 0)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 16) == 0 else { close(fd); throw ProxyError(description: "bind/listen: errno \(errno)") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        port = UInt16(bigEndian: address.sin_port)
        listenFD = fd
        spawn { [self] in acceptLoop() }
    }

    struct ProxyError: Error, CustomStringConvertible { var description: String }

    /// The phases the control connection went through, in order.
    var phasesReached: [WirePhase] { lock.withLock { reached } }
    /// Whether the fault was applied.
    var injected: Bool { lock.withLock { didInject } }
    /// `ACCEPT.session_id` of the migration, as an observer of the control connection reads it
    /// (a stranger who learned it somewhere: a log, a report, a shoulder).
    var sessionID: UInt64? { lock.withLock { acceptedSession } }

    /// Closes the listener and every relayed connection and waits for the relay threads.
    func stop() {
        lock.withLock { stopping = true }
        shutdown(listenFD, Int32(SHUT_RDWR))
        lock.withLock { for fd in sockets { shutdown(fd, Int32(SHUT_RDWR)) } }
        idle.lock()
        while threads > 0 { idle.wait() }
        idle.unlock()
        close(listenFD)
        lock.withLock { for fd in sockets { close(fd) }; sockets = [] }
    }

    private static func loopback(port: UInt16) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        return address
    }

    private func spawn(_ body: @escaping @Sendable () -> Void) {
        idle.lock(); threads += 1; idle.unlock()
        let thread = Thread { [self] in
            body()
            idle.lock(); threads -= 1; idle.broadcast(); idle.unlock()
        }
        thread.start()
    }

    private func acceptLoop() {
        while true {
            let client = accept(listenFD, nil, nil)
            if client < 0 {
                if errno == EINTR { continue }
                return
            }
            let server = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            var address = FaultProxy.loopback(port: upstreamPort)
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(server, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            if connected != 0 { close(client); close(server); continue }
            lock.withLock { sockets += [client, server] }
            let pair = Pair(source: client, destination: server)
            spawn { [self] in relay(pair, towardsDestination: true) }
            spawn { [self] in relay(pair, towardsDestination: false) }
        }
    }

    /// One relayed connection: which of its sides is the control connection is learnt from the
    /// source's first frame.
    final class Pair: @unchecked Sendable {  // `isControl` is written once, before the other direction can read a frame that depends on it
        let source: Int32
        let destination: Int32
        var isControl = false
        /// Set by a blackhole: nothing more is forwarded and nothing closed until `stop()`.
        var silent: Bool { lock.withLock { silenced } }
        func silence() { lock.withLock { silenced = true } }
        private var silenced = false
        private let lock = NSLock()
        private var open = 2
        init(source: Int32, destination: Int32) { self.source = source; self.destination = destination }

        /// Ends both sides at once (FIN both ways, and RST for whatever either peer sends later:
        /// the sockets are closed as soon as both relay threads have left).
        func cut() {
            shutdown(source, Int32(SHUT_RDWR))
            shutdown(destination, Int32(SHUT_RDWR))
        }

        /// Called by each relay thread as it ends; the last one closes the sockets.
        func relayEnded(_ proxy: FaultProxy) {
            if silent { return }  // `stop()` closes the sockets
            cut()
            let last = lock.withLock { open -= 1; return open == 0 }
            guard last else { return }
            proxy.forget([source, destination])
            close(source)
            close(destination)
        }
    }

    private func forget(_ fds: [Int32]) {
        lock.withLock { sockets.removeAll { fds.contains($0) } }
    }

    private func relay(_ pair: Pair, towardsDestination: Bool) {
        let from = towardsDestination ? pair.source : pair.destination
        let to = towardsDestination ? pair.destination : pair.source
        var held: [UInt8]?
        var first = true
        defer { pair.relayEnded(self) }
        while true {
            guard var frame = readFrame(from) else { return }
            let type = UInt16(frame[0]) | UInt16(frame[1]) << 8
            if first && towardsDestination && type == WireType.hello {
                pair.isControl = true
                if frame.count >= 16 + 24 {
                    let pageSize = frame[16 + 12 ..< 16 + 16].reversed().reduce(0) { $0 << 8 | Int($1) }
                    let pageCount = frame[16 + 16 ..< 16 + 24].reversed().reduce(0) { $0 << 8 | Int($1) }
                    lock.withLock { imageBytes = pageSize * pageCount }
                }
            }
            if first && !towardsDestination && type == WireType.accept && frame.count >= 16 + 32 {
                let id = frame[16 + 24 ..< 16 + 32].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                lock.withLock { acceptedSession = id }
            }
            first = false
            if pair.silent {
                // Read no more (the sender's window fills, as behind a partition) and close nothing.
                while !lock.withLock({ stopping }) { usleep(10_000) }
                return
            }
            if let earlier = held {
                // A swap: the frame after the held one goes first.
                guard send(to, frame), send(to, earlier) else { return }
                held = nil
                continue
            }
            guard pair.isControl, let reachedNow = phase(of: frame, towardsDestination: towardsDestination) else {
                guard send(to, frame) else { return }
                continue
            }
            let inject = lock.withLock { () -> Bool in
                reached.append(reachedNow)
                guard reachedNow == phase, !didInject else { return false }
                didInject = true
                return true
            }
            guard inject else {
                guard send(to, frame) else { return }
                continue
            }
            switch fault {
            case .cut:
                return
            case .hook(let body):
                body()
                guard send(to, frame) else { return }
            case .cutThen(let body):
                pair.cut()
                body()
                return
            case .flipPayloadBit:
                frame[frame.count - 1] ^= 0x01
                guard send(to, frame) else { return }
            case .flipPayloadByte(let offset):
                frame[16 + offset] ^= 0x01
                guard send(to, frame) else { return }
            case .blackhole:
                pair.silence()
                while !lock.withLock({ stopping }) { usleep(10_000) }
                return
            case .flipHeaderBit:
                frame[4] ^= 0x02
                guard send(to, frame) else { return }
            case .truncate:
                let keep = frame.count > 16 ? 16 + (frame.count - 16) / 2 : 8
                _ = send(to, Array(frame[..<keep]))
                return
            case .duplicate:
                guard send(to, frame), send(to, frame) else { return }
            case .reorder:
                held = frame
            case .drip(let milliseconds):
                for byte in frame {
                    guard send(to, [byte]) else { return }
                    if lock.withLock({ stopping }) { return }
                    usleep(useconds_t(milliseconds * 1000))
                }
            }
        }
    }

    /// The phase this frame opens, if it is a trigger frame (each phase counts once).
    private func phase(of frame: [UInt8], towardsDestination: Bool) -> WirePhase? {
        let type = UInt16(frame[0]) | UInt16(frame[1]) << 8
        let candidate: WirePhase?
        switch (towardsDestination, type) {
        case (true, WireType.guestConfig): candidate = .handshake
        case (true, WireType.pageBatch) where frame.count >= 20:
            let round = frame[16 ..< 20].reversed().reduce(0) { $0 << 8 | Int($1) }
            if round == 0 {
                candidate = lock.withLock { () -> WirePhase? in
                    roundZeroBytes += frame.count
                    return imageBytes > 0 && roundZeroBytes * 10 >= imageBytes * 4 ? .roundZero : nil
                }
            } else {
                candidate = .laterRound
            }
        case (true, WireType.deviceState): candidate = .blackout
        case (true, WireType.commit): candidate = .commit
        case (false, WireType.verified): candidate = .verified
        case (false, WireType.resumed): candidate = .afterCommit
        default: candidate = nil
        }
        guard let candidate else { return nil }
        return lock.withLock { reached.contains(candidate) ? nil : candidate }
    }

    /// One whole frame (header and payload), or nil at EOF or error.
    private func readFrame(_ fd: Int32) -> [UInt8]? {
        var header = [UInt8](repeating: 0, count: 16)
        guard readExactly(fd, &header, from: 0) else { return nil }
        let length = header[4 ..< 8].reversed().reduce(0) { $0 << 8 | Int($1) }
        guard length <= 17 << 20 else { return nil }
        var frame = header + [UInt8](repeating: 0, count: length)
        guard readExactly(fd, &frame, from: 16) else { return nil }
        return frame
    }

    private func readExactly(_ fd: Int32, _ buffer: inout [UInt8], from start: Int) -> Bool {
        var done = start
        while done < buffer.count {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + done, $0.count - done, 0) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return false }
            done += n
        }
        return true
    }

    private func send(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + done, $0.count - done, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return false }
            done += n
        }
        return true
    }
}
