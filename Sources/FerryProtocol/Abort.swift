/// Why a side gives up on a migration (Protocol.md 3.13).
public enum AbortReason: UInt16, Sendable, CaseIterable {
    /// The peer broke the protocol (`protocol` in Protocol.md).
    case protocolViolation = 1
    case verification = 2
    case io = 3
    case timeout = 4
    case notConverged = 5
    case cancelled = 6
    case other = 0xFFFF

    /// The reason a receiver reads from `raw`: values it does not know (including 0) are `.other`.
    public init(wireValue raw: UInt16) {
        self = AbortReason(rawValue: raw) ?? .other
    }
}

/// `ABORT` (either direction): the sender gives up and closes the connection.
public struct Abort: FrameMessage, ValidatingMessage, Equatable {
    public static let frameType = FrameType.abort

    public var reason: AbortReason
    /// For people: names the problem and the fix. Cut to 1024 UTF-8 bytes when encoded.
    public var message: String

    public init(reason: AbortReason, message: String) {
        self.reason = reason
        self.message = message
    }

    public func validate() throws(ProtocolError) {
        if message.utf8.count > StringLimits.message {
            throw ProtocolError(.tooLarge, "ABORT 'message' is \(message.utf8.count) bytes, the limit is \(StringLimits.message)")
        }
    }

    public func encode(into out: inout [UInt8]) {
        let text = message.truncatedUTF8(to: StringLimits.message)
        out.appendLittleEndian(reason.rawValue)
        out.appendZeros(2)
        out.appendStr16(text)
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "ABORT")
        reason = AbortReason(wireValue: try reader.read(UInt16.self, "reason"))
        try reader.reserved(2)
        message = try reader.str16("message", limit: StringLimits.message)
        try reader.finish()
    }
}

extension Abort {
    /// What an ABORT payload says, read leniently: the peer is going away, so a short or
    /// malformed payload still yields its reason and whatever text it holds (marked when cut
    /// short), where `init(payload:)` would refuse it. The reason is the raw wire value.
    public static func lenient(_ payload: UnsafeRawBufferPointer) -> (reason: UInt16, message: String) {
        guard payload.count >= 4 else {
            return (0xFFFF, "(ABORT frame of \(payload.count) bytes carries no reason)")
        }
        let reason = UInt16(littleEndian: payload.loadUnaligned(fromByteOffset: 0, as: UInt16.self))
        guard payload.count >= 6 else { return (reason, "") }
        let length = Int(UInt16(littleEndian: payload.loadUnaligned(fromByteOffset: 4, as: UInt16.self)))
        let text = UnsafeRawBufferPointer(rebasing: payload[6..<min(payload.count, 6 + length)])
        var message = String(decoding: text, as: UTF8.self)
        if 6 + length > payload.count { message += " (message truncated)" }
        return (reason, message)
    }
}
