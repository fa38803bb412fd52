/// Cuts a byte stream into frames (Protocol.md section 2) for tests, fuzzing and simple readers:
/// a buffer that feeds `FrameCursor`, the state machine `FramedConnection` runs in production
/// (so what the fuzz tests exercise is what checks a peer's headers).
///
/// It validates each header as soon as its 16 bytes are in (type, flags, length against the
/// type's maximum and `maxPayload`, sequence continuity from `firstSequence`), before any payload
/// byte is looked at, and skips unknown optional frames, whose payload it discards as it arrives
/// (they still use a sequence number). After an error every later `next()` throws the same error.
///
/// Memory: it holds only bytes given to `append` and not yet returned. A reader that appends at
/// most `bytesNeeded` bytes at a time never holds more than one header and one maximum payload;
/// one that calls `next()` until nil after each append holds at most that plus one append.
public struct FrameDecoder: Sendable {
    private var buffer: [UInt8] = []
    private var readIndex = 0
    private var cursor: FrameCursor

    public init(firstSequence: UInt64 = 0, maxPayload: Int = ProtocolLimits.maxFramePayload) {
        cursor = FrameCursor(firstSequence: firstSequence, maxPayload: maxPayload)
    }

    /// The sequence number the next header must carry.
    public var expectedSequence: UInt64 { cursor.expectedSequence }

    /// Bytes held and not yet returned as frames.
    public var bufferedByteCount: Int { buffer.count - readIndex }

    /// Bytes that would complete the next header, or the payload in progress (at least 1).
    public var bytesNeeded: Int {
        switch cursor.expecting {
        case .skip(let remaining): return remaining
        case .payload(let remaining): return max(1, remaining - bufferedByteCount)
        case .header: return max(1, FrameHeader.size - bufferedByteCount)
        }
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
        if let failure = cursor.failure { throw failure }
        while true {
            switch cursor.expecting {
            case .skip(let remaining):
                // Unknown optional frame: drop its payload as it arrives.
                let discard = min(remaining, bufferedByteCount)
                readIndex += discard
                cursor.consume(discard)
                if discard < remaining { return nil }
            case .payload(let remaining):
                guard bufferedByteCount >= remaining else { return nil }
                return takeFrame(cursor.current!)
            case .header:
                guard bufferedByteCount >= FrameHeader.size else { return nil }
                let start = readIndex
                let header = try cursor.accept(
                    buffer.withUnsafeBytes { bytes in
                        FrameHeader(unvalidated: UnsafeRawBufferPointer(rebasing: bytes[start...]))
                    })
                readIndex += FrameHeader.size
                if header.length == 0 && header.frameType != nil { return takeFrame(header) }
            }
        }
    }

    /// Returns `header`'s frame, whose payload (`cursor.remaining` bytes) is buffered.
    private mutating func takeFrame(_ header: FrameHeader) -> Frame {
        let length = cursor.remaining
        let payload = Array(buffer[readIndex..<(readIndex + length)])
        readIndex += length
        cursor.consume(length)
        return Frame(header: header, payload: payload)
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
