import FerryProtocol
import Glibc

/// The sending half of the record layer (Protocol.md 9.3): cuts what it is given into records
/// of at most 64 KiB (`RecordKey.sealedRecordPayload`), encrypting each straight from the
/// caller's buffers into its own (the encryption is the only copy), and writes
/// `length (u32 LE) ‖ ciphertext ‖ tag` with one `sendmsg`. Every `write` ends with a complete
/// record, so a frame never waits in the buffer.
///
/// Used by one sending thread (like `FramedConnection`'s send side).
final class RecordWriter {
    private let stream: TCPStream
    private let key: RecordKey
    /// header ‖ ciphertext ‖ tag of the record being sealed.
    private let buffer: UnsafeMutableRawPointer

    init(stream: TCPStream, key: RecordKey) {
        self.stream = stream
        self.key = key
        self.buffer = UnsafeMutableRawPointer.allocate(
            byteCount: RecordKey.headerSize + RecordKey.sealedRecordPayload + RecordKey.tagSize, alignment: 16)
    }

    deinit {
        buffer.deallocate()
    }

    var cipher: RecordCipher { key.cipher }
    /// Records sealed so far.
    var records: UInt64 { key.counter }

    /// Seals and writes all parts, in order, as one or more records.
    func write(_ parts: some Collection<UnsafeRawBufferPointer>) throws(TransportError) {
        var left = parts.reduce(0) { $0 + $1.count }
        var part = parts.startIndex
        var offset = 0
        while left > 0 {
            // The length is the record's associated data, so it is fixed before encrypting.
            let length = min(left, RecordKey.sealedRecordPayload)
            buffer.storeBytes(of: UInt32(length).littleEndian, as: UInt32.self)
            try key.begin(header: UnsafeRawBufferPointer(start: buffer, count: RecordKey.headerSize))
            var filled = 0
            while filled < length {
                let current = parts[part]
                let chunk = min(length - filled, current.count - offset)
                if chunk > 0 {
                    try key.process(
                        from: current.baseAddress! + offset, to: buffer + RecordKey.headerSize + filled, count: chunk)
                    filled += chunk
                    offset += chunk
                }
                if offset == current.count {
                    part = parts.index(after: part)
                    offset = 0
                }
            }
            try key.seal(tag: buffer + RecordKey.headerSize + length)
            try stream.writeAll(
                UnsafeRawBufferPointer(start: buffer, count: RecordKey.headerSize + length + RecordKey.tagSize))
            left -= length
        }
    }
}
