/// `GUEST_ATTACHMENT` (source → destination, control connection, type 24): one chunk of the guest
/// kind's opaque attachment, whose length and XXH3-64 `GUEST_CONFIG` announced (Protocol.md 3.25).
/// The chunks follow `GUEST_CONFIG` in order and back to back; all but the last hold exactly
/// `maxChunk` bytes.
public struct GuestAttachmentChunk: FrameMessage, ValidatingMessage, Equatable {
    public static let frameType = FrameType.guestAttachment
    /// Bytes in every chunk but the last (1 MiB).
    public static let maxChunk = 1 << 20

    /// Where in the attachment this chunk starts.
    public var offset: UInt64
    /// 1 … `maxChunk` bytes.
    public var bytes: [UInt8]

    public init(offset: UInt64, bytes: [UInt8]) {
        self.offset = offset
        self.bytes = bytes
    }

    public func validate() throws(ProtocolError) {
        if bytes.isEmpty || bytes.count > Self.maxChunk {
            throw invalid("GUEST_ATTACHMENT", "a chunk of \(bytes.count) bytes; chunks hold 1…\(Self.maxChunk)")
        }
    }

    public func encode(into out: inout [UInt8]) {
        requireValid()
        out.reserveCapacity(out.count + 8 + bytes.count)
        out.appendLittleEndian(offset)
        out.append(contentsOf: bytes)
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "GUEST_ATTACHMENT")
        offset = try reader.read(UInt64.self, "offset")
        bytes = try reader.readBytes(reader.remaining, "bytes")
        try validate()
    }

    /// Checks that a chunk of `count` bytes at `offset` is the next one of an attachment of
    /// `length` bytes of which `received` have arrived.
    public static func checkNext(offset: UInt64, count: Int, received: UInt64, length: UInt64)
        throws(ProtocolError)
    {
        if offset != received {
            throw invalid("GUEST_ATTACHMENT", "a chunk at offset \(offset); the next one starts at \(received)")
        }
        let end = received + UInt64(count)
        if end > length {
            throw invalid(
                "GUEST_ATTACHMENT", "a chunk ending at \(end), past the attachment's \(length) bytes (GUEST_CONFIG)")
        }
        if count != maxChunk && end != length {
            throw invalid(
                "GUEST_ATTACHMENT", "a chunk of \(count) bytes that is not the last; all but the last hold \(maxChunk)")
        }
    }
}
