import FerryProtocol
import FerrySystem
import FerryTransport
import Foundation
import Synchronization

import FerryGuestMigration
import FerryKVMMigration
@testable import FerryMigration

/// A relay that plays a wedged destination (or a silent partition) at a chosen frame: every
/// connection it accepts is relayed to the destination frame by frame, and `decide` sees each
/// frame (which connection, which direction, which type) before it is forwarded:
/// - `.forward` passes it on;
/// - `.silence` holds it and stops relaying that connection in both directions, leaving both
///   TCP connections open (no FIN, no RST): the peer's writes fill the buffers and block, its
///   reads wait, as with a stopped process or a partition;
/// - `.silenceAll` does that to every connection open now (new ones are relayed normally);
/// - `.drip(ms)` forwards the frame one byte every `ms` milliseconds.
final class WedgingRelay: @unchecked Sendable {
    enum Direction: Sendable { case toDestination, toSource }
    enum Kind: Sendable { case control, pageStream }
    enum Verdict: Sendable, Equatable { case forward, silence, silenceAll, drip(Int) }

    let port: Int
    private let listener: TCPListener
    private let destination: Endpoint
    private let decide: @Sendable (Kind, Direction, FrameType?) -> Verdict
    private let condition = NSCondition()
    private var closed = false
    private var pairs: [Pair] = []
    /// What happened, as "KIND DIRECTION TYPE VERDICT".
    let events = Mutex<[String]>([])

    private final class Pair: @unchecked Sendable {
        let client: TCPStream
        let server: TCPStream
        var kind: Kind?
        var silenced = false
        init(client: TCPStream, server: TCPStream) {
            self.client = client
            self.server = server
        }
    }

    init(destinationPort: Int, decide: @escaping @Sendable (Kind, Direction, FrameType?) -> Verdict) throws {
        listener = try TCPListener(try Endpoint.parse("127.0.0.1:0"))
        port = Int(listener.port)
        destination = try Endpoint.parse("127.0.0.1:\(destinationPort)")
        self.decide = decide
        let thread = Thread { [self] in acceptLoop() }
        thread.start()
    }

    /// Stops relaying and closes every connection, the held ones included.
    func close() {
        listener.close()
        condition.lock()
        closed = true
        let all = pairs
        condition.broadcast()
        condition.unlock()
        for pair in all {
            pair.client.close()
            pair.server.close()
        }
    }

    private func acceptLoop() {
        while let client = try? listener.accept(timeoutMs: nil) {
            guard let server = try? TCPStream.connect(destination, timeoutMs: 2_000) else {
                client.close()
                continue
            }
            let pair = Pair(client: client, server: server)
            condition.lock()
            pairs.append(pair)
            condition.unlock()
            for (from, to, direction) in [(client, server, Direction.toDestination), (server, client, .toSource)] {
                let thread = Thread { [self] in pump(from: from, to: to, direction: direction, pair: pair) }
                thread.start()
            }
        }
    }

    /// Holds the calling pump until the relay closes.
    private func park() {
        condition.lock()
        while !closed { condition.wait() }
        condition.unlock()
    }

    private func pump(from: TCPStream, to: TCPStream, direction: Direction, pair: Pair) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: FrameHeader.size + ProtocolLimits.maxFramePayload, alignment: 16)
        defer { buffer.deallocate() }
        do {
            while true {
                let header = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<FrameHeader.size])
                try from.readExactly(into: header)
                let decoded = FrameHeader(unvalidated: UnsafeRawBufferPointer(header))
                let length = min(Int(decoded.length), ProtocolLimits.maxFramePayload)
                if length > 0 {
                    try from.readExactly(into: UnsafeMutableRawBufferPointer(rebasing: buffer[FrameHeader.size..<FrameHeader.size + length]))
                }
                let type = FrameType(rawValue: decoded.type)
                condition.lock()
                if pair.kind == nil, direction == .toDestination {
                    // Connections that open with AUTH_HELLO are not told apart; the tests here use no key.
                    pair.kind = type == .join ? .pageStream : .control
                }
                let kind = pair.kind ?? .control
                var silenced = pair.silenced
                condition.unlock()
                if silenced {
                    park()
                    break
                }
                let verdict = decide(kind, direction, type)
                if verdict != .forward {
                    events.withLock { $0.append("\(kind) \(direction) \(type.map { "\($0)" } ?? "\(decoded.type)") \(verdict)") }
                }
                switch verdict {
                case .forward:
                    try to.writeAll(UnsafeRawBufferPointer(rebasing: buffer[0..<FrameHeader.size + length]))
                case .drip(let ms):
                    for index in 0..<(FrameHeader.size + length) {
                        try to.writeAll(UnsafeRawBufferPointer(rebasing: buffer[index..<index + 1]))
                        Thread.sleep(forTimeInterval: Double(ms) / 1000)
                    }
                case .silence, .silenceAll:
                    condition.lock()
                    pair.silenced = true
                    if verdict == .silenceAll { for other in pairs { other.silenced = true } }
                    condition.unlock()
                    silenced = true
                }
                if silenced {
                    park()
                    break
                }
            }
        } catch {}
        pair.client.close()
        pair.server.close()
    }
}

/// The source's guest, watched: when it was paused and resumed (the blackout as the guest
/// lives it), forwarding everything to the built-in guest.
final class WatchedGuest: MigratableGuest, @unchecked Sendable {
    let inner: BuiltinMigratableGuest
    private let lock = NSLock()
    private var pausedAt: UInt64?
    private var longest: UInt64 = 0
    private let pausedFlag = Atomic<Bool>(false)

    init(_ inner: BuiltinMigratableGuest) { self.inner = inner }

    /// True from the first pause on (the blackout, or the pause that measures its cost at setup).
    let pauses = Atomic<Int>(0)
    var isPaused: Bool { pausedFlag.load(ordering: .acquiring) }
    /// The longest pause that ended, in seconds.
    var longestPauseSeconds: Double {
        lock.lock()
        defer { lock.unlock() }
        return Double(longest) / 1e9
    }

    var guestKind: UInt16 { inner.guestKind }
    var cpuStateFormat: UInt16 { inner.cpuStateFormat }
    var vcpus: Int { inner.vcpus }
    var memory: GuestMemory { inner.memory }
    var configuration: GuestDescription { inner.configuration }
    func makeDirtyTracker(_ choice: TrackerChoice) throws -> (tracker: any DirtyTracker, why: String) {
        try inner.makeDirtyTracker(choice)
    }
    func pause() -> UInt64 {
        let took = inner.pause()
        lock.lock()
        pausedAt = MonotonicClock.now()
        lock.unlock()
        pauses.add(1, ordering: .relaxed)
        pausedFlag.store(true, ordering: .releasing)
        return took
    }
    func resume() {
        pausedFlag.store(false, ordering: .releasing)
        lock.lock()
        if let pausedAt { longest = max(longest, MonotonicClock.now() &- pausedAt) }
        pausedAt = nil
        lock.unlock()
        inner.resume()
    }
    var throttlePercent: Int {
        get { inner.throttlePercent }
        set { inner.throttlePercent = newValue }
    }
    func deviceState() throws -> [DeviceStateSection] { try inner.deviceState() }
    func stopForHandover() -> [UInt64] { inner.stopForHandover() }
}
