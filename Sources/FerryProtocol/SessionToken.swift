/// The 16-byte secret that binds a migration to its source (Protocol.md 3.2, section 6): the
/// destination draws it from a CSPRNG for each migration and sends it only in `ACCEPT`; the
/// source presents it in `JOIN`, `RESUME` and `STATUS_QUERY`. Knowing the session id is not
/// enough to join, resume, resolve, commit or abort a migration: a stranger would have to guess
/// 128 random bits. All zero means "no token" (a `STATUS_QUERY` that presents none); a
/// destination never makes that one.
public struct SessionToken: Sendable, Hashable, CustomStringConvertible {
    /// Bytes 0–7 and 8–15 of the token as on the wire, each read little-endian.
    public var low: UInt64
    public var high: UInt64

    public static let byteCount = 16
    public static let none = SessionToken(low: 0, high: 0)

    public init(low: UInt64, high: UInt64) {
        self.low = low
        self.high = high
    }

    /// A fresh token from the system's CSPRNG (`getrandom` on Linux); never `.none`.
    public static func random() -> SessionToken {
        var generator = SystemRandomNumberGenerator()
        while true {
            let token = SessionToken(low: generator.next(), high: generator.next())
            if !token.isNone { return token }
        }
    }

    /// 32 hex digits, the bytes in wire order (what `ferry status --token` takes). Nil for
    /// anything else.
    public init?(hex text: String) {
        let digits = Array(text.utf8)
        guard digits.count == 2 * Self.byteCount else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Self.byteCount)
        for index in stride(from: 0, to: digits.count, by: 2) {
            guard let byte = UInt8(String(decoding: digits[index..<index + 2], as: UTF8.self), radix: 16) else {
                return nil
            }
            bytes.append(byte)
        }
        self.init(bytes: bytes)
    }

    init(bytes: [UInt8]) {
        precondition(bytes.count == Self.byteCount)
        var low: UInt64 = 0
        var high: UInt64 = 0
        for index in 0..<8 {
            low |= UInt64(bytes[index]) << (8 * index)
            high |= UInt64(bytes[8 + index]) << (8 * index)
        }
        self.init(low: low, high: high)
    }

    public var isNone: Bool { (low | high) == 0 }

    /// The 16 bytes in wire order.
    public var bytes: [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: low >> (8 * $0)) }
            + (0..<8).map { UInt8(truncatingIfNeeded: high >> (8 * $0)) }
    }

    /// 32 lower-case hex digits, the bytes in wire order.
    public var hex: String {
        bytes.map { byte in
            let digits = String(byte, radix: 16)
            return digits.count == 1 ? "0" + digits : digits
        }.joined()
    }

    public var description: String { hex }

    /// Whether `other` is this token, compared in constant time (no early exit on the first
    /// differing byte, so the time a check takes tells a guesser nothing). `.none` matches nothing.
    public func matches(_ other: SessionToken) -> Bool {
        let difference = (low ^ other.low) | (high ^ other.high)
        let present = (low | high) != 0
        return difference == 0 && present
    }
}

extension Array where Element == UInt8 {
    mutating func appendToken(_ token: SessionToken) {
        appendLittleEndian(token.low)
        appendLittleEndian(token.high)
    }
}

extension PayloadReader {
    mutating func token(_ field: StaticString) throws(ProtocolError) -> SessionToken {
        let low = try read(UInt64.self, field)
        let high = try read(UInt64.self, field)
        return SessionToken(low: low, high: high)
    }
}
