/// Why bytes from a peer could not be accepted. The decoder is pure: it names the problem and
/// leaves logging and connection handling to its caller.
public struct ProtocolError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        /// Frame type 0 or a mandatory type this version does not know.
        case unknownFrameType
        /// A header or payload field holds a value the protocol forbids.
        case invalidField
        /// A length exceeds the protocol's stated maximum.
        case tooLarge
        /// The payload ends before its fields do, or has bytes after them.
        case truncated
        case trailingBytes
        /// The frame sequence number is not the next expected one (lost, duplicated or reordered frame).
        case sequence
        /// The first frame is not a HELLO with the right magic.
        case badMagic
        /// A frame arrived that is not allowed in the current state.
        case unexpectedFrame
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "protocol error (\(code.rawValue)): \(message)" }
}
