/// An IPv4 address.
public struct IPv4Address: Sendable, Equatable, Hashable, CustomStringConvertible {
    /// The address as a number: `a.b.c.d` is `a << 24 | b << 16 | c << 8 | d`.
    public var value: UInt32

    public init(_ value: UInt32) {
        self.value = value
    }

    public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        value = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }

    /// From the four bytes as they travel on the wire (ARP, GUEST_CONFIG's `guest_ipv4`).
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 4 else { return nil }
        value = bytes.reduce(0) { $0 << 8 | UInt32($1) }
    }

    /// The value in network byte order, as `in_addr.s_addr` holds it.
    public var networkOrder: UInt32 { value.bigEndian }

    /// The four bytes in wire order: `a, b, c, d`.
    public var bytes: [UInt8] {
        [
            UInt8(value >> 24), UInt8(truncatingIfNeeded: value >> 16), UInt8(truncatingIfNeeded: value >> 8),
            UInt8(truncatingIfNeeded: value),
        ]
    }

    public var isZero: Bool { value == 0 }

    /// Parses dotted decimal, `192.0.2.7`: four numbers 0…255 without leading zeros.
    public static func parse(_ text: String) throws(TransportError) -> IPv4Address {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        var value: UInt32 = 0
        var valid = parts.count == 4
        for part in parts where valid {
            guard (1...3).contains(part.count), part.allSatisfy({ $0.isASCII && $0.isNumber }),
                part.count == 1 || part.first != "0", let number = UInt8(part)
            else {
                valid = false
                break
            }
            value = value << 8 | UInt32(number)
        }
        guard valid else {
            throw TransportError(.address, "'\(text)': expected an IPv4 address in dotted decimal, e.g. 192.0.2.7")
        }
        return IPv4Address(value)
    }

    public var description: String { bytes.map(String.init).joined(separator: ".") }
}
