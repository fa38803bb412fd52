/// Why a destination refuses a guest (Protocol.md 3.3).
public enum RefusalReason: UInt16, MessageReason, CaseIterable {
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

    public static var frameType: FrameType { .refuse }
}

/// `REFUSE` (destination → source): the destination will not take the guest; it closes the
/// connection after sending this, and the guest keeps running on the source.
public struct Refuse: ReasonedMessage, ValidatingMessage {
    public var reason: RefusalReason
    public var message: String

    public init(reason: RefusalReason, message: String) {
        self.reason = reason
        self.message = message
    }
}
