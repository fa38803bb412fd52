/// A guest's identity for life, across hosts and renames: 128 random bits as 32 lower-case hex
/// digits. A `ferry vmm` process carries it, so an agent adopts a process only if it answers
/// with the ID the inventory holds (a recycled PID or a stale socket proves nothing).
public struct GuestID: Hashable, Sendable, Codable, CustomStringConvertible {
    public let hex: String

    public init(_ hex: String) throws(HostModelError) {
        guard hex.utf8.count == 32, hex.utf8.allSatisfy({ Self.hexDigits.contains($0) }) else {
            throw HostModelError(field: "id", "a guest ID is 32 lower-case hex digits, got \"\(hex)\"")
        }
        self.hex = hex
    }

    /// A fresh ID from the system's random generator (getrandom).
    public static func random() -> GuestID {
        var generator = SystemRandomNumberGenerator()
        let high = generator.next() as UInt64
        let low = generator.next() as UInt64
        let text = Self.hex16(high) + Self.hex16(low)
        return try! GuestID(text)  // 32 hex digits by construction
    }

    private static let hexDigits = Set(Array("0123456789abcdef".utf8))

    private static func hex16(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }

    public var description: String { hex }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        do { self = try GuestID(text) } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: error.message))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(hex)
    }
}
