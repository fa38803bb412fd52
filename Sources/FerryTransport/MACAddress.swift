/// A 48-bit Ethernet MAC address.
public struct MACAddress: Sendable, Equatable, Hashable, CustomStringConvertible {
    public var bytes: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)

    public init(_ bytes: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)) {
        self.bytes = bytes
    }

    /// From exactly six bytes, e.g. the `guest_mac` field of GUEST_CONFIG.
    public init?(_ array: some Collection<UInt8>) {
        guard array.count == 6 else { return nil }
        let b = Array(array)
        self.bytes = (b[0], b[1], b[2], b[3], b[4], b[5])
    }

    public static let zero = MACAddress((0, 0, 0, 0, 0, 0))
    public static let broadcast = MACAddress((0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF))

    public var array: [UInt8] { [bytes.0, bytes.1, bytes.2, bytes.3, bytes.4, bytes.5] }

    public var isZero: Bool { self == .zero }
    /// The group bit (bit 0 of the first byte): broadcast and multicast addresses.
    public var isMulticast: Bool { bytes.0 & 1 != 0 }

    /// Parses six colon- (or dash-) separated hex bytes: `02:00:00:00:00:01`.
    public static func parse(_ text: String) throws(TransportError) -> MACAddress {
        let separator: Character = text.contains("-") ? "-" : ":"
        let parts = text.split(separator: separator, omittingEmptySubsequences: false)
        var values: [UInt8] = []
        for part in parts {
            guard part.count == 2, part.allSatisfy(\.isHexDigit), let value = UInt8(part, radix: 16) else {
                values = []
                break
            }
            values.append(value)
        }
        guard values.count == 6, parts.count == 6, let address = MACAddress(values) else {
            throw TransportError(.address, "'\(text)': expected a MAC address as six hex bytes, e.g. 02:00:00:00:00:01")
        }
        return address
    }

    public var description: String {
        array.map { $0 < 16 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined(separator: ":")
    }

    public static func == (a: MACAddress, b: MACAddress) -> Bool {
        a.bytes.0 == b.bytes.0 && a.bytes.1 == b.bytes.1 && a.bytes.2 == b.bytes.2
            && a.bytes.3 == b.bytes.3 && a.bytes.4 == b.bytes.4 && a.bytes.5 == b.bytes.5
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(bytes.0); hasher.combine(bytes.1); hasher.combine(bytes.2)
        hasher.combine(bytes.3); hasher.combine(bytes.4); hasher.combine(bytes.5)
    }
}
