/// A page payload that does not decode to the page it claims to be.
public struct CodecError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        case badLength
        case decompressFailed
        /// A payload of a valid length whose content breaks its encoding's rules.
        case badPayload
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "page codec error (\(code.rawValue)): \(message)" }
}
