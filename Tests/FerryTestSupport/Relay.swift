import Foundation
import Glibc

/// The one TCP relay of the tests, between a source and a destination agent: it accepts
/// connections on a loopback port, connects each to the destination's port and forwards bytes
/// both ways, on real sockets and threads.
///
/// Two modes:
/// - **bytes** (no `onFrame`): chunks are forwarded as they arrive;
/// - **frames** (`onFrame` given): each direction is read frame by frame with `FrameParser`, a
///   second reader of the 16-byte header (Protocol.md section 3) written independently of
///   FerryProtocol, so that a test can check the production decoder against it. `onFrame` sees
///   (and may change) each frame before it is forwarded and gives its `Verdict`.
///
/// In both modes `cut(afterBytes:going:)` cuts every open connection once that many more bytes
/// have gone one way, counted over all connections (the cut falls inside a frame).
///
/// How a connection ends: by default, when either side ends (EOF, error, cut) both sockets are
/// shut down at once, and whatever either peer sends later gets a reset. With `halfClose` a
/// sender's FIN is passed on as a FIN (the other direction goes on), and a receiver that is gone
/// lets the other direction first deliver what it still carries (an ABORT sent just before a
/// close) before both sides close, as over TCP.
///
/// `@unchecked Sendable`: the mutable state is guarded by `lock`; each relay thread owns its
/// direction's buffers.
public final class Relay: @unchecked Sendable {
    public enum Direction: String, Sendable, CustomStringConvertible {
        case toDestination, toSource
        public var description: String { rawValue }
    }

    /// What happens to connections that arrive after a cut.
    public enum AfterCut: Sendable {
        /// They are relayed as usual: a source that reconnects gets through.
        case relayAgain
        /// They are accepted and closed at once: the destination stays unreachable.
        case refuse
        /// The relay stops listening: connecting is refused.
        case stopListening
    }

    public struct Options: Sendable {
        /// Pass a sender's FIN on instead of closing both sides (see the type's description).
        public var halfClose = false
        public var afterCut = AfterCut.relayAgain
        /// `SO_RCVBUF` of the relay's sockets towards the source (set on the listener, inherited by
        /// accepted sockets). A wedged relay still acknowledges into its receive buffer, which
        /// autotuning grows up to tcp_rmem's maximum (32 MiB here); a small fixed buffer keeps a
        /// partition one that the source's writes run into.
        public var sourceReceiveBuffer: Int?
        public init(halfClose: Bool = false, afterCut: AfterCut = .relayAgain, sourceReceiveBuffer: Int? = nil) {
            self.halfClose = halfClose
            self.afterCut = afterCut
            self.sourceReceiveBuffer = sourceReceiveBuffer
        }
    }

    /// How a frame is damaged by `Verdict.corrupt`.
    public enum Corruption: Sendable {
        /// Flips bit 0 of the frame's last byte (its last payload byte, or its last header byte
        /// if it has no payload).
        case lastByte
        /// Flips bit 0 of payload byte `offset`.
        case payloadByte(Int)
        /// Flips bit 1 of the header's `length` field: the receiver reads a frame 2 bytes off.
        case headerLength
    }

    /// What the relay does with a frame (frames mode).
    /// Equal when their descriptions are (a `cutThen`'s closure is not compared).
    public enum Verdict: Sendable, Equatable, CustomStringConvertible {
        case forward
        /// Not forwarded; the connection goes on.
        case drop
        /// Forwarded damaged.
        case corrupt(Corruption)
        /// Not forwarded; both sides of this connection are closed at once (FIN both ways, a
        /// reset for what either peer sends later), as a network failure at this frame would.
        case cut
        /// `cut`, then runs the closure (e.g. a stranger acts while the source has lost its
        /// connection).
        case cutThen(@Sendable () -> Void)
        /// Forwarded after `milliseconds`.
        case delay(milliseconds: Int)
        /// Forwarded one byte every `milliseconds` (a wedged peer that answers at a trickle).
        case drip(milliseconds: Int)
        /// Held, and the connection goes silent both ways, as behind a partition or with a stopped
        /// process: nothing more is read or forwarded and nothing closed (no FIN, no RST) until
        /// the relay stops.
        case wedge
        /// `wedge` for every connection open now (later ones are relayed as usual).
        case wedgeAll
        /// The header and half the payload (half the header if there is none) are forwarded,
        /// then both sides closed.
        case truncate
        /// Forwarded twice.
        case duplicate
        /// Held and forwarded after the next frame in the same direction (which is forwarded
        /// without a verdict).
        case holdUntilNext

