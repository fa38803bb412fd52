/// The page codecs a side can decode (`HELLO.codecs`, `ACCEPT.codecs`; Protocol.md 3.1).
/// Unknown bits are kept as they are, so a set decodes and re-encodes unchanged.
public struct CodecSet: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let zero = CodecSet(rawValue: 1 << 0)
    public static let raw = CodecSet(rawValue: 1 << 1)
    public static let lz4 = CodecSet(rawValue: 1 << 2)
    /// Mostly-zero pages as lists of their non-zero words (encoding 4).
    public static let words = CodecSet(rawValue: 1 << 3)
    /// Not a codec: the side can switch a migration to post-copy (Protocol.md section 11). A
    /// source sets it when it may; a destination when its guest memory can be served on demand.
    public static let postcopy = CodecSet(rawValue: 1 << 8)

    /// What every version 1 peer must support.
    public static let required: CodecSet = [.zero, .raw]
    /// Every codec this implementation knows.
    public static let all: CodecSet = [.zero, .raw, .lz4, .words]

    public var description: String {
        var names: [String] = []
        if contains(.zero) { names.append("zero") }
        if contains(.raw) { names.append("raw") }
        if contains(.lz4) { names.append("lz4") }
        if contains(.words) { names.append("words") }
        if contains(.postcopy) { names.append("postcopy") }
        let unknown = rawValue & ~(CodecSet.all.rawValue | CodecSet.postcopy.rawValue)
        if unknown != 0 { names.append("0x\(String(unknown, radix: 16))") }
        return "[" + names.joined(separator: ",") + "]"
    }
}
