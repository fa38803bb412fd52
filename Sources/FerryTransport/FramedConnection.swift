import FerryProtocol
import Glibc
import Synchronization

/// What `receive(direct:)` got: a whole frame, or the header of a frame whose payload the
/// caller reads itself with `readDirect`.
public enum IncomingFrame {
    case frame(ReceivedFrame)
    case direct(header: FrameHeader, type: FrameType, length: Int)
}

/// One frame as received. `payload` points into the connection's receive buffer and is valid
/// only until the next `receive()` on that connection.
public struct ReceivedFrame {
    public var header: FrameHeader
    public var type: FrameType
    public var payload: UnsafeRawBufferPointer
}

/// Frames (Protocol.md section 2) over a TCP stream: a 16-byte header with a per-direction
/// sequence number, then the payload. After an authentication handshake that chose a cipher
/// (`PeerAuthentication`) the frames travel inside sealed records (Protocol.md 9.3); until then,
/// and always on a connection without a key, straight over the socket (the plain path costs one
/// nil check per call). What to read next, and whether a header is acceptable, is decided by
/// `FrameCursor`, the frame decoder the fuzz tests exercise; this class only moves the bytes.
///
/// `@unchecked Sendable`: the send side (`send`) and the receive side (`receive`) use disjoint
/// state, so one sending thread and one receiving thread may use a connection at the same time;
/// two threads must not both send, or both receive. The counters are atomics any thread may read.
/// After an error that leaves a direction out of step (a partial frame, a bad header) that
/// direction keeps failing with the same error; a receive timeout between frames does not count.
public final class FramedConnection: @unchecked Sendable {
    public let stream: TCPStream
    /// Largest payload this connection sends or accepts (never more than a type's own maximum).
    public let maxPayload: Int

    // Send side: touched only by the sending thread.
    private let sendHeader = UnsafeMutableRawPointer.allocate(byteCount: FrameHeader.size, alignment: 8)
    private var nextSendSequence: UInt64 = 0
    private var sendFailure: TransportError?
    private var messageBuffer: [UInt8] = []
    /// Seals what is sent, once the handshake chose a cipher.
    private var recordWriter: RecordWriter?

    // Receive side: touched only by the receiving thread.
    private let receiveHeader = UnsafeMutableRawPointer.allocate(byteCount: FrameHeader.size, alignment: 8)
    private var payloadBuffer: UnsafeMutableRawPointer
    private var payloadCapacity: Int
    /// The frame decoder (the one the fuzz tests run): it checks each header and says what the
    /// next bytes are; this side reads exactly those, from the socket or the records.
    private var frames: FrameCursor
    private var receiveFailure: TransportError?
    /// A receive failed in a way that leaves the stream out of step (anything but a timeout
    /// between frames): every later receive fails the same way.
    public var hasFailedReceiving: Bool { receiveFailure != nil }
    /// The last frame received was a direct one (`receive(direct:)`): its payload (`frames.remaining`
    /// bytes of it still unread) is the caller's to read.
    private var receivedDirect = false
    /// Opens what is received, once the handshake chose a cipher.
    private var recordReader: RecordReader?
    /// Largest payload accepted right now: `maxPayload`, or less while a peer is not yet
    /// authenticated (so a stranger cannot make this side allocate a large buffer).
    public var receiveLimit: Int {
        get { frames.payloadLimit }
        set { frames.payloadLimit = newValue }
    }

    /// Whether the peer proved it holds the shared key, and the cipher protecting the bytes.
    /// Set by the handshake, before the connection is shared between threads.
    public internal(set) var security = ConnectionSecurityState.plain

    private let sentBytes = Atomic<UInt64>(0)
    private let receivedBytes = Atomic<UInt64>(0)
    private let sentFrames = Atomic<UInt64>(0)
    private let receivedFrames = Atomic<UInt64>(0)

    /// Wire bytes (headers included) written so far.
    public var bytesSent: UInt64 { sentBytes.load(ordering: .relaxed) }
    /// Wire bytes (headers included) read so far, skipped frames included.
    public var bytesReceived: UInt64 { receivedBytes.load(ordering: .relaxed) }
    public var framesSent: UInt64 { sentFrames.load(ordering: .relaxed) }
    /// Frames read so far, skipped optional frames included.
    public var framesReceived: UInt64 { receivedFrames.load(ordering: .relaxed) }

    private static let initialCapacity = 4096

    public init(_ stream: TCPStream, maxPayload: Int = ProtocolLimits.maxFramePayload) {
        self.stream = stream
        self.maxPayload = min(max(0, maxPayload), ProtocolLimits.maxFramePayload)
        self.frames = FrameCursor(maxPayload: self.maxPayload)
        self.payloadCapacity = Self.initialCapacity
        self.payloadBuffer = UnsafeMutableRawPointer.allocate(byteCount: Self.initialCapacity, alignment: 16)
    }

