/// The reason codes of a `ReasonedMessage` (`RefusalReason`, `AbortReason`).
public protocol MessageReason: RawRepresentable<UInt16>, Equatable, Sendable {
    /// The frame that carries this kind of reason.
    static var frameType: FrameType { get }
    /// Anything else (0xFFFF), and what a receiver reads for a value it does not know.
    static var other: Self { get }
}

extension MessageReason {
    /// The reason a receiver reads from `raw`: values it does not know (including 0) are `.other`,
    /// so a newer peer's reasons still reach the user, with the message that comes with them.
    public init(wireValue raw: UInt16) {
        self = Self(rawValue: raw) ?? .other
    }
}

/// A reason code and a message for people: the payload of `REFUSE` (Protocol.md 3.3) and of
/// `ABORT` (3.13), which differ only in their reasons. `Refuse` and `Abort` declare their fields;
/// the layout, its encoding, decoding and checks are written here once.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 2 | `reason` |
/// | 2 | 2 | reserved, 0 |
/// | 4 | … | `message` (`str16`, ≤ 1024 bytes) |
public protocol ReasonedMessage: FrameMessage, Equatable {
    associatedtype Reason: MessageReason
    var reason: Reason { get }
    /// For people: names the problem and the fix. Cut to 1024 UTF-8 bytes when encoded.
    var message: String { get }
    init(reason: Reason, message: String)
}

extension ReasonedMessage {
    public static var frameType: FrameType { Reason.frameType }

    public func validate() throws(ProtocolError) {
        if message.utf8.count > StringLimits.message {
            throw ProtocolError(
                .tooLarge,
                "\(Self.frameType.wireName) 'message' is \(message.utf8.count) bytes, the limit is \(StringLimits.message)"
            )
        }
    }

    public func encode(into out: inout [UInt8]) {
        let text = message.truncatedUTF8(to: StringLimits.message)
        out.appendLittleEndian(reason.rawValue)
        out.appendZeros(2)
        out.appendStr16(text)
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: Self.frameType.wireName)
        let reason = Reason(wireValue: try reader.read(UInt16.self, "reason"))
        try reader.reserved(2)
        let message = try reader.str16("message", limit: StringLimits.message)
        try reader.finish()
        self.init(reason: reason, message: message)
    }
}
