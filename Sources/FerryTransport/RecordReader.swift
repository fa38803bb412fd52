import FerryProtocol
import Glibc

/// The receiving half of the record layer (Protocol.md 9.3): reads one sealed record at a time
/// into its buffer, checks its length before reading it, opens it there (in place) with this
/// direction's key, and hands out the plaintext only once the tag authenticated it. A record that does not open, or a read that stops inside a record, fails this
/// reader for good; a receive timeout before a record's first byte does not.
///
/// Used by one receiving thread (like `FramedConnection`'s receive side).
final class RecordReader {
    private let stream: TCPStream
    private let key: RecordKey
    /// ciphertext ‖ tag of the record being read; after opening, its plaintext.
    private let record = UnsafeMutableRawPointer.allocate(
        byteCount: RecordKey.maxRecordPayload + RecordKey.tagSize, alignment: 16)
    /// Plaintext bytes of the current record, and how many were handed out.
    private var plain = 0
    private var offset = 0
    private var failure: TransportError?
    private let header = UnsafeMutableRawPointer.allocate(byteCount: RecordKey.headerSize, alignment: 4)

    init(stream: TCPStream, key: RecordKey) {
        self.stream = stream
        self.key = key
    }

    deinit {
        header.deallocate()
        record.deallocate()
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
        if offset == plain { try nextRecord() }
        let moved = min(count, plain - offset)
        target.copyMemory(from: record + offset, byteCount: moved)
        offset += moved
        received += moved
    }

    private func nextRecord() throws(TransportError) {
        if let failure { throw failure }
        var got = 0
        do {
            try stream.readExactly(
                into: UnsafeMutableRawBufferPointer(start: header, count: RecordKey.headerSize), received: &got)
        } catch {
            if error.code == .timeout && got == 0 { throw error }  // between records: still in step
            throw fail(error)
        }
        let length = Int(UInt32(littleEndian: header.load(as: UInt32.self)))
        guard (1...RecordKey.maxRecordPayload).contains(length) else {
            throw fail(
                TransportError(
                    .decryption,
                    "decryption failed: record #\(key.counter) from \(stream.peerDescription) claims \(length) bytes (allowed 1…\(RecordKey.maxRecordPayload)): the data was altered in flight, or the peer does not encrypt"
                ))
        }
        var body = 0
        do {
            try stream.readExactly(
                into: UnsafeMutableRawBufferPointer(start: record, count: length + RecordKey.tagSize), received: &body)
        } catch {
            throw fail(
                TransportError(
                    error.code,
                    "\(error.message) inside an encrypted record (\(body) of \(length + RecordKey.tagSize) bytes)"))
        }
        do {
            try key.begin(header: UnsafeRawBufferPointer(start: header, count: RecordKey.headerSize))
            try key.process(from: record, to: record, count: length)
            try key.open(tag: record + length)
        } catch {
            plain = 0
            throw fail(TransportError(error.code, "\(error.message) (from \(stream.peerDescription), \(key.cipher))"))
        }
        plain = length
        offset = 0
    }

    private func fail(_ error: TransportError) -> TransportError {
        failure = error
        return error
    }
}
