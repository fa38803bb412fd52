/// Why a side gives up on a migration (Protocol.md 3.13).
public enum AbortReason: UInt16, MessageReason, CaseIterable {
    /// The peer broke the protocol (`protocol` in Protocol.md).
    case protocolViolation = 1
    case verification = 2
    case io = 3
    case timeout = 4
    case notConverged = 5
    case cancelled = 6
    case other = 0xFFFF

    public static var frameType: FrameType { .abort }
}

/// `ABORT` (either direction): the sender gives up and closes the connection.
public struct Abort: ReasonedMessage, ValidatingMessage {
    public var reason: AbortReason
    public var message: String

    public init(reason: AbortReason, message: String) {
        self.reason = reason
        self.message = message
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
