import FerryProtocol
import Foundation
import Glibc

/// The sending half of the record layer (Protocol.md 9.3): collects a frame's bytes into records
/// of at most 64 KiB (`RecordKey.sealedRecordPayload`), seals each with this direction's key and writes
/// `length (u32 LE) ‖ ciphertext ‖ tag`. Every `write` ends with a flushed record, so a frame
/// never waits in the buffer.
///
/// Used by one sending thread (like `FramedConnection`'s send side).
final class RecordWriter {
    private let stream: TCPStream
    private var key: RecordKey
    private let buffer: UnsafeMutableRawPointer
    private var filled = 0
    private let header = UnsafeMutableRawPointer.allocate(byteCount: RecordKey.headerSize, alignment: 4)

    init(stream: TCPStream, key: RecordKey) {
        self.stream = stream
        self.key = key
        self.buffer = UnsafeMutableRawPointer.allocate(byteCount: RecordKey.sealedRecordPayload, alignment: 16)
    }

    deinit {
        buffer.deallocate()
        header.deallocate()
    }

    var cipher: RecordCipher { key.cipher }
    /// Records sealed so far.
    var records: UInt64 { key.counter }

    /// Seals and writes all parts, in order, as one or more records.
    func write(_ parts: some Collection<UnsafeRawBufferPointer>) throws(TransportError) {
        for part in parts {
            guard var source = part.baseAddress else { continue }
            var left = part.count
            while left > 0 {
                let chunk = min(left, RecordKey.sealedRecordPayload - filled)
                (buffer + filled).copyMemory(from: source, byteCount: chunk)
                filled += chunk
                source += chunk
                left -= chunk
                if filled == RecordKey.sealedRecordPayload { try sealAndSend() }
            }
        }
        if filled > 0 { try sealAndSend() }
    }

    private func sealAndSend() throws(TransportError) {
        header.storeBytes(of: UInt32(filled).littleEndian, as: UInt32.self)
        let headerBytes = UnsafeRawBufferPointer(start: header, count: RecordKey.headerSize)
        let combined = try key.seal(UnsafeRawBufferPointer(start: buffer, count: filled), header: headerBytes)
        filled = 0
        let failure: TransportError? = combined.withUnsafeBytes { sealed in
            do throws(TransportError) {
                try stream.writeAll(headerBytes, UnsafeRawBufferPointer(rebasing: sealed[RecordKey.nonceSize...]))
                return nil
            } catch {
                return error
            }
        }
        if let failure { throw failure }
    }
}
