/// The frame decoder's state machine (Protocol.md section 2): where a reader stands in a frame
/// stream and the checks every header passes. It holds no bytes; whoever owns them reads what
/// `expecting` says comes next and hands it over:
/// - `FramedConnection` (production) reads straight from the socket: the 16 header bytes into a
///   small buffer, then the payload into its own buffer or, for a direct frame (PAGE_BATCH),
///   into the caller's memory (guest pages, by scatter reads);
/// - `FrameDecoder` (tests, fuzzing, simple readers) cuts the frames out of bytes it buffers.
///
/// Per frame: `accept(header:)` checks the 16 header bytes as soon as they are in, before any
/// payload byte is read or room for it allocated (type not 0, a mandatory type known, no flags
/// on a mandatory frame, length within the type's maximum and within `payloadLimit`, sequence
/// the next expected one); then the reader reports the payload bytes it took with `consume(_:)`
/// until none remain. An unknown optional frame's payload is skipped (`.skip`) but its sequence
/// number counts. After a header is rejected, every later `accept` throws the same error.
public struct FrameCursor: Sendable {
    /// What the next bytes of the stream are.
    public enum Expectation: Equatable, Sendable {
        /// The 16 bytes of the next frame's header.
        case header
        /// `remaining` payload bytes of the frame `current` (a known type).
        case payload(remaining: Int)
        /// `remaining` payload bytes of an unknown optional frame, to drop.
        case skip(remaining: Int)
    }

    /// The sequence number the next header must carry.
    public private(set) var expectedSequence: UInt64
    /// Largest payload this reader ever accepts (at most `ProtocolLimits.maxFramePayload`).
    public let maxPayload: Int
    /// Largest payload accepted right now: `maxPayload`, or less while the peer has not
    /// authenticated (Protocol.md 9.5), so that a stranger cannot make the reader allocate much.
    public var payloadLimit: Int
    /// The header last accepted: the frame whose payload is being read (or was read last).
    public private(set) var current: FrameHeader?
    /// Payload bytes of `current` not consumed yet.
    public private(set) var remaining = 0
    /// `current` is an unknown optional frame, whose payload is dropped.
    public private(set) var isSkipping = false
    /// Why a header was rejected; from then on `accept` throws it again.
    public private(set) var failure: ProtocolError?

    public init(firstSequence: UInt64 = 0, maxPayload: Int = ProtocolLimits.maxFramePayload) {
        expectedSequence = firstSequence
        self.maxPayload = min(max(0, maxPayload), ProtocolLimits.maxFramePayload)
        payloadLimit = self.maxPayload
    }

    public var expecting: Expectation {
        if remaining == 0 { return .header }
        return isSkipping ? .skip(remaining: remaining) : .payload(remaining: remaining)
    }

    /// Checks the 16 header bytes at the start of `bytes` and moves on to its payload (`length`
    /// bytes, to read for a known type, to skip for an unknown optional one: `frameType` is nil).
    /// Only when `expecting` is `.header`.
    public mutating func accept(header bytes: UnsafeRawBufferPointer) throws(ProtocolError) -> FrameHeader {
        try accept(FrameHeader(unvalidated: bytes))
    }

    /// `accept(header:)` for a header already read from its bytes (`FrameHeader(unvalidated:)`).
    public mutating func accept(_ header: FrameHeader) throws(ProtocolError) -> FrameHeader {
        if let failure { throw failure }
        precondition(
            remaining == 0, "a frame header read with \(remaining) payload bytes of the frame before it unread")
        if let problem = problem(with: header) {
            failure = problem
            throw problem
        }
        expectedSequence &+= 1
        current = header
        remaining = Int(header.length)
        isSkipping = header.frameType == nil
        return header
    }

    /// Records that the reader took (or dropped) the next `count` payload bytes of `current`.
    @inline(__always)
    public mutating func consume(_ count: Int) {
        precondition(count >= 0 && count <= remaining, "consuming \(count) payload bytes of \(remaining)")
        remaining -= count
    }

    /// The header's own fields (`FrameHeader.validationError`), then its place in this stream.
    private func problem(with header: FrameHeader) -> ProtocolError? {
        if let error = header.validationError() { return error }
        if header.sequence != expectedSequence {
            return ProtocolError(
                .sequence,
                "expected frame sequence \(expectedSequence), got \(header.sequence) (frame type \(header.type)): a frame was lost, duplicated or reordered"
            )
        }
        if Int(header.length) > payloadLimit {
            return ProtocolError(
                .tooLarge,
                "frame type \(header.type) payload of \(header.length) bytes exceeds this connection's maximum of \(payloadLimit)\(payloadLimit < maxPayload ? " before authentication" : "")"
            )
        }
        return nil
    }
}
