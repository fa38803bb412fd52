/// Cuts a byte stream into frames (Protocol.md section 2) for tests, fuzzing and simple readers.
///
/// It validates each header as soon as its 16 bytes are in (type, flags, length against the
/// type's maximum, sequence continuity from `firstSequence`), before any payload byte is looked
/// at, and skips unknown optional frames, whose payload it discards as it arrives (they still use
/// a sequence number). After an error every later `next()` throws the same error.
///
/// Memory: it holds only bytes given to `append` and not yet returned. A reader that appends at
/// most `bytesNeeded` bytes at a time never holds more than one header and one maximum payload;
/// one that calls `next()` until nil after each append holds at most that plus one append.
public struct FrameDecoder: Sendable {
    private var buffer: [UInt8] = []
    private var readIndex = 0
    /// The header of the frame whose payload is still arriving.
    private var pending: FrameHeader?
    /// Payload bytes of a skipped (unknown optional) frame still to discard.
    private var skipping = 0
    private var failure: ProtocolError?
    /// The sequence number the next header must carry.
    public private(set) var expectedSequence: UInt64

    public init(firstSequence: UInt64 = 0) {
        expectedSequence = firstSequence
    }

    /// Bytes held and not yet returned as frames.
    public var bufferedByteCount: Int { buffer.count - readIndex }

    /// Bytes that would complete the next header, or the payload in progress (at least 1).
    public var bytesNeeded: Int {
        let available = bufferedByteCount
        if skipping > 0 { return skipping }
        if let pending { return max(1, Int(pending.length) - available) }
        return max(1, FrameHeader.size - available)
    }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        compact()
        buffer.append(contentsOf: bytes)
    }

    public mutating func append(contentsOf bytes: [UInt8]) {
        compact()
        buffer.append(contentsOf: bytes)
    }

    /// The next complete frame, nil when more bytes are needed; throws on a malformed stream.
    public mutating func next() throws(ProtocolError) -> Frame? {
        if let failure { throw failure }
        switch decodeNext() {
        case .success(let frame):
            return frame
        case .failure(let error):
            failure = error
            throw error
        }
    }

    // Returns errors rather than throwing them, so each error is thrown once (by `next()`).
    private mutating func decodeNext() -> Result<Frame?, ProtocolError> {
        while true {
            if skipping > 0 {
                let discard = min(skipping, bufferedByteCount)
                readIndex += discard
                skipping -= discard
                if skipping > 0 { return .success(nil) }
            }
            if pending == nil {
                guard bufferedByteCount >= FrameHeader.size else { return .success(nil) }
                let header = buffer.withUnsafeBytes { bytes in
                    FrameHeader(unvalidated: UnsafeRawBufferPointer(rebasing: bytes[readIndex...]))
                }
                if let error = header.validationError() { return .failure(error) }
                if header.sequence != expectedSequence {
                    return .failure(ProtocolError(.sequence,
                        "frame type \(header.type) has sequence \(header.sequence), expected \(expectedSequence) (lost, duplicated or reordered frame)"))
                }
                expectedSequence &+= 1
                readIndex += FrameHeader.size
                if header.frameType == nil {
                    // Unknown optional frame: drop its payload as it arrives.
                    skipping = Int(header.length)
                    continue
                }
                pending = header
            }
            guard let header = pending else { continue }
            let length = Int(header.length)
            guard bufferedByteCount >= length else { return .success(nil) }
            let payload = Array(buffer[readIndex..<(readIndex + length)])
            readIndex += length
            pending = nil
            return .success(Frame(header: header, payload: payload))
        }
    }

    /// Drops returned bytes from the front of the buffer. What remains is less than one append
    /// (bytes after the last frame returned), so this costs at most the size of an append.
    private mutating func compact() {
        if readIndex == 0 { return }
        if readIndex == buffer.count {
            buffer.removeAll(keepingCapacity: buffer.capacity <= 1 << 20)
        } else {
            buffer.removeSubrange(0..<readIndex)
        }
        readIndex = 0
    }
}
