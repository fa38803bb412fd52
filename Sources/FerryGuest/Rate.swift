/// A write rate: bytes or pages dirtied per second, for the whole guest.
///
/// Text form: a positive number, a unit and `/s`. Units: `B`; `kB`/`KB`, `MB`, `GB`, `TB` = decimal
/// (10^3 … 10^12); `KiB`, `MiB`, `GiB`, `TiB` = binary (2^10 … 2^40); bits as `bit`, `kbit`,
/// `Mbit`, `Gbit`, `Tbit` or `b`, `kb`, `Mb`, `Gb`, `Tb` (decimal); `pages` (or `page`).
/// Examples: `200MB/s`, `1.5GB/s`, `64MiB/s`, `800Mbit/s`, `100Mb/s`, `50000pages/s`. A capital
/// `B` is a byte and a small `b` a bit; `mb/s`, `gb/s` and `tb/s` are refused as ambiguous.
/// At most `maximumBytesPerSecond` (10^15 bytes/s) or `maximumPagesPerSecond` (10^11 pages/s),
/// so that every rate stays finite once converted.
public struct Rate: Equatable, Sendable, CustomStringConvertible {
    public enum Unit: Equatable, Sendable {
        case bytes, pages
    }

    /// Amount per second, in `unit`s.
    public var value: Double
    public var unit: Unit

    public init(bytesPerSecond: Double) {
        value = bytesPerSecond
        unit = .bytes
    }

    public init(pagesPerSecond: Double) {
        value = pagesPerSecond
        unit = .pages
    }

    /// Pages per second for a guest with pages of `pageSize` bytes (each vCPU step dirties one page).
    public func pagesPerSecond(pageSize: Int) -> Double {
        unit == .pages ? value : value / Double(pageSize)
    }

    /// Bytes per second for a guest with pages of `pageSize` bytes.
    public func bytesPerSecond(pageSize: Int) -> Double {
        unit == .bytes ? value : value * Double(pageSize)
    }

    public var description: String {
        switch unit {
        case .pages:
            return "\(formatNumber(value))pages/s"
        case .bytes:
            for (name, multiple) in Self.byteUnits where name != "B" && value >= multiple {
                let scaled = value / multiple
                if scaled == scaled.rounded(), scaled * multiple == value, scaled < 1e15 {
                    return "\(Int64(scaled))\(name)/s"
                }
            }
            return "\(formatNumber(value))B/s"
        }
    }

    /// Byte units, in the order `description` prefers them.
    static let byteUnits: [(String, Double)] = [
        ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3),
        ("TiB", 0x1p40), ("GiB", 0x1p30), ("MiB", 0x1p20), ("KiB", 0x1p10), ("B", 1),
    ]

    public static let maximumBytesPerSecond = 1e15
    public static let maximumPagesPerSecond = 1e11

    public static func parse(_ s: String) throws(GuestError) -> Rate {
        let expected =
            "expected a positive number, a unit and /s, e.g. 200MB/s, 1.5GB/s, 64MiB/s, 800Mbit/s or 50000pages/s (MB = 10^6 bytes, MiB = 2^20 bytes, Mbit = Mb = 10^6 bits)"
        let text = s.trimmingSpaces
        guard text.lowercased().hasSuffix("/s") else {
            throw GuestError(.invalidRate, "rate '\(s)': missing '/s'; \(expected)")
        }
        let split = text.dropLast(2).splitNumber
        guard let value = Double(split.number), value.isFinite, value > 0 else {
            throw GuestError(.invalidRate, "rate '\(s)': '\(split.number)' is not a positive number; \(expected)")
        }
        let tooFast = "rate '\(s)': more than 10^15 bytes/s (1 PB/s) or 10^11 pages/s; \(expected)"
        let bytesPerUnit: Double
        switch try unitSize(split.unit, rate: s, expected: expected) {
        case .pages:
            guard value <= maximumPagesPerSecond else { throw GuestError(.invalidRate, tooFast) }
            return Rate(pagesPerSecond: value)
        case .bytes(let size):
            bytesPerUnit = size
        }
        guard value * bytesPerUnit <= maximumBytesPerSecond else { throw GuestError(.invalidRate, tooFast) }
        return Rate(bytesPerSecond: value * bytesPerUnit)
    }

    private enum UnitSize {
        case pages
        case bytes(Double)
    }

    /// What one `unit` is. Pages: `pages`, `page`. Bytes end in a capital `B` (`kB`, `KB`, `MB`,
    /// `MiB`, …; the prefix's case does not matter). Bits are `bit` or `bits` after an optional
    /// decimal prefix (`kbit`, `Mbit`, `Gbit`, `Tbit`), or a lower-case `b` after `k`, `K`, `M`,
    /// `G` or `T` (`100Mb/s` is 100 megabits, as network links are rated). `mb`, `gb` and `tb`
    /// could mean either, so they are refused with both readings.
    private static func unitSize(_ unit: String, rate: String, expected: String) throws(GuestError) -> UnitSize {
        let lower = unit.lowercased()
        if lower == "pages" || lower == "page" { return .pages }
        let decimal: [String: Double] = ["": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12]
        for suffix in ["bits", "bit"] where lower.hasSuffix(suffix) {
            if let multiple = decimal[String(lower.dropLast(suffix.count))] { return .bytes(multiple / 8) }
        }
        if unit.hasSuffix("B"), let multiple = byteUnits.first(where: { $0.0.lowercased() == lower })?.1 {
            return .bytes(multiple)
        }
        if unit.hasSuffix("b") {
            let prefix = String(unit.dropLast())
            if ["", "k", "K", "M", "G", "T"].contains(prefix), let multiple = decimal[prefix.lowercased()] {
                return .bytes(multiple / 8)
            }
            let powers = ["m": "10^6", "g": "10^9", "t": "10^12"]
            if let power = powers[prefix.lowercased()] {
                let upper = prefix.uppercased()
                throw GuestError(
                    .invalidRate,
                    "rate '\(rate)': '\(unit)' could mean bytes or bits: write \(upper)B/s for \(power) bytes or \(upper)bit/s (or \(upper)b/s) for \(power) bits per second"
                )
            }
        }
        throw GuestError(.invalidRate, "rate '\(rate)': unknown unit '\(unit)'; \(expected)")
    }
}
