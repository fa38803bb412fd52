/// `NOTE` (either direction, optional type 0x8001): text for the peer's logs, which it may ignore.
public struct Note: FrameMessage, ValidatingMessage, Equatable {
    public static let frameType = FrameType.note

    /// Cut to 4094 UTF-8 bytes when encoded.
    public var text: String

    public init(text: String) {
        self.text = text
    }

    public func validate() throws(ProtocolError) {
        if text.utf8.count > StringLimits.note {
            throw ProtocolError(.tooLarge, "NOTE 'text' is \(text.utf8.count) bytes, the limit is \(StringLimits.note)")
        }
    }

    public func encode(into out: inout [UInt8]) {
        out.appendStr16(text.truncatedUTF8(to: StringLimits.note))
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "NOTE")
        text = try reader.str16("text", limit: StringLimits.note)
        try reader.finish()
    }
}
