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
