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
    /// Gather mode: pieces of the payload in order, slot 0 left for the frame header. Inline
    /// bytes of `base` alternate with payloads that stay where they are (zero-copy raw pages).
    private let segments: UnsafeMutableBufferPointer<UnsafeRawBufferPointer>?
    private var segmentCount = 1
    /// Start of the inline bytes not yet in a segment (the first segment includes the batch header).
    private var segmentStart = 0
    /// Payload bytes that stay outside `base`.
    private var externalBytes = 0

    /// The largest buffer a writer can use for pages of `pageSize`: 4096 raw entries, capped at the
    /// frame payload limit (4096 raw 4 KiB pages do not fit in one frame; 4093 do).
    public static func bufferSize(pageSize: Int) -> Int {
        min(ProtocolLimits.maxFramePayload,
            headerSize + ProtocolLimits.maxEntriesPerBatch * (descriptorSize + pageSize))
    }

    /// `buffer` receives the payload (8-byte batch header, then entries); it must have room for
    /// at least one raw page. Bytes past the frame payload limit are not used.
    /// `segments` enables `commitExternalEntry`: room for 2 per entry plus 3 is enough.
    public init(buffer: UnsafeMutableRawBufferPointer, pageSize: Int,
                segments: UnsafeMutableBufferPointer<UnsafeRawBufferPointer>? = nil) {
        self.segments = segments
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
        segmentCount = 1
        segmentStart = 0
        externalBytes = 0
    }

    /// Payload bytes so far, the 8-byte batch header included.
    public var byteCount: Int { offset + externalBytes }

    public var isEmpty: Bool { count == 0 }

    /// Room for one more descriptor and a raw page, and fewer than 4096 entries.
    @inline(__always)
    public var hasRoomForPage: Bool {
        count < ProtocolLimits.maxEntriesPerBatch && capacity - offset >= Self.descriptorSize + pageSize
            && offset + externalBytes + Self.descriptorSize + pageSize <= ProtocolLimits.maxFramePayload
            && segmentCount + 3 <= (segments?.count ?? Int.max)
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
        writeDescriptor(page: page, hash: hash, encoding: encoding, length: length)
        offset += Self.descriptorSize + length
        count += 1
    }

    /// Records a raw entry whose payload stays at `payload` (e.g. guest memory) and is gathered
    /// into the frame when it is sent: no copy. Needs `segments`.
    @inline(__always)
    public mutating func commitExternalEntry(page: UInt64, hash: UInt64, payload: UnsafeRawPointer) {
        guard let segments else { preconditionFailure("commitExternalEntry needs a writer made with segments") }
        precondition(hasRoomForPage, "page batch is full")
        writeDescriptor(page: page, hash: hash, encoding: .raw, length: pageSize)
        offset += Self.descriptorSize
        segments[segmentCount] = UnsafeRawBufferPointer(start: base + segmentStart, count: offset - segmentStart)
        segments[segmentCount + 1] = UnsafeRawBufferPointer(start: payload, count: pageSize)
        segmentCount += 2
        segmentStart = offset
        externalBytes += pageSize
        count += 1
    }

    @inline(__always)
    private func writeDescriptor(page: UInt64, hash: UInt64, encoding: PageEncoding, length: Int) {
        let descriptor = base + offset
        descriptor.storeBytes(of: page.littleEndian, toByteOffset: 0, as: UInt64.self)
        descriptor.storeBytes(of: hash.littleEndian, toByteOffset: 8, as: UInt64.self)
        descriptor.storeBytes(of: UInt32(length).littleEndian, toByteOffset: 16, as: UInt32.self)
        // Encoding in byte 20, reserved bytes 21…23 zero.
        descriptor.storeBytes(of: UInt32(encoding.rawValue).littleEndian, toByteOffset: 20, as: UInt32.self)
    }

    /// Gather mode: fills in the batch header and returns the pieces of the payload in order,
    /// slot 0 left empty for the frame header, and the payload's length.
    public mutating func finishGathered() -> (parts: UnsafeMutableBufferPointer<UnsafeRawBufferPointer>, length: Int) {
        guard let segments else { preconditionFailure("finishGathered needs a writer made with segments") }
        precondition(count > 0, "a PAGE_BATCH needs at least one entry")
        writeBatchHeader()
        if offset > segmentStart {
            segments[segmentCount] = UnsafeRawBufferPointer(start: base + segmentStart, count: offset - segmentStart)
            segmentCount += 1
        }
        segments[0] = UnsafeRawBufferPointer(start: nil, count: 0)
        return (UnsafeMutableBufferPointer(rebasing: segments[0..<segmentCount]), offset + externalBytes)
    }

    private func writeBatchHeader() {
        base.storeBytes(of: round.littleEndian, toByteOffset: 0, as: UInt32.self)
        base.storeBytes(of: UInt32(count).littleEndian, toByteOffset: 4, as: UInt32.self)
    }

    /// Fills in the batch header and returns the payload to send. The batch must not be empty,
    /// and must hold no external entries (use `finishGathered` for those).
    public func finish() -> UnsafeRawBufferPointer {
        precondition(count > 0, "a PAGE_BATCH needs at least one entry")
        precondition(externalBytes == 0, "a batch with external entries is sent with finishGathered")
        writeBatchHeader()
        return UnsafeRawBufferPointer(start: base, count: offset)
    }
}
