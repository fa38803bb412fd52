/// One entry descriptor of a `PAGE_BATCH` table (Protocol.md 3.5), checked.
public struct PageDescriptor: Equatable, Sendable {
    public var page: UInt64
    /// XXH3-64 (seed 0) of the decoded page.
    public var hash: UInt64
    public var encoding: PageEncoding
    /// Payload bytes of this entry.
    public var length: Int

    public init(page: UInt64, hash: UInt64, encoding: PageEncoding, length: Int) {
        self.page = page
        self.hash = hash
        self.encoding = encoding
        self.length = length
    }
}

/// The checks of a `PAGE_BATCH` (Protocol.md 3.5) shared by the contiguous reader
/// (`PageBatchReader`) and a receiver that reads the table first and the payloads straight into
/// place: the batch header against the frame's payload length, then each descriptor.
public enum PageBatchLayout {
    /// Bytes of the header plus a table of `count` descriptors.
    @inline(__always)
    public static func tableEnd(count: Int) -> Int {
        PageBatchWriter.headerSize + count * PageBatchWriter.descriptorSize
    }

    /// Reads the 8-byte batch header (`header.count` ≥ 8) of a payload of `payloadLength` bytes;
    /// checks the entry count and that its table fits.
    public static func header(_ header: UnsafeRawBufferPointer, payloadLength: Int) throws(ProtocolError) -> (
        round: UInt32, count: Int
    ) {
        guard payloadLength >= PageBatchWriter.headerSize, header.count >= PageBatchWriter.headerSize else {
            throw ProtocolError(.truncated, "PAGE_BATCH payload of \(payloadLength) bytes has no 8-byte batch header")
        }
        let count = UInt32(littleEndian: header.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        if count == 0 {
            throw ProtocolError(.invalidField, "PAGE_BATCH count is 0")
        }
        if count > UInt32(ProtocolLimits.maxEntriesPerBatch) {
            throw ProtocolError(.tooLarge, "PAGE_BATCH count \(count) exceeds \(ProtocolLimits.maxEntriesPerBatch)")
        }
        if tableEnd(count: Int(count)) > payloadLength {
            throw ProtocolError(
                .truncated,
                "PAGE_BATCH of \(payloadLength) bytes is too short for its table of \(count) entry descriptors")
        }
        return (UInt32(littleEndian: header.loadUnaligned(fromByteOffset: 0, as: UInt32.self)), Int(count))
    }

    /// Decodes and checks descriptor `index` at `bytes` (24 bytes): page in range, known
    /// encoding, reserved bytes zero, a length the encoding allows.
    @inline(__always)
    public static func descriptor(
        at bytes: UnsafeRawPointer, index: Int, pageSize: Int,
        pageCount: UInt64
    ) throws(ProtocolError) -> PageDescriptor {
        let page = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        let hash = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        let length = Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 16, as: UInt32.self)))
        let tail = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 20, as: UInt32.self))
        if page >= pageCount { throw badPage(page, index: index, pageCount: pageCount) }
        guard tail >> 8 == 0, let encoding = PageEncoding(rawValue: UInt8(truncatingIfNeeded: tail)) else {
            throw badTail(tail, index: index)
        }
        if !encoding.allowsLength(length, pageSize: pageSize) {
            throw badLength(length, encoding, index: index, pageSize: pageSize)
        }
        return PageDescriptor(page: page, hash: hash, encoding: encoding, length: length)
    }

    /// The payloads of a batch whose table says `payloadBytes` in all must fill the rest of the
    /// frame exactly.
    public static func checkPayloadTotal(_ payloadBytes: Int, count: Int, payloadLength: Int) throws(ProtocolError) {
        let available = payloadLength - tableEnd(count: count)
        if payloadBytes > available {
            throw ProtocolError(
                .truncated,
                "PAGE_BATCH entries announce \(payloadBytes) payload bytes; the frame has \(available) after its table")
        }
        if payloadBytes < available {
            throw ProtocolError(
                .trailingBytes,
                "PAGE_BATCH has \(available - payloadBytes) bytes after the payloads of its \(count) entries")
        }
    }

    // Errors are built out of line so the checks stay small.

    @inline(never)
    static func badPage(_ page: UInt64, index: Int, pageCount: UInt64) -> ProtocolError {
        ProtocolError(.invalidField, "PAGE_BATCH entry \(index): page \(page) is beyond the image's \(pageCount) pages")
    }

    @inline(never)
    static func badTail(_ tail: UInt32, index: Int) -> ProtocolError {
        if tail >> 8 != 0 {
            return ProtocolError(.invalidField, "PAGE_BATCH entry \(index): reserved bytes are not zero")
        }
        return ProtocolError(.invalidField, "PAGE_BATCH entry \(index): unknown encoding \(tail)")
    }

    @inline(never)
    static func badLength(_ length: Int, _ encoding: PageEncoding, index: Int, pageSize: Int) -> ProtocolError {
        let rule: String
        switch encoding {
        case .zero: rule = "must be 0"
        case .raw: rule = "must be the page size \(pageSize)"
        case .lz4: rule = "must be between 1 and \(pageSize - 1)"
        case .words: rule = "must be a non-zero multiple of 10 below \(pageSize)"
        }
        return ProtocolError(
            .invalidField,
            "PAGE_BATCH entry \(index): \(encoding) payload of \(length) bytes \(rule)")
    }
}

