import FerrySystem
import FerryProtocol
import FerryTransport
import Foundation
import Synchronization

import FerryGuestMigration
import FerryKVMMigration
@testable import FerryMigration

/// A TCP relay for tests, between a source and a destination agent: every connection it accepts
/// is relayed to the destination, frame by frame, and `decide` sees each frame's type and
/// direction before it is forwarded. `.cut` drops that frame and closes both sides of its
/// connection, as a network failure at exactly that point would; later connections are relayed
/// again, so that a source that reconnects gets through.
final class FrameRelay: @unchecked Sendable {
    enum Direction: Sendable { case toDestination, toSource }
    enum Verdict: Sendable { case forward, cut }

    let port: Int
    private let listener: TCPListener
    private let destination: Endpoint
    private let decide: @Sendable (Direction, UInt16) -> Verdict
    /// Sees (and may change) each forwarded frame's payload.
    private let rewrite: (@Sendable (Direction, UInt16, UnsafeMutableRawBufferPointer) -> Void)?
    /// After a cut, take no more connections: the network between the agents stays down.
    private let stayDownAfterCut: Bool
    /// Frames cut so far, as "DIRECTION TYPE".
    let cuts = Mutex<[String]>([])

    init(destinationPort: Int, stayDownAfterCut: Bool = false,
         rewrite: (@Sendable (Direction, UInt16, UnsafeMutableRawBufferPointer) -> Void)? = nil,
         decide: @escaping @Sendable (Direction, UInt16) -> Verdict) throws {
        self.stayDownAfterCut = stayDownAfterCut
        self.rewrite = rewrite
        listener = try TCPListener(try Endpoint.parse("127.0.0.1:0"))
        port = Int(listener.port)
        destination = try Endpoint.parse("127.0.0.1:\(destinationPort)")
        self.decide = decide
        let thread = Thread { [self] in acceptLoop() }
        thread.start()
    }

    /// A verdict that cuts the first frame of `type` going `direction` and forwards all else.
    static func cutFirst(_ type: FrameType, going direction: Direction) -> @Sendable (Direction, UInt16) -> Verdict {
        let done = Atomic<Bool>(false)
        return { seen, raw in
            guard seen == direction, raw == type.rawValue else { return .forward }
            return done.exchange(true, ordering: .relaxed) ? .forward : .cut
        }
    }

    func close() { listener.close() }

    private func acceptLoop() {
        while let client = try? listener.accept(timeoutMs: nil) {
            guard let server = try? TCPStream.connect(destination, timeoutMs: 2_000) else {
                client.close()
                continue
            }
            let ended = EndCount()
            for (from, to, direction) in [(client, server, Direction.toDestination), (server, client, .toSource)] {
                let thread = Thread { [self] in pump(from: from, to: to, direction: direction, pair: (client, server), ended: ended) }
                thread.start()
            }
        }
    }

    /// Relays one direction. A cut closes both sides at once. When the sender closes, the end is
    /// passed on as a half-close; when the receiver is gone (a write fails), the other direction
    /// first delivers what it still carries (an ABORT sent just before a close), then both sides
    /// are closed: as over TCP, where the sender would get a reset after that data.
    private func pump(from: TCPStream, to: TCPStream, direction: Direction, pair: (TCPStream, TCPStream), ended: EndCount) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: FrameHeader.size + ProtocolLimits.maxFramePayload, alignment: 16)
        defer { buffer.deallocate() }
        enum End { case cut, senderClosed, receiverGone }
        var end = End.senderClosed
        relaying: while true {
            let header = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<FrameHeader.size])
            let length: Int
            let decoded: FrameHeader
            do {
                try from.readExactly(into: header)
                decoded = FrameHeader(unvalidated: UnsafeRawBufferPointer(header))
                length = min(Int(decoded.length), ProtocolLimits.maxFramePayload)
                if length > 0 {
                    try from.readExactly(into: UnsafeMutableRawBufferPointer(rebasing: buffer[FrameHeader.size..<FrameHeader.size + length]))
                }
            } catch {
                break relaying
            }
            if decide(direction, decoded.type) == .cut {
                cuts.withLock { $0.append("\(direction) \(decoded.type)") }
                if stayDownAfterCut { listener.close() }
                end = .cut
                break relaying
            }
            rewrite?(direction, decoded.type, UnsafeMutableRawBufferPointer(rebasing: buffer[FrameHeader.size..<FrameHeader.size + length]))
            do {
                try to.writeAll(UnsafeRawBufferPointer(rebasing: buffer[0..<FrameHeader.size + length]))
            } catch {
                end = .receiverGone
                break relaying
            }
        }
        switch end {
        case .cut:
            break
        case .senderClosed:
            to.shutdownWrite()
            if ended.increment() < 2 { return }
        case .receiverGone:
            let deadline = MonotonicClock.now() &+ 2_000_000_000
            while ended.value < 1 && MonotonicClock.now() < deadline { usleep(5_000) }
            _ = ended.increment()
        }
        pair.0.close()
        pair.1.close()
    }
}

/// How many of a relayed pair's two directions have ended.
final class EndCount: Sendable {
    private let count = Mutex(0)
    func increment() -> Int { count.withLock { $0 += 1; return $0 } }
    var value: Int { count.withLock { $0 } }
}