        public static func == (a: Verdict, b: Verdict) -> Bool { a.description == b.description }

        public var description: String {
            switch self {
            case .forward: "forward"
            case .drop: "drop"
            case .corrupt(let how): "corrupt(\(how))"
            case .cut: "cut"
            case .cutThen: "cutThen"
            case .delay(let ms): "delay(\(ms) ms)"
            case .drip(let ms): "drip(\(ms) ms)"
            case .wedge: "wedge"
            case .wedgeAll: "wedgeAll"
            case .truncate: "truncate"
            case .duplicate: "duplicate"
            case .holdUntilNext: "holdUntilNext"
            }
        }
    }

    /// One relayed connection (a source's socket and the one to the destination).
    public final class Connection: @unchecked Sendable {  // `opening` and `wedged` are guarded by the relay's lock
        /// Numbered from 0 in the order accepted.
        public let id: Int
        let source: Int32
        let destination: Int32
        fileprivate var openingType: UInt16?
        fileprivate var isWedged = false
        fileprivate var ended = 0
        fileprivate let relay: Relay
        fileprivate init(id: Int, source: Int32, destination: Int32, relay: Relay) {
            self.id = id
            self.source = source
            self.destination = destination
            self.relay = relay
        }
        /// The type of the connection's first frame towards the destination (`HELLO` for a
        /// control connection, `JOIN` for a page stream), once it was read.
        public var opening: UInt16? { relay.lock.withLock { openingType } }
        fileprivate func shutdownBoth() {
            shutdown(source, Int32(SHUT_RDWR))
            shutdown(destination, Int32(SHUT_RDWR))
        }
    }

    /// A frame as `FrameParser` read it, on its way in `direction`.
    public struct Frame: @unchecked Sendable {
        public let connection: Connection
        public let direction: Direction
        /// The frame's number in its direction on its connection, from 0.
        public let index: Int
        /// Header and payload, as they will be forwarded.
        public var bytes: [UInt8]