    deinit {
        sendHeader.deallocate()
        receiveHeader.deallocate()
        payloadBuffer.deallocate()
    }

    /// Shuts the connection down; a thread blocked in `send` or `receive` returns with an error.
    public func close() {
        stream.close()
    }

    public var peerDescription: String { stream.peerDescription }

    /// From now on every byte sent is sealed with `send` and every byte received is opened with
    /// `receive` (Protocol.md 9.3). Called by the handshake while one thread uses the connection.
    func startRecords(send: RecordKey, receive: RecordKey) {
        recordWriter = RecordWriter(stream: stream, key: send)
        recordReader = RecordReader(stream: stream, key: receive)
    }

    // MARK: Byte I/O (plain socket or sealed records)

    private func writeFrame(_ vectors: UnsafeMutableBufferPointer<iovec>) throws(TransportError) {
        if let recordWriter {
            try recordWriter.write(vectors.lazy.map { UnsafeRawBufferPointer(start: $0.iov_base, count: $0.iov_len) })
        } else {
            try stream.writeVectors(vectors)
        }
    }

    private func writeFrame(_ parts: UnsafeBufferPointer<UnsafeRawBufferPointer>) throws(TransportError) {
        if let recordWriter {
            try recordWriter.write(parts)
        } else {
            try stream.writeAll(parts)
        }
    }

    private func readBytes(into buffer: UnsafeMutableRawBufferPointer, received: inout Int) throws(TransportError) {
        if let recordReader {
            try recordReader.read(into: buffer, received: &received)
        } else {
            try stream.readExactly(into: buffer, received: &received)
        }
    }

    private func readBytes(vectors: UnsafeMutableBufferPointer<iovec>, received: inout Int) throws(TransportError) {
        if let recordReader {
            try recordReader.read(vectors: vectors, received: &received)
        } else {
            try stream.readVectors(vectors, received: &received)
        }
    }

    // MARK: Sending

    /// Sends one frame: the header (with this direction's next sequence number) and the payload
    /// in one gather write. Allocates nothing.
    public func send(_ type: FrameType, payload: UnsafeRawBufferPointer) throws(TransportError) {
        if let sendFailure { throw sendFailure }
        let limit = min(type.maxPayload, maxPayload)
        guard payload.count <= limit else {
            throw TransportError(
                .protocolViolation,
                "refusing to send a \(type.wireName) frame of \(payload.count) bytes: the maximum is \(limit)")
        }
        FrameHeader(type, length: payload.count, sequence: nextSendSequence).encode(to: sendHeader)
        let result: TransportError? = withUnsafeTemporaryAllocation(of: iovec.self, capacity: 2) { vectors in
            vectors[0] = iovec(iov_base: sendHeader, iov_len: FrameHeader.size)
            vectors[1] = iovec(iov_base: UnsafeMutableRawPointer(mutating: payload.baseAddress), iov_len: payload.count)
            do throws(TransportError) {
                try writeFrame(vectors)
                return nil
            } catch {
                return error
            }
        }
        if let result {
            // Part of the frame may be on the wire: the stream is out of step for good.
            sendFailure = result
            throw result
        }
        nextSendSequence += 1
        sentBytes.add(UInt64(FrameHeader.size + payload.count), ordering: .relaxed)
        sentFrames.add(1, ordering: .relaxed)
    }

    /// Encodes `message` into a buffer the connection reuses, then sends it as one frame.
    /// Sends a frame whose payload is gathered from `parts` (zero-copy: e.g. guest pages).
    /// `parts[0]` is overwritten with the frame header; `length` is the payload's total size.
    public func send(_ type: FrameType, gather parts: UnsafeMutableBufferPointer<UnsafeRawBufferPointer>, length: Int)
        throws(TransportError)
    {
        if let sendFailure { throw sendFailure }
        let limit = min(type.maxPayload, maxPayload)
        guard length <= limit else {
            throw TransportError(
                .protocolViolation,
                "refusing to send a \(type.wireName) frame of \(length) bytes: the maximum is \(limit)")
        }
        FrameHeader(type, length: length, sequence: nextSendSequence).encode(to: sendHeader)
        parts[0] = UnsafeRawBufferPointer(start: sendHeader, count: FrameHeader.size)
        do throws(TransportError) {
            try writeFrame(UnsafeBufferPointer(parts))
        } catch {
            sendFailure = error
            throw error
        }
        nextSendSequence += 1
        sentBytes.add(UInt64(FrameHeader.size + length), ordering: .relaxed)
        sentFrames.add(1, ordering: .relaxed)
    }

