/// Builds a `PAGE_BATCH` payload (Protocol.md 3.5) in place in caller memory: the caller encodes
/// each page straight into `payloadSlot`, then `commitEntry` writes its descriptor in front of it.
/// Nothing is allocated or copied per page.
///
/// Not `Sendable`: it writes through a raw pointer it does not own; keep it on one thread.
public struct PageBatchWriter {
    public static let headerSize = 8
    public static let descriptorSize = 24

    private let base: UnsafeMutableRawPointer
    /// Usable bytes: the buffer, capped at the frame payload limit.
    private let capacity: Int
    public let pageSize: Int
    public private(set) var round: UInt32 = 0
    public private(set) var count = 0
    private var offset = PageBatchWriter.headerSize

    /// The largest buffer a writer can use for pages of `pageSize`: 4096 raw entries, capped at the
    /// frame payload limit (4096 raw 4 KiB pages do not fit in one frame; 4093 do).
    public static func bufferSize(pageSize: Int) -> Int {
        min(ProtocolLimits.maxFramePayload,
            headerSize + ProtocolLimits.maxEntriesPerBatch * (descriptorSize + pageSize))
    }

    /// `buffer` receives the payload (8-byte batch header, then entries); it must have room for
    /// at least one raw page. Bytes past the frame payload limit are not used.
    public init(buffer: UnsafeMutableRawBufferPointer, pageSize: Int) {
        precondition(pageSize >= ProtocolLimits.minPageSize && pageSize <= ProtocolLimits.maxPageSize
                     && pageSize & (pageSize - 1) == 0, "page size \(pageSize) is not a power of two in 4096…65536")
        precondition(buffer.count >= Self.headerSize + Self.descriptorSize + pageSize,
                     "a page batch buffer of \(buffer.count) bytes cannot hold one page of \(pageSize) bytes")
        self.base = buffer.baseAddress!
        self.capacity = min(buffer.count, ProtocolLimits.maxFramePayload)
        self.pageSize = pageSize
    }

    /// Starts a new, empty batch of round `round`.
    public mutating func reset(round: UInt32) {
        self.round = round
        count = 0
        offset = Self.headerSize
    }

    /// Payload bytes so far, the 8-byte batch header included.
    public var byteCount: Int { offset }

    public var isEmpty: Bool { count == 0 }

    /// Room for one more descriptor and a raw page, and fewer than 4096 entries.
    @inline(__always)
    public var hasRoomForPage: Bool {
        count < ProtocolLimits.maxEntriesPerBatch && capacity - offset >= Self.descriptorSize + pageSize
    }

    /// Where the next entry's payload goes (just after its descriptor). At least `pageSize`
    /// bytes are available there when `hasRoomForPage`.
    @inline(__always)
    public var payloadSlot: UnsafeMutableRawPointer { base + (offset + Self.descriptorSize) }

    /// Bytes available at `payloadSlot` (may be negative when the batch is full).
    public var payloadSlotCapacity: Int { capacity - offset - Self.descriptorSize }

    /// Records the entry whose `length` payload bytes the caller wrote at `payloadSlot`.
    @inline(__always)
    public mutating func commitEntry(page: UInt64, hash: UInt64, encoding: PageEncoding, length: Int) {
        precondition(count < ProtocolLimits.maxEntriesPerBatch && length >= 0
                     && length <= capacity - offset - Self.descriptorSize,
                     "page batch entry of \(length) bytes does not fit")
        precondition(encoding.allowsLength(length, pageSize: pageSize),
                     "page \(page): \(encoding) entry cannot be \(length) bytes for \(pageSize)-byte pages")
        let descriptor = base + offset
        descriptor.storeBytes(of: page.littleEndian, toByteOffset: 0, as: UInt64.self)
        descriptor.storeBytes(of: hash.littleEndian, toByteOffset: 8, as: UInt64.self)
        descriptor.storeBytes(of: UInt32(length).littleEndian, toByteOffset: 16, as: UInt32.self)
        // Encoding in byte 20, reserved bytes 21…23 zero.
        descriptor.storeBytes(of: UInt32(encoding.rawValue).littleEndian, toByteOffset: 20, as: UInt32.self)
        offset += Self.descriptorSize + length
        count += 1
    }

    /// Fills in the batch header and returns the payload to send. The batch must not be empty.
    public func finish() -> UnsafeRawBufferPointer {
        precondition(count > 0, "a PAGE_BATCH needs at least one entry")
        base.storeBytes(of: round.littleEndian, toByteOffset: 0, as: UInt32.self)
        base.storeBytes(of: UInt32(count).littleEndian, toByteOffset: 4, as: UInt32.self)
        return UnsafeRawBufferPointer(start: base, count: offset)
    }
}
