/// One page of a `PAGE_BATCH`. `payload` points into the batch payload the reader was given.
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

/// Walks a `PAGE_BATCH` payload (Protocol.md 3.5) without copying or allocating, checking every
/// descriptor against the bytes that remain before using it.
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
    private var offset = PageBatchWriter.headerSize

    /// Reads the batch header. `pageSize` and `pageCount` are the session's (from `HELLO`).
    public init(payload: UnsafeRawBufferPointer, pageSize: Int, pageCount: UInt64) throws(ProtocolError) {
        precondition(pageSize > 0, "page size must be positive")
        guard payload.count >= PageBatchWriter.headerSize else {
            throw ProtocolError(.truncated, "PAGE_BATCH payload of \(payload.count) bytes has no 8-byte batch header")
        }
        let count = UInt32(littleEndian: payload.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        if count == 0 {
            throw ProtocolError(.invalidField, "PAGE_BATCH count is 0")
        }
        if count > UInt32(ProtocolLimits.maxEntriesPerBatch) {
            throw ProtocolError(.tooLarge, "PAGE_BATCH count \(count) exceeds \(ProtocolLimits.maxEntriesPerBatch)")
        }
        if Int(count) * PageBatchWriter.descriptorSize > payload.count - PageBatchWriter.headerSize {
            throw ProtocolError(.truncated,
                "PAGE_BATCH of \(payload.count) bytes is too short for \(count) entry descriptors")
        }
        self.payload = payload
        self.pageSize = pageSize
        self.pageCount = pageCount
        self.round = UInt32(littleEndian: payload.loadUnaligned(fromByteOffset: 0, as: UInt32.self))
        self.count = Int(count)
    }

    /// The next entry, or nil after the last one (when the entries must have consumed the
    /// payload exactly).
    public mutating func next() throws(ProtocolError) -> PageEntry? {
        if index == count {
            if offset != payload.count { throw leftover() }
            return nil
        }
        let remaining = payload.count - offset
        if remaining < PageBatchWriter.descriptorSize { throw truncated(needed: PageBatchWriter.descriptorSize) }
        let descriptor = payload.baseAddress! + offset
        let page = UInt64(littleEndian: descriptor.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        let hash = UInt64(littleEndian: descriptor.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        let length = Int(UInt32(littleEndian: descriptor.loadUnaligned(fromByteOffset: 16, as: UInt32.self)))
        let tail = UInt32(littleEndian: descriptor.loadUnaligned(fromByteOffset: 20, as: UInt32.self))
        if page >= pageCount { throw badPage(page) }
        guard tail >> 8 == 0, let encoding = PageEncoding(rawValue: UInt8(truncatingIfNeeded: tail)) else {
            throw badTail(tail)
        }
        if !encoding.allowsLength(length, pageSize: pageSize) { throw badLength(length, encoding) }
        if length > remaining - PageBatchWriter.descriptorSize {
            throw truncated(needed: PageBatchWriter.descriptorSize + length)
        }
        offset += PageBatchWriter.descriptorSize + length
        index += 1
        return PageEntry(page: page, hash: hash, encoding: encoding,
                         payload: UnsafeRawBufferPointer(start: descriptor + PageBatchWriter.descriptorSize, count: length))
    }

    // Errors are built out of line so `next()` stays small.

    @inline(never)
    private func leftover() -> ProtocolError {
        ProtocolError(.trailingBytes,
            "PAGE_BATCH has \(payload.count - offset) bytes after its \(count) entries")
    }

    @inline(never)
    private func truncated(needed: Int) -> ProtocolError {
        ProtocolError(.truncated,
            "PAGE_BATCH entry \(index) at byte \(offset) needs \(needed) bytes, \(payload.count - offset) left")
    }

    @inline(never)
    private func badPage(_ page: UInt64) -> ProtocolError {
        ProtocolError(.invalidField, "PAGE_BATCH entry \(index): page \(page) is beyond the image's \(pageCount) pages")
    }

    @inline(never)
    private func badTail(_ tail: UInt32) -> ProtocolError {
        if tail >> 8 != 0 {
            return ProtocolError(.invalidField, "PAGE_BATCH entry \(index): reserved bytes are not zero")
        }
        return ProtocolError(.invalidField, "PAGE_BATCH entry \(index): unknown encoding \(tail)")
    }

    @inline(never)
    private func badLength(_ length: Int, _ encoding: PageEncoding) -> ProtocolError {
        let rule: String
        switch encoding {
        case .zero: rule = "must be 0"
        case .raw: rule = "must be the page size \(pageSize)"
        case .lz4: rule = "must be between 1 and \(pageSize - 1)"
        }
        return ProtocolError(.invalidField,
            "PAGE_BATCH entry \(index): \(encoding) payload of \(length) bytes \(rule)")
    }
}
