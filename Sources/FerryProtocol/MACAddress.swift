/// A 48-bit Ethernet address, as the 6 bytes that go on the wire (first byte first).
public struct MACAddress: Hashable, Sendable, CustomStringConvertible {
    /// The six bytes packed big-endian into the low 48 bits (02:00:00:00:00:01 is 0x0200_0000_0001).
    public private(set) var value: UInt64

    /// All zero: the guest has no network interface.
    public static let none = MACAddress(value: 0)

    public init(value: UInt64) {
        precondition(value >> 48 == 0, "MAC address value 0x\(String(value, radix: 16)) has more than 48 bits")
        self.value = value
    }

    /// `octets` must hold exactly 6 bytes.
    public init(octets: [UInt8]) {
        precondition(octets.count == 6, "a MAC address has 6 bytes, got \(octets.count)")
        self.value = octets.reduce(0) { $0 << 8 | UInt64($1) }
    }

    public var octets: [UInt8] { (0..<6).map { UInt8(truncatingIfNeeded: value >> (40 - 8 * UInt64($0))) } }

    public var isNone: Bool { value == 0 }

    public var description: String {
        octets.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":")
    }
}

extension MACAddress {
    public static let broadcast = MACAddress(value: 0xFFFF_FFFF_FFFF)

    /// The group bit (bit 0 of the first byte): broadcast and multicast addresses.
    public var isMulticast: Bool { (value >> 40) & 1 != 0 }

    /// Parses six colon- (or dash-) separated hex bytes: `02:00:00:00:00:01`.
    public static func parse(_ text: String) throws(ProtocolError) -> MACAddress {
        let separator: Character = text.contains("-") ? "-" : ":"
        let parts = text.split(separator: separator, omittingEmptySubsequences: false)
        var value: UInt64 = 0
        for part in parts {
            guard part.count == 2, let byte = UInt8(part, radix: 16) else {
                throw ProtocolError(
                    .invalidField, "'\(text)': expected a MAC address as six hex bytes, e.g. 02:00:00:00:00:01")
            }
            value = value << 8 | UInt64(byte)
        }
        guard parts.count == 6 else {
            throw ProtocolError(
                .invalidField, "'\(text)': expected a MAC address as six hex bytes, e.g. 02:00:00:00:00:01")
        }
        return MACAddress(value: value)
    }
}
