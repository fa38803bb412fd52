/// Little-endian appenders used by the message encoders. Encoding grows a plain `[UInt8]`;
/// it is not on the page hot path (`PageBatchWriter` is).
extension Array where Element == UInt8 {
    @inline(__always)
    mutating func appendLittleEndian<T: FixedWidthInteger>(_ value: T) {
        var v = value.littleEndian
        Swift.withUnsafeBytes(of: &v) { append(contentsOf: $0) }
    }

    mutating func appendZeros(_ count: Int) {
        append(contentsOf: repeatElement(0, count: count))
    }

    /// Appends a `str16`: 2-byte length, then the UTF-8 bytes. The caller has checked the limit.
    mutating func appendStr16(_ string: String) {
        var string = string
        string.withUTF8 { utf8 in
            precondition(utf8.count <= Int(UInt16.max), "str16 of \(utf8.count) bytes")
            appendLittleEndian(UInt16(utf8.count))
            append(contentsOf: utf8)
        }
    }
}

extension String {
    /// This string cut to at most `limit` UTF-8 bytes on a Unicode scalar boundary: for the
    /// human-readable fields (names, messages, notes), whose limits a sender should not trap on.
    func truncatedUTF8(to limit: Int) -> String {
        if utf8.count <= limit { return self }
        var scalars = String.UnicodeScalarView()
        var used = 0
        for scalar in unicodeScalars {
            let width = UTF8.width(scalar)
            if used + width > limit { break }
            used += width
            scalars.append(scalar)
        }
        return String(scalars)
    }
}
