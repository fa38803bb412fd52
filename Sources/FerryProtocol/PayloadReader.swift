/// A bounds-checked little-endian cursor over a hostile payload. Every read checks the bytes that
/// remain first; errors name the message and the field.
struct PayloadReader {
    let bytes: UnsafeRawBufferPointer
    /// The message's name (`FrameType.wireName`), for errors.
    let message: String
    private(set) var offset = 0

    init(_ bytes: UnsafeRawBufferPointer, message: String) {
        self.bytes = bytes
        self.message = message
    }

    var remaining: Int { bytes.count - offset }

    private func need(_ count: Int, _ field: StaticString) throws(ProtocolError) {
        if count > remaining {
            throw ProtocolError(
                .truncated,
                "\(message) payload ends inside '\(field)' at byte \(offset): needs \(count) bytes, \(remaining) left")
        }
    }

    mutating func read<T: FixedWidthInteger & BitwiseCopyable>(
        _: T.Type, _ field: StaticString
    ) throws(ProtocolError) -> T {
        let size = MemoryLayout<T>.size
        try need(size, field)
        let value = T(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
        offset += size
        return value
    }

    mutating func readBytes(_ count: Int, _ field: StaticString) throws(ProtocolError) -> [UInt8] {
        try need(count, field)
        let slice = UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + count)])
        offset += count
        return [UInt8](slice)
    }

    /// Skips `count` reserved bytes, which must be zero.
    mutating func reserved(_ count: Int, _ field: StaticString = "reserved") throws(ProtocolError) {
        try need(count, field)
        let start = offset
        for i in start..<(start + count) where bytes[i] != 0 {
            throw ProtocolError(
                .invalidField,
                "\(message) reserved byte at offset \(i) is 0x\(String(bytes[i], radix: 16)), must be 0")
        }
        offset += count
    }

    /// Reads a `str16` of at most `limit` bytes that must be valid UTF-8.
    mutating func str16(_ field: StaticString, limit: Int) throws(ProtocolError) -> String {
        let length = Int(try read(UInt16.self, field))
        if length > limit {
            throw ProtocolError(.tooLarge, "\(message) '\(field)' is \(length) bytes, the limit is \(limit)")
        }
        try need(length, field)
        let slice = UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + length)])
        guard let string = String(validating: slice, as: UTF8.self) else {
            throw ProtocolError(.invalidField, "\(message) '\(field)' is not valid UTF-8")
        }
        offset += length
        return string
    }

    /// Version 1 payloads have no bytes after their defined fields.
    func finish() throws(ProtocolError) {
        if remaining != 0 {
            throw ProtocolError(
                .trailingBytes,
                "\(message) payload has \(remaining) bytes after its last field (at byte \(offset))")
        }
    }
}

@inline(__always)
func invalid(_ message: StaticString, _ text: String) -> ProtocolError {
    ProtocolError(.invalidField, "\(message) \(text)")
}

extension Array where Element == UInt8 {
    /// `withUnsafeBytes` for bodies that throw `ProtocolError`: the standard one is untyped
    /// `rethrows` and would box the error into `any Error`; `withUnsafeBufferPointer` has typed throws.
    @inline(__always)
    func withUnsafeBytesTyped<T>(_ body: (UnsafeRawBufferPointer) throws(ProtocolError) -> T) throws(ProtocolError) -> T
    {
        try withUnsafeBufferPointer { (buffer) throws(ProtocolError) in try body(UnsafeRawBufferPointer(buffer)) }
    }
}