    public func send<M: FrameMessage>(_ message: M) throws(TransportError) {
        messageBuffer.removeAll(keepingCapacity: true)
        message.encode(into: &messageBuffer)
        let result: TransportError? = messageBuffer.withUnsafeBytes { bytes in
            do throws(TransportError) {
                try send(M.frameType, payload: bytes)
                return nil
            } catch {
                return error
            }
        }
        if let result { throw result }
    }

    // MARK: Receiving

    /// Reads the next frame. The header is validated by the frame decoder (`FrameCursor`: type,
    /// flags, length against the type's maximum and `receiveLimit`, sequence) before any payload
    /// byte is read. Unknown optional frames are skipped; an ABORT frame is thrown as `.peerAborted`.
    public func receive() throws(TransportError) -> ReceivedFrame {
        switch try receive(direct: nil) {
        case .frame(let frame): return frame
        case .direct: preconditionFailure("no direct frame type was asked for")
        }
    }

    /// Like `receive()`, except that for a frame of type `direct` only the (validated) header is
    /// read: the caller then reads exactly `length` payload bytes through `readDirect`, e.g.
    /// straight into their final place, before it receives again. Receiving with payload bytes
    /// left unread fails (the stream would be out of step).
    public func receive(direct: FrameType?) throws(TransportError) -> IncomingFrame {
        if let receiveFailure { throw receiveFailure }
        if frames.remaining > 0, let unread = frames.current {
            throw failReceive(
                TransportError(
                    .protocolViolation,
                    "frame #\(unread.sequence)'s payload was not read to the end (\(frames.remaining) bytes left): the connection is out of step"
                ))
        }
        receivedDirect = false
        while true {
            var received = 0
            do {
                try readBytes(
                    into: UnsafeMutableRawBufferPointer(start: receiveHeader, count: FrameHeader.size),
                    received: &received)
            } catch {
                if error.code == .timeout && received == 0 { throw error }  // between frames: still in step
                if received > 0 {
                    throw failReceive(
                        TransportError(
                            error.code, "\(error.message) while reading frame #\(frames.expectedSequence)'s header"))
                }
                throw failReceive(error)
            }
            let header: FrameHeader
            do {
                header = try frames.accept(
                    header: UnsafeRawBufferPointer(start: receiveHeader, count: FrameHeader.size))
            } catch {
                throw failReceive(rejectedHeader(error))
            }
            let length = Int(header.length)
            guard let type = header.frameType else {
                try skipPayload(length, header: header)
                continue
            }
            if type == direct {
                receivedDirect = true
                receivedBytes.add(UInt64(FrameHeader.size), ordering: .relaxed)
                receivedFrames.add(1, ordering: .relaxed)
                return .direct(header: header, type: type, length: length)
            }
            reserve(length, limit: min(type.maxPayload, maxPayload))
            let payload = UnsafeMutableRawBufferPointer(start: payloadBuffer, count: length)
            try readPayload(payload, header: header, name: type.wireName)
            frames.consume(length)
            receivedBytes.add(UInt64(FrameHeader.size + length), ordering: .relaxed)
            receivedFrames.add(1, ordering: .relaxed)
            if type == .abort {
                let aborted = Self.abortError(UnsafeRawBufferPointer(payload))
                receiveFailure = aborted
                throw aborted
            }
            return .frame(ReceivedFrame(header: header, type: type, payload: UnsafeRawBufferPointer(payload)))
        }
    }

    /// The error for a header the decoder rejected. A header whose own fields are wrong is named
    /// by its place in the stream; one that is wrong for this stream (its sequence number, or a
    /// length over this connection's limit) is not, since its place is what is in doubt.
    private func rejectedHeader(_ problem: ProtocolError) -> TransportError {
        let header = FrameHeader(unvalidated: UnsafeRawBufferPointer(start: receiveHeader, count: FrameHeader.size))
        if header.validationError() != nil {
            return TransportError(
                .protocolViolation, "bad frame #\(frames.expectedSequence) from \(peerDescription): \(problem.message)",
                protocolError: problem)
        }
        return TransportError(
            .protocolViolation, "frame from \(peerDescription): \(problem.message)", protocolError: problem)
    }

    /// Reads the next `buffer.count` payload bytes of the frame `receive(direct:)` returned.
    public func readDirect(into buffer: UnsafeMutableRawBufferPointer) throws(TransportError) {
        try checkDirect(buffer.count)
        var received = 0
        defer { countDirect(received) }
        do {
            try readBytes(into: buffer, received: &received)
        } catch {
            throw failDirect(error, received: received)
        }
    }