        public var type: UInt16 { FrameParser.type(of: bytes) }
        /// The payload length the header states.
        public var length: Int { FrameParser.length(of: bytes) }
        public var payloadCount: Int { bytes.count - FrameParser.headerSize }
        /// A little-endian integer of the payload at `offset` (nil past its end).
        public func payload<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T? {
            FrameParser.integer(T.self, in: bytes, at: FrameParser.headerSize + offset)
        }
        /// The payload, to read or change in place.
        public mutating func withPayload<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
            try bytes.withUnsafeMutableBytes {
                try body(UnsafeMutableRawBufferPointer(rebasing: $0[FrameParser.headerSize...]))
            }
        }
    }

    public let port: UInt16
    private let targetPort: UInt16
    private let options: Options
    private let onFrame: (@Sendable (inout Frame) -> Verdict)?
    private let listenFD: Int32
    fileprivate let lock = NSLock()
    private let parked = NSCondition()
    private var connections: [Connection] = []
    private var nextID = 0
    private var stopping = false
    private var listening = true
    private var refusing = false
    private var afterCutPolicy: AfterCut
    private var threads = 0
    private let idle = NSCondition()
    /// Bytes forwarded per direction, over all connections, and the counts at which to cut.
    private var forwarded: [Direction: Int] = [.toDestination: 0, .toSource: 0]
    private var cutPoints: [Direction: [Int]] = [:]
    private var cutLog: [String] = []
    private var eventLog: [String] = []

    /// Starts relaying from a new loopback port (`port`) to `127.0.0.1:targetPort`. Without
    /// `onFrame` bytes are forwarded as they come; with it, frame by frame.
    public init(
        to targetPort: UInt16, options: Options = Options(),
        onFrame: (@Sendable (inout Frame) -> Verdict)? = nil
    ) throws {
        self.targetPort = targetPort
        self.options = options
        self.onFrame = onFrame
        afterCutPolicy = options.afterCut
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw RelayError("socket: errno \(errno)") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        if var bytes = options.sourceReceiveBuffer.map(Int32.init) {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, socklen_t(MemoryLayout<Int32>.size))
        }
        var address = Self.loopback(port: 0)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0, listen(fd, 64) == 0 else {
            Glibc.close(fd)
            throw RelayError("bind/listen: errno \(errno)")
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        listenFD = fd
        port = UInt16(bigEndian: address.sin_port)
        spawn("relay-accept") { [self] in acceptLoop() }
    }

    /// A convenience for `init(to:options:onFrame:)` with an `Int` port.
    public convenience init(
        destinationPort: Int, options: Options = Options(),
        onFrame: (@Sendable (inout Frame) -> Verdict)? = nil
    ) throws {
        try self.init(to: UInt16(destinationPort), options: options, onFrame: onFrame)
    }

    // MARK: Control

    /// What happens to connections after the next cut (the policy can change while relaying).
    public var afterCut: AfterCut {
        get { lock.withLock { afterCutPolicy } }
        set { lock.withLock { afterCutPolicy = newValue } }
    }

    /// Cuts every open connection once `bytes` more bytes have gone `direction`, over all connections.
    public func cut(afterBytes bytes: Int, going direction: Direction = .toDestination) {
        cut(afterBytes: [bytes], going: direction)
    }

    /// Cuts every open connection at each of these counts of bytes (from now) going `direction`.
    public func cut(afterBytes counts: [Int], going direction: Direction = .toDestination) {
        lock.withLock {
            let now = forwarded[direction] ?? 0
            cutPoints[direction] = counts.map { now + $0 }.sorted()
        }
    }

    /// Cuts every open connection now (counted in `cuts`).
    public func cutAll(_ why: String = "cut all") {
        let open = lock.withLock { () -> [Connection] in
            cutLog.append(why)
            noteCut()
            return connections
        }
        for connection in open { connection.shutdownBoth() }
    }

    /// The cuts so far: "DIRECTION TYPE" for a frame's `.cut`, "DIRECTION after N bytes" for a
    /// byte count's.
    public var cuts: [String] { lock.withLock { cutLog } }
    public var cutCount: Int { cuts.count }
    /// Every verdict other than `.forward`, as "connection N DIRECTION TYPE VERDICT".
    public var events: [String] { lock.withLock { eventLog } }

    /// Stops listening, closes every relayed connection (the wedged ones included) and waits for
    /// the relay threads.
    public func stop() {
        let open = lock.withLock { () -> [Connection] in
            stopping = true
            return connections
        }
        shutdown(listenFD, Int32(SHUT_RDWR))
        for connection in open { connection.shutdownBoth() }
        parked.lock()
        parked.broadcast()
        parked.unlock()
        idle.lock()
        while threads > 0 { idle.wait() }
        idle.unlock()
        Glibc.close(listenFD)
        let left = lock.withLock { () -> [Connection] in
            defer { connections = [] }
            return connections
        }
        for connection in left {
            Glibc.close(connection.source)
            Glibc.close(connection.destination)
        }
    }

    // MARK: Relaying

    private static func loopback(port: UInt16) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        return address
    }

    private var isStopping: Bool { lock.withLock { stopping } }

    private func spawn(_ name: String, _ body: @escaping @Sendable () -> Void) {
        idle.lock()
        threads += 1
        idle.unlock()
        let thread = Thread { [self] in
            body()
            idle.lock()
            threads -= 1
            idle.broadcast()
            idle.unlock()
        }
        thread.name = name
        thread.start()
    }

    /// Called with `lock` held after a cut: applies the after-cut policy.
    private func noteCut() {
        switch afterCutPolicy {
        case .relayAgain: break
        case .refuse: refusing = true
        case .stopListening:
            if listening {
                listening = false
                shutdown(listenFD, Int32(SHUT_RDWR))
            }
        }
    }

    private func acceptLoop() {
        while true {
            let client = accept(listenFD, nil, nil)
            if client < 0 {
                if errno == EINTR { continue }
                return
            }
            let (done, refuse) = lock.withLock { (stopping, refusing) }
            if done || refuse {
                Glibc.close(client)
                if done { return }
                continue
            }
            let server = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            var address = Self.loopback(port: targetPort)
            let connected =
                server < 0
                ? -1
                : withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        connect(server, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                    }
                }
            if connected != 0 {
                Glibc.close(client)
                if server >= 0 { Glibc.close(server) }
                continue
            }
            var one: Int32 = 1
            setsockopt(client, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(server, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            // Registered together with the check, so that `stop()` shuts down every connection
            // it does not refuse.
            let registered = lock.withLock { () -> Connection? in
                guard !stopping else { return nil }
                let made = Connection(id: nextID, source: client, destination: server, relay: self)
                nextID += 1
                connections.append(made)
                return made
            }
            guard let connection = registered else {
                Glibc.close(client)
                Glibc.close(server)
                return
            }
            for direction in [Direction.toDestination, .toSource] {
                spawn("relay-\(direction)") { [self] in
                    let end = onFrame == nil ? pumpBytes(connection, direction) : pumpFrames(connection, direction)
                    ended(connection, direction, end)
                }
            }
        }
    }

    private enum End { case senderClosed, receiverGone, cut, wedged }

    private func endpoints(_ connection: Connection, _ direction: Direction) -> (from: Int32, to: Int32) {
        direction == .toDestination
            ? (connection.source, connection.destination) : (connection.destination, connection.source)
    }

    /// Sends `bytes` on, counting them against the byte cuts of `direction`. False when the
    /// receiver is gone or a byte cut fell inside them (the prefix before it was sent).
    private func forward(_ bytes: UnsafeRawBufferPointer, _ connection: Connection, _ direction: Direction) -> Bool {
        var count = bytes.count
        let cutAfter = lock.withLock { () -> Bool in
            let before = forwarded[direction] ?? 0
            if let limit = cutPoints[direction]?.first, before + count >= limit {
                count = limit - before
                cutPoints[direction]?.removeFirst()
                forwarded[direction] = limit
                return true
            }
            forwarded[direction] = before + count
            return false
        }
        let sent = Self.send(endpoints(connection, direction).to, UnsafeRawBufferPointer(rebasing: bytes[0..<count]))
        if cutAfter {
            cutAll("\(direction) after \(forwarded(direction)) bytes")
            return false
        }
        return sent
    }

    private func forwarded(_ direction: Direction) -> Int { lock.withLock { forwarded[direction] ?? 0 } }

    private func forward(_ bytes: [UInt8], _ connection: Connection, _ direction: Direction) -> Bool {
        bytes.withUnsafeBytes { forward($0, connection, direction) }
    }

    private func pumpBytes(_ connection: Connection, _ direction: Direction) -> End {
        let from = endpoints(connection, direction).from
        let size = 64 << 10
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let n = recv(from, buffer.baseAddress, size, 0)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return .senderClosed }
            guard forward(UnsafeRawBufferPointer(rebasing: buffer[0..<n]), connection, direction) else {
                return .receiverGone
            }
        }
    }

    private func pumpFrames(_ connection: Connection, _ direction: Direction) -> End {
        let (from, _) = endpoints(connection, direction)
        var held: [UInt8]?
        var index = 0
        while true {
            guard let bytes = FrameParser.read(from) else { return .senderClosed }
            let wedged = lock.withLock { () -> Bool in
                if direction == .toDestination && connection.openingType == nil {
                    connection.openingType = FrameParser.type(of: bytes)
                }
                return connection.isWedged
            }
            if wedged { return .wedged }
            if let earlier = held {
                // A swap: the frame after the held one goes first.
                guard forward(bytes, connection, direction), forward(earlier, connection, direction) else {
                    return .receiverGone
                }
                held = nil
                index += 1
                continue
            }
            var frame = Frame(connection: connection, direction: direction, index: index, bytes: bytes)
            index += 1
            let verdict = onFrame?(&frame) ?? .forward
            if case .forward = verdict {
            } else {
                lock.withLock { eventLog.append("connection \(connection.id) \(direction) \(frame.type) \(verdict)") }
            }
            switch verdict {
            case .forward:
                guard forward(frame.bytes, connection, direction) else { return .receiverGone }
            case .drop:
                continue
            case .corrupt(let how):
                switch how {
                case .lastByte: frame.bytes[frame.bytes.count - 1] ^= 0x01
                case .payloadByte(let offset): frame.bytes[FrameParser.headerSize + offset] ^= 0x01
                case .headerLength: frame.bytes[4] ^= 0x02
                }
                guard forward(frame.bytes, connection, direction) else { return .receiverGone }
            case .cut, .cutThen:
                lock.withLock {
                    cutLog.append("\(direction) \(frame.type)")
                    noteCut()
                }
                connection.shutdownBoth()
                if case .cutThen(let then) = verdict { then() }
                return .cut
            case .delay(let milliseconds):
                if !pause(milliseconds: milliseconds) { return .cut }
                guard forward(frame.bytes, connection, direction) else { return .receiverGone }
            case .drip(let milliseconds):
                for byte in frame.bytes {
                    guard forward([byte], connection, direction) else { return .receiverGone }
                    if !pause(milliseconds: milliseconds) { return .cut }
                }
            case .wedge, .wedgeAll:
                lock.withLock {
                    connection.isWedged = true
                    if case .wedgeAll = verdict { for other in connections { other.isWedged = true } }
                }
                return .wedged
            case .truncate:
                let keep =
                    frame.bytes.count > FrameParser.headerSize
                    ? FrameParser.headerSize + (frame.bytes.count - FrameParser.headerSize) / 2
                    : FrameParser.headerSize / 2
                _ = forward(Array(frame.bytes[..<keep]), connection, direction)
                return .cut
            case .duplicate:
                guard forward(frame.bytes, connection, direction), forward(frame.bytes, connection, direction) else {
                    return .receiverGone
                }
            case .holdUntilNext:
                held = frame.bytes
            }
        }
    }

    /// Sleeps, waking early when the relay stops (then false).
    private func pause(milliseconds: Int) -> Bool {
        let deadline = Date().addingTimeInterval(Double(milliseconds) / 1000)
        parked.lock()
        defer { parked.unlock() }
        while !isStopping {
            if !parked.wait(until: deadline) { return !isStopping }
        }
        return false
    }

    /// How a direction's end is passed on.
    private func ended(_ connection: Connection, _ direction: Direction, _ end: End) {
        let wedged = lock.withLock { connection.isWedged }
        if end == .wedged || wedged {
            // Read no more (the sender's window fills, as behind a partition) and close nothing
            // until `stop()`, which closes the sockets.
            parked.lock()
            while !isStopping { parked.wait() }
            parked.unlock()
            return
        }
        if options.halfClose {
            switch end {
            case .cut, .wedged:
                connection.shutdownBoth()
            case .senderClosed:
                shutdown(endpoints(connection, direction).to, Int32(SHUT_WR))
                // The other direction goes on; the second to end closes both.
                let first = lock.withLock { () -> Bool in
                    connection.ended += 1
                    return connection.ended == 1
                }
                if first { return }
                connection.shutdownBoth()
                closeIfLast(connection, counted: true)
                return
            case .receiverGone:
                // The other direction first delivers what it still carries, then both close.
                let deadline = Date().addingTimeInterval(2)
                while lock.withLock({ connection.ended }) < 1 && Date() < deadline && !isStopping { usleep(5_000) }
                connection.shutdownBoth()
            }
        } else {
            connection.shutdownBoth()
        }
        closeIfLast(connection, counted: false)
    }

    /// Counts a direction's end (unless `counted` already); the last one out closes the sockets.
    private func closeIfLast(_ connection: Connection, counted: Bool) {
        let last = lock.withLock { () -> Bool in
            if !counted { connection.ended += 1 }
            guard connection.ended >= 2, let at = connections.firstIndex(where: { $0 === connection }) else {
                return false
            }
            connections.remove(at: at)
            return true
        }
        if last {
            Glibc.close(connection.source)
            Glibc.close(connection.destination)
        }
    }

    private static func send(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
        var done = 0
        while done < bytes.count {
            let n = Glibc.send(fd, bytes.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL))
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return false }
            done += n
        }
        return true
    }
}

