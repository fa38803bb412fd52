/// Parses a byte count: a decimal number with an optional unit.
///
/// Units: none or `B` = bytes; `K`, `M`, `G`, `T` and `KiB`, `MiB`, `GiB`, `TiB` = binary
/// multiples (2^10, 2^20, 2^30, 2^40); `KB`, `MB`, `GB`, `TB` = decimal multiples (10^3 … 10^12),
/// as in rates. Units are case-insensitive. A fraction is allowed when the result is a whole
/// number of bytes: `1.5G` = 1,610,612,736. Examples: `4096`, `512M`, `2GiB`, `1.5G`.
public func parseByteSize(_ s: String) throws(GuestError) -> Int {
    let text = s.trimmingSpaces
    let split = text.splitNumber
    guard let number = ExactDecimal(split.number) else {
        throw GuestError(
            .invalidSize, "size '\(s)': expected a number with an optional unit, e.g. 4096, 512M, 2GiB, 1.5G")
    }
    guard let multiplier = byteUnitMultiplier(split.unit) else {
        throw GuestError(
            .invalidSize,
            "size '\(s)': unknown unit '\(split.unit)'; expected B, K/M/G/T or KiB/MiB/GiB/TiB (binary) or KB/MB/GB/TB (decimal)"
        )
    }
    guard let bytes = number.times(multiplier) else {
        throw GuestError(.invalidSize, "size '\(s)': not a whole number of bytes, or too large")
    }
    return bytes
}

/// Bytes per unit for the size units `parseByteSize` accepts; nil for an unknown unit.
func byteUnitMultiplier(_ unit: String) -> Int? {
    switch unit.lowercased() {
    case "", "b": 1
    case "k", "kib": 1 << 10
    case "m", "mib": 1 << 20
    case "g", "gib": 1 << 30
    case "t", "tib": 1 << 40
    case "kb": 1_000
    case "mb": 1_000_000
    case "gb": 1_000_000_000
    case "tb": 1_000_000_000_000
    default: nil
    }
}

/// A non-negative decimal number held exactly as `digits / 10^scale`.
struct ExactDecimal {
    var digits: Int
    var scale: Int

    /// Parses `123`, `1.5`, `.5`, `2.`; nil for anything else (signs, exponents, empty).
    init?(_ text: Substring) {
        var digits = 0
        var scale = 0
        var seenPoint = false
        var seenDigit = false
        for byte in text.utf8 {
            if byte == UInt8(ascii: ".") {
                if seenPoint { return nil }
                seenPoint = true
                continue
            }
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            seenDigit = true
            let (m, o1) = digits.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(Int(byte - UInt8(ascii: "0")))
            if o1 || o2 { return nil }
            digits = a
            if seenPoint { scale += 1 }
        }
        guard seenDigit else { return nil }
        self.digits = digits
        self.scale = scale
    }

    /// `self × multiplier` when that is a whole number that fits in `Int`; nil otherwise.
    func times(_ multiplier: Int) -> Int? {
        let (product, overflow) = digits.multipliedReportingOverflow(by: multiplier)
        guard !overflow else { return nil }
        var divisor = 1
        for _ in 0..<scale {
            let (d, o) = divisor.multipliedReportingOverflow(by: 10)
            guard !o else { return nil }
            divisor = d
        }
        guard product % divisor == 0 else { return nil }
        return product / divisor
    }
}

extension String {
    /// The string without leading and trailing spaces and tabs.
    var trimmingSpaces: Substring {
        var sub = self[...]
        while let c = sub.first, c == " " || c == "\t" { sub.removeFirst() }
        while let c = sub.last, c == " " || c == "\t" { sub.removeLast() }
        return sub
    }
}

extension Substring {
    /// Splits `12.5GiB` into the leading number (digits and points) and the rest (the unit).
    var splitNumber: (number: Substring, unit: String) {
        let end = firstIndex { !($0.isASCII && ($0.isNumber || $0 == ".")) } ?? endIndex
        return (self[startIndex..<end], String(self[end...]).trimmingSpaces.description)
    }
}