/// One page of a `PAGE_BATCH` read from a contiguous payload. `payload` points into it.
public struct PageEntry {
    public var page: UInt64
    /// XXH3-64 (seed 0) of the decoded page.
    public var hash: UInt64
    public var encoding: PageEncoding
    public var payload: UnsafeRawBufferPointer

    public init(page: UInt64, hash: UInt64, encoding: PageEncoding, payload: UnsafeRawBufferPointer) {
        self.page = page
        self.hash = hash
        self.encoding = encoding
        self.payload = payload
    }
}

/// Walks a whole `PAGE_BATCH` payload held in memory (Protocol.md 3.5) without copying or
/// allocating, checking every descriptor against the bytes that remain before using it.
/// (The destination's data path reads the table first and the payloads straight into guest
/// memory; it uses `PageBatchLayout` directly, and checks that no page appears twice, which
/// needs a bitmap of the image.)
///
/// Not `Sendable`: it reads through a raw pointer it does not own.
public struct PageBatchReader {
    private let payload: UnsafeRawBufferPointer
    private let pageSize: Int
    private let pageCount: UInt64
    public let round: UInt32
    /// Entries in the batch, 1…4096.
    public let count: Int
    private var index = 0
    /// Where the next entry's payload starts.
    private var offset: Int

    /// Reads the batch header and checks that the table fits. `pageSize` and `pageCount` are
    /// the session's (from `HELLO`).
    public init(payload: UnsafeRawBufferPointer, pageSize: Int, pageCount: UInt64) throws(ProtocolError) {
        precondition(pageSize > 0, "page size must be positive")
        let (round, count) = try PageBatchLayout.header(payload, payloadLength: payload.count)
        self.payload = payload
        self.pageSize = pageSize
        self.pageCount = pageCount
        self.round = round
        self.count = count
        self.offset = PageBatchLayout.tableEnd(count: count)
    }

    /// The next entry, or nil after the last one (when the payloads must have consumed the
    /// rest of the batch exactly).
    public mutating func next() throws(ProtocolError) -> PageEntry? {
        if index == count {
            if offset != payload.count {
                throw ProtocolError(
                    .trailingBytes,
                    "PAGE_BATCH has \(payload.count - offset) bytes after the payloads of its \(count) entries")
            }
            return nil
        }
        let descriptor = try PageBatchLayout.descriptor(
            at: payload.baseAddress! + PageBatchLayout.tableEnd(count: index), index: index,
            pageSize: pageSize, pageCount: pageCount)
        let remaining = payload.count - offset
        if descriptor.length > remaining {
            throw ProtocolError(
                .truncated,
                "PAGE_BATCH entry \(index) at byte \(offset) needs \(descriptor.length) payload bytes, \(remaining) left"
            )
        }
        let entry = PageEntry(
            page: descriptor.page, hash: descriptor.hash, encoding: descriptor.encoding,
            payload: UnsafeRawBufferPointer(start: payload.baseAddress! + offset, count: descriptor.length))
        offset += descriptor.length
        index += 1
        return entry
    }
}
