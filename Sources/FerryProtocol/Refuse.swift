/// Why a destination refuses a guest (Protocol.md 3.3).
public enum RefusalReason: UInt16, Sendable, CaseIterable {
    case version = 1
    case pageSize = 2
    case memory = 3
    case disk = 4
    case imageExists = 5
    case busy = 6
    case unsupported = 7
    case malformed = 8
    /// The source and destination do not share a key (Protocol.md section 9).
    case unauthenticated = 9
    case other = 0xFFFF

    /// The reason a receiver reads from `raw`: values it does not know (including 0) are `.other`,
    /// so a newer peer's reasons still reach the user, with the message that comes with them.
    public init(wireValue raw: UInt16) {
        self = RefusalReason(rawValue: raw) ?? .other
    }
}

/// `REFUSE` (destination → source): the destination will not take the guest; it closes the
/// connection after sending this, and the guest keeps running on the source.
public struct Refuse: FrameMessage, ValidatingMessage, Equatable {
    public static let frameType = FrameType.refuse

    public var reason: RefusalReason
    /// For people: names the problem and the fix. Cut to 1024 UTF-8 bytes when encoded.
    public var message: String

    public init(reason: RefusalReason, message: String) {
        self.reason = reason
        self.message = message
    }

    public func validate() throws(ProtocolError) {
        if message.utf8.count > StringLimits.message {
            throw ProtocolError(.tooLarge, "REFUSE 'message' is \(message.utf8.count) bytes, the limit is \(StringLimits.message)")
        }
    }

    public func encode(into out: inout [UInt8]) {
        let text = message.truncatedUTF8(to: StringLimits.message)
        out.appendLittleEndian(reason.rawValue)
        out.appendZeros(2)
        out.appendStr16(text)
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "REFUSE")
        reason = RefusalReason(wireValue: try reader.read(UInt16.self, "reason"))
        try reader.reserved(2)
        message = try reader.str16("message", limit: StringLimits.message)
        try reader.finish()
    }
}
