/// Messages check their own field rules; decoders run the check on what they read and encoders on
/// what they are about to write.
protocol ValidatingMessage: FrameMessage {
    func validate() throws(ProtocolError)
}

extension ValidatingMessage {
    /// Encoding a message that breaks the protocol is a program bug: the peer would reject it.
    /// Callers building messages from user input call `validate()` first.
    func requireValid() {
        do {
            try validate()
        } catch {
            preconditionFailure("encoding an invalid \(Self.frameType) message: \(error.message)")
        }
    }
}

/// Length limits of `str16` fields (Protocol.md section 3).
public enum StringLimits {
    public static let name = 255
    public static let message = 1024
    public static let workload = 1024
    public static let note = 4094
    public static let guestName = 64
}

/// Guest names (`HELLO.guest_name`, Protocol.md 3.1) become file names on a destination that
/// serves several guests, so they are confined to a safe alphabet.
public enum GuestName {
    /// Nil when `name` is a valid guest name, else why not. Empty is valid (no name).
    public static func problem(_ name: String) -> String? {
        let bytes = Array(name.utf8)
        if bytes.count > StringLimits.guestName {
            return "is \(bytes.count) bytes, the limit is \(StringLimits.guestName)"
        }
        if bytes.first == UInt8(ascii: ".") { return "starts with '.'" }
        for byte in bytes where !isAllowed(byte) {
            return
                "contains \(byte < 0x80 && byte >= 0x20 ? "'\(Character(Unicode.Scalar(byte)))'" : "byte \(byte)"); use letters, digits, '.', '_' and '-'"
        }
        return nil
    }

    /// `text` made into a valid guest name: other characters become '-', a leading '.' is
    /// dropped, and it is cut to the length limit.
    public static func sanitized(_ text: String) -> String {
        var bytes = Array(text.utf8).map { isAllowed($0) ? $0 : UInt8(ascii: "-") }
        while bytes.first == UInt8(ascii: ".") { bytes.removeFirst() }
        return String(decoding: bytes.prefix(StringLimits.guestName), as: UTF8.self)
    }

    private static func isAllowed(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
            return true
        default:
            return false
        }
    }
}