public struct RelayError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A second reader of the frame header of Protocol.md section 3, written by hand and independent
/// of FerryProtocol's decoder: the oracle the tests check the production decoder against.
///
/// Header, little-endian: `type` u16, `flags` u16, `length` u32 (payload bytes), `sequence` u64.
public enum FrameParser {
    public static let headerSize = 16
    /// Larger payloads end the relay (a garbled length would otherwise wait for megabytes).
    public static let maxPayload = 17 << 20

    public static func type(of frame: [UInt8]) -> UInt16 { UInt16(frame[0]) | UInt16(frame[1]) << 8 }
    public static func length(of frame: [UInt8]) -> Int { integer(UInt32.self, in: frame, at: 4).map(Int.init) ?? 0 }

    /// A little-endian integer at `offset` of `bytes` (nil past their end).
    public static func integer<T: FixedWidthInteger>(_: T.Type, in bytes: [UInt8], at offset: Int) -> T? {
        let size = MemoryLayout<T>.size
        guard offset >= 0, offset + size <= bytes.count else { return nil }
        return bytes[offset..<offset + size].reversed().reduce(T(0)) { $0 << 8 | T($1) }
    }

    /// One whole frame (header and payload) from `fd`, or nil at EOF, on an error or a length
    /// over `maxPayload`.
    public static func read(_ fd: Int32) -> [UInt8]? {
        var header = [UInt8](repeating: 0, count: headerSize)
        guard readExactly(fd, &header, from: 0) else { return nil }
        let length = Self.length(of: header)
        guard length <= maxPayload else { return nil }
        var frame = header + [UInt8](repeating: 0, count: length)
        guard readExactly(fd, &frame, from: headerSize) else { return nil }
        return frame
    }

    private static func readExactly(_ fd: Int32, _ buffer: inout [UInt8], from start: Int) -> Bool {
        var done = start
        while done < buffer.count {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + done, $0.count - done, 0) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return false }
            done += n
        }
        return true
    }
}

extension Relay {
    /// A frame verdict that cuts the first frame of `type` going `direction` and forwards all else.
    public static func cutFirst(_ type: UInt16, going direction: Direction) -> @Sendable (inout Frame) -> Verdict {
        let done = Box<Bool>()
        let lock = NSLock()
        return { frame in
            guard frame.direction == direction, frame.type == type else { return .forward }
            return lock.withLock {
                if done.value == true { return .forward }
                done.value = true
                return .cut
            }
        }
    }
}

extension Relay.Options {
    /// Passes a sender's FIN on as a FIN.
    public static let halfClose = Relay.Options(halfClose: true)
}
