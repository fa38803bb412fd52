/// One decoded frame: its header and its payload bytes.
public struct Frame: Equatable, Sendable {
    public var header: FrameHeader
    public var payload: [UInt8]

    public init(header: FrameHeader, payload: [UInt8]) {
        self.header = header
        self.payload = payload
    }

    /// The known type (nil only for unknown optional types, which `FrameDecoder` skips).
    public var type: FrameType? { header.frameType }

    /// Decodes the payload as `M`; throws `.unexpectedFrame` if this frame is another type.
    public func message<M: FrameMessage>(as _: M.Type = M.self) throws(ProtocolError) -> M {
        if header.type != M.frameType.rawValue {
            throw ProtocolError(
                .unexpectedFrame,
                "expected a \(M.frameType) frame, got type \(header.frameType.map { "\($0)" } ?? "\(header.type)")")
        }
        return try payload.withUnsafeBytesTyped { (bytes) throws(ProtocolError) in try M(payload: bytes) }
    }
}

extension FrameMessage {
    /// Appends a whole frame (header with sequence `sequence`, then payload) to `out`.
    public func encodeFrame(sequence: UInt64, into out: inout [UInt8]) {
        let start = out.count
        out.append(contentsOf: repeatElement(0, count: FrameHeader.size))
        encode(into: &out)
        let length = out.count - start - FrameHeader.size
        precondition(
            length <= Self.frameType.maxPayload,
            "\(Self.frameType) payload of \(length) bytes exceeds its maximum of \(Self.frameType.maxPayload)")
        out.withUnsafeMutableBytes { bytes in
            FrameHeader(Self.frameType, length: length, sequence: sequence).encode(to: bytes.baseAddress! + start)
        }
    }

    /// A whole frame: header with sequence `sequence`, then payload.
    public func encodedFrame(sequence: UInt64) -> [UInt8] {
        var out: [UInt8] = []
        encodeFrame(sequence: sequence, into: &out)
        return out
    }
}
