/// A guest's name on its host: 1…63 characters of `a-z`, `0-9` and `-`, starting with a letter or
/// digit. Names become file and socket names under the agent's state directory, so nothing else
/// is allowed (no `/`, no `.`, no upper case that a case-insensitive file system would fold).
public struct GuestName: Hashable, Sendable, Codable, CustomStringConvertible, Comparable {
    public let value: String

    public init(_ text: String) throws(HostModelError) {
        guard let first = text.utf8.first, (1...63).contains(text.utf8.count) else {
            throw HostModelError(field: "name", "a guest name has 1 to 63 characters, got \(text.utf8.count)")
        }
        guard Self.isAlphanumeric(first) else {
            throw HostModelError(field: "name", "a guest name starts with a-z or 0-9: \"\(text)\"")
        }
        guard text.utf8.allSatisfy({ Self.isAlphanumeric($0) || $0 == UInt8(ascii: "-") }) else {
            throw HostModelError(field: "name", "a guest name holds only a-z, 0-9 and '-': \"\(text)\"")
        }
        value = text
    }

    private static func isAlphanumeric(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
    }

    public var description: String { value }
    public static func < (lhs: GuestName, rhs: GuestName) -> Bool { lhs.value < rhs.value }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        do { self = try GuestName(text) } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: error.message))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(value)
    }
}