    /// Scatter-reads the next payload bytes of the direct frame into the places `vectors`
    /// describe (≤ 1024; advanced in place).
    public func readDirect(vectors: UnsafeMutableBufferPointer<iovec>) throws(TransportError) {
        var total = 0
        for vector in vectors { total += vector.iov_len }
        try checkDirect(total)
        var received = 0
        defer { countDirect(received) }
        do {
            try readBytes(vectors: vectors, received: &received)
        } catch {
            throw failDirect(error, received: received)
        }
    }

    private func checkDirect(_ count: Int) throws(TransportError) {
        if let receiveFailure { throw receiveFailure }
        guard receivedDirect, let header = frames.current else {
            preconditionFailure("readDirect without a direct frame")
        }
        guard count <= frames.remaining else {
            throw failReceive(
                TransportError(
                    .protocolViolation,
                    "frame #\(header.sequence) has \(frames.remaining) payload bytes left, not \(count)"))
        }
    }

    private func countDirect(_ received: Int) {
        frames.consume(received)
        receivedBytes.add(UInt64(received), ordering: .relaxed)
    }

    private func failDirect(_ error: TransportError, received: Int) -> TransportError {
        let sequence = frames.current?.sequence ?? 0
        let what: String
        switch error.code {
        case .peerClosed: what = "peer \(peerDescription) closed the connection mid-frame"
        case .timeout: what = "no data from \(peerDescription) within the receive timeout, mid-frame"
        default: what = error.message + ", mid-frame"
        }
        return failReceive(
            TransportError(
                error.code, "\(what) (frame #\(sequence): \(frames.remaining - received) payload bytes missing)"))
    }

    /// Receives the next frame (skipping NOTE frames unless a NOTE is asked for), requires it to
    /// be an `M` and decodes it.
    public func receive<M: FrameMessage>(_: M.Type) throws(TransportError) -> M {
        while true {
            let frame = try receive()
            if frame.type == .note && M.frameType != .note { continue }
            guard frame.type == M.frameType else {
                let problem = ProtocolError(
                    .unexpectedFrame,
                    "expected a \(M.frameType.wireName) frame, got \(frame.type.wireName) (frame #\(frame.header.sequence))"
                )
                throw TransportError(
                    .protocolViolation, "\(problem.message) from \(peerDescription)", protocolError: problem)
            }
            do {
                return try M(payload: frame.payload)
            } catch {
                throw TransportError(
                    .protocolViolation,
                    "malformed \(M.frameType.wireName) frame #\(frame.header.sequence) from \(peerDescription): \(error.message)",
                    protocolError: error)
            }
        }
    }

    private func failReceive(_ error: TransportError) -> TransportError {
        receiveFailure = error
        return error
    }

    private func readPayload(_ payload: UnsafeMutableRawBufferPointer, header: FrameHeader, name: String)
        throws(TransportError)
    {
        var received = 0
        do {
            try readBytes(into: payload, received: &received)
        } catch {
            let what: String
            switch error.code {
            case .peerClosed: what = "peer \(peerDescription) closed the connection mid-frame"
            case .timeout: what = "no data from \(peerDescription) within the receive timeout, mid-frame"
            default: what = error.message + ", mid-frame"
            }
            throw failReceive(
                TransportError(
                    error.code,
                    "\(what) (\(name) frame #\(header.sequence): \(received) of \(payload.count) payload bytes received)"
                ))
        }
    }

    /// Reads and drops the payload of an optional frame type this version does not know.
    private func skipPayload(_ length: Int, header: FrameHeader) throws(TransportError) {
        while frames.remaining > 0 {
            let chunk = UnsafeMutableRawBufferPointer(
                start: payloadBuffer, count: min(frames.remaining, payloadCapacity))
            try readPayload(chunk, header: header, name: "optional type 0x\(String(header.type, radix: 16))")
            frames.consume(chunk.count)
        }
        receivedBytes.add(UInt64(FrameHeader.size + length), ordering: .relaxed)
        receivedFrames.add(1, ordering: .relaxed)
    }

    /// Grows the receive buffer to hold `length` bytes: to the next power of two, but never past
    /// `limit` (the frame type's maximum), so memory follows the largest frame actually seen.
    private func reserve(_ length: Int, limit: Int) {
        guard length > payloadCapacity else { return }
        var capacity = payloadCapacity
        while capacity < length { capacity *= 2 }
        capacity = max(length, min(capacity, limit))
        payloadBuffer.deallocate()
        payloadBuffer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
        payloadCapacity = capacity
    }

    /// An ABORT frame's reason and message, read leniently (`Abort.lenient`): the peer is going
    /// away, so whatever it said is worth showing.
    static func abortError(_ payload: UnsafeRawBufferPointer) -> TransportError {
        let said = Abort.lenient(payload)
        return .peerAborted(reason: said.reason, message: said.message)
    }
}
