import FerryProtocol
import Foundation
import Glibc

/// The receiving half of the record layer (Protocol.md 9.3): reads one sealed record at a time,
/// checks its length before reading it, opens it with this direction's key and hands out its
/// plaintext. A record that does not open, or a read that stops inside a record, fails this
/// reader for good; a receive timeout before a record's first byte does not.
///
/// Used by one receiving thread (like `FramedConnection`'s receive side).
final class RecordReader {
    private let stream: TCPStream
    private var key: RecordKey
    /// nonce slot (12 bytes) ‖ ciphertext ‖ tag of the record being read.
    private var sealed = Data(count: RecordKey.nonceSize + RecordKey.maxRecordPayload + RecordKey.tagSize)
    private var plain = Data()
    private var offset = 0
    private var failure: TransportError?
    private let header = UnsafeMutableRawPointer.allocate(byteCount: RecordKey.headerSize, alignment: 4)

    init(stream: TCPStream, key: RecordKey) {
        self.stream = stream
        self.key = key
    }

    deinit {
        header.deallocate()
    }

    var cipher: RecordCipher { key.cipher }

    /// Fills `buffer`; `received` counts the bytes delivered before a failure.
    func read(into buffer: UnsafeMutableRawBufferPointer, received: inout Int) throws(TransportError) {
        guard let base = buffer.baseAddress else { return }
        while received < buffer.count {
            try take(into: base + received, count: buffer.count - received, received: &received)
        }
    }

    /// Fills every byte the vectors describe, advancing them in place.
    func read(vectors: UnsafeMutableBufferPointer<iovec>, received: inout Int) throws(TransportError) {
        for index in vectors.indices {
            while vectors[index].iov_len > 0 {
                let before = received
                try take(into: vectors[index].iov_base!, count: vectors[index].iov_len, received: &received)
                let moved = received - before
                vectors[index].iov_base += moved
                vectors[index].iov_len -= moved
            }
        }
    }

    /// Copies up to `count` bytes of plaintext to `target`, opening the next record first if the
    /// current one is used up.
    private func take(into target: UnsafeMutableRawPointer, count: Int, received: inout Int) throws(TransportError) {
        if offset == plain.count { try nextRecord() }
        let moved = min(count, plain.count - offset)
        plain.withUnsafeBytes { target.copyMemory(from: $0.baseAddress! + offset, byteCount: moved) }
        offset += moved
        received += moved
    }

    private func nextRecord() throws(TransportError) {
        if let failure { throw failure }
        var got = 0
        do {
            try stream.readExactly(into: UnsafeMutableRawBufferPointer(start: header, count: RecordKey.headerSize), received: &got)
        } catch {
            if error.code == .timeout && got == 0 { throw error }  // between records: still in step
            throw fail(error)
        }
        let length = Int(UInt32(littleEndian: header.load(as: UInt32.self)))
        guard (1...RecordKey.maxRecordPayload).contains(length) else {
            throw fail(TransportError(.decryption,
                "decryption failed: record #\(key.counter) from \(stream.peerDescription) claims \(length) bytes (allowed 1…\(RecordKey.maxRecordPayload)): the data was altered in flight, or the peer does not encrypt"))
        }
        let total = RecordKey.nonceSize + length + RecordKey.tagSize
        sealed.count = total
        let stream = self.stream
        let readFailure: TransportError? = sealed.withUnsafeMutableBytes { bytes in
            var body = 0
            do throws(TransportError) {
                try stream.readExactly(into: UnsafeMutableRawBufferPointer(rebasing: bytes[RecordKey.nonceSize...]), received: &body)
                return nil
            } catch {
                return TransportError(error.code, "\(error.message) inside an encrypted record (\(body) of \(length + RecordKey.tagSize) bytes)")
            }
        }
        if let readFailure { throw fail(readFailure) }
        do {
            plain = try key.open(&sealed, header: UnsafeRawBufferPointer(start: header, count: RecordKey.headerSize))
        } catch {
            throw fail(TransportError(error.code, "\(error.message) (from \(stream.peerDescription), \(key.cipher))"))
        }
        offset = 0
    }

    private func fail(_ error: TransportError) -> TransportError {
        failure = error
        return error
    }
}
