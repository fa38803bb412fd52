/// Builds a `PAGE_BATCH` payload (Protocol.md 3.5): the batch header, the table of entry
/// descriptors, then the entries' payloads in order. Nothing is allocated or copied per page.
///
/// The caller's buffer is laid out as `[header][descriptor table for maxEntries][payload area]`.
/// The caller encodes each page straight into `payloadSlot` and `commitEntry` records it; in
/// gather mode `commitExternalEntry` records a raw page that stays where it is (guest memory)
/// and is stitched into the frame when it is sent (`finishGathered`), so the wire bytes are
/// `[frame header][batch header + table][payload pieces…]` without a copy. `finish` instead
/// returns one contiguous payload, moving the payload area down to the end of the table (one
/// copy per batch; for tests and tools, not the data path).
///
/// Not `Sendable`: it writes through a raw pointer it does not own; keep it on one thread.
public struct PageBatchWriter {
    public static let headerSize = 8
    public static let descriptorSize = 24

    private let base: UnsafeMutableRawPointer
    public let pageSize: Int
    /// Entries the descriptor table has room for (≤ 4096).
    public let maxEntries: Int
    /// Where the payload area starts: just past the descriptor table.
    private let payloadArea: Int
    /// Bytes of the payload area.
    private let payloadCapacity: Int
    public private(set) var round: UInt32 = 0
    public private(set) var count = 0
    /// Payload-area bytes used by inline payloads.
    private var inlineBytes = 0
    /// Payload bytes that stay outside the buffer (external raw pages).
    private var externalBytes = 0
    /// Gather mode: pieces of the frame in order. Slot 0 is left for the frame header, slot 1 is
    /// the batch header and table (filled in by `finishGathered`), then the payload pieces, each
    /// extended in place while the next payload starts where it ends.
    private let segments: UnsafeMutableBufferPointer<UnsafeRawBufferPointer>?
    private var segmentCount = 2
    /// `finish` has moved the payloads next to the table.
    private var compacted = false

    /// The buffer a writer with 4096 table entries needs for pages of `pageSize` to fill a frame
    /// with inline payloads: the header, the table and up to a frame's worth of payload.
    public static func bufferSize(pageSize: Int) -> Int {
        headerSize + ProtocolLimits.maxEntriesPerBatch * descriptorSize
            + min(ProtocolLimits.maxFramePayload, ProtocolLimits.maxEntriesPerBatch * pageSize)
    }

    /// `buffer` must hold the header, a table of `maxEntries` descriptors and at least one page
    /// of payload area. `segments` enables gather mode (`commitExternalEntry`,
    /// `finishGathered`): room for `maxEntries + 2` pieces is always enough.
    public init(
        buffer: UnsafeMutableRawBufferPointer, pageSize: Int,
        maxEntries: Int = ProtocolLimits.maxEntriesPerBatch,
        segments: UnsafeMutableBufferPointer<UnsafeRawBufferPointer>? = nil
    ) {
        precondition(
            pageSize >= ProtocolLimits.minPageSize && pageSize <= ProtocolLimits.maxPageSize
                && pageSize & (pageSize - 1) == 0, "page size \(pageSize) is not a power of two in 4096…65536")
        precondition(
            maxEntries >= 1 && maxEntries <= ProtocolLimits.maxEntriesPerBatch,
            "a batch table holds 1…\(ProtocolLimits.maxEntriesPerBatch) entries, not \(maxEntries)")
        let area = Self.headerSize + maxEntries * Self.descriptorSize
        precondition(
            buffer.count >= area + pageSize,
            "a page batch buffer of \(buffer.count) bytes cannot hold a \(maxEntries)-entry table and one page of \(pageSize) bytes"
        )
        precondition(segments.map { $0.count >= 3 } ?? true, "gather mode needs room for at least 3 segments")
        self.base = buffer.baseAddress!
        self.pageSize = pageSize
        self.maxEntries = maxEntries
        self.payloadArea = area
        self.payloadCapacity = buffer.count - area
        self.segments = segments
    }

    /// Starts a new, empty batch of round `round`.
    public mutating func reset(round: UInt32) {
        self.round = round
        count = 0
        inlineBytes = 0
        externalBytes = 0
        segmentCount = 2
        compacted = false
    }

    /// Payload bytes so far: header, table and payloads.
    public var byteCount: Int { Self.headerSize + count * Self.descriptorSize + inlineBytes + externalBytes }

    public var isEmpty: Bool { count == 0 }

    /// Room for one more entry of up to a page, inline or external, within the table, the
    /// payload area and the frame payload limit.
    @inline(__always)
    public var hasRoomForPage: Bool {
        count < maxEntries && payloadCapacity - inlineBytes >= pageSize
            && byteCount + Self.descriptorSize + pageSize <= ProtocolLimits.maxFramePayload
            && segmentCount < (segments?.count ?? Int.max)
    }

    /// Where the next entry's payload goes. At least `pageSize` bytes are available there when
    /// `hasRoomForPage`.
    @inline(__always)
    public var payloadSlot: UnsafeMutableRawPointer { base + (payloadArea + inlineBytes) }

    /// Bytes available at `payloadSlot`.
    public var payloadSlotCapacity: Int { payloadCapacity - inlineBytes }

    /// Records the entry whose `length` payload bytes the caller wrote at `payloadSlot`.
    @inline(__always)
    public mutating func commitEntry(page: UInt64, hash: UInt64, encoding: PageEncoding, length: Int) {
        precondition(!compacted, "finish() ended this batch; reset it first")
        precondition(
            count < maxEntries && length >= 0 && length <= payloadCapacity - inlineBytes
                && byteCount + Self.descriptorSize + length <= ProtocolLimits.maxFramePayload,
            "page batch entry of \(length) bytes does not fit")
        precondition(
            encoding.allowsLength(length, pageSize: pageSize),
            "page \(page): \(encoding) entry cannot be \(length) bytes for \(pageSize)-byte pages")
        writeDescriptor(page: page, hash: hash, encoding: encoding, length: length)
        if length > 0 {
            if segments != nil { appendSegment(UnsafeRawPointer(payloadSlot), length) }
            inlineBytes += length
        }
        count += 1
    }

    /// Records a raw entry whose payload stays at `payload` (e.g. guest memory) and is gathered
    /// into the frame when it is sent: no copy. Needs gather mode.
    @inline(__always)
    public mutating func commitExternalEntry(page: UInt64, hash: UInt64, payload: UnsafeRawPointer) {
        precondition(segments != nil, "commitExternalEntry needs a writer made with segments")
        precondition(hasRoomForPage, "page batch is full")
        writeDescriptor(page: page, hash: hash, encoding: .raw, length: pageSize)
        appendSegment(payload, pageSize)
        externalBytes += pageSize
        count += 1
    }

    /// Adds a payload piece, extending the last one when the new piece continues it (adjacent
    /// guest pages, consecutive inline payloads).
    @inline(__always)
    private mutating func appendSegment(_ start: UnsafeRawPointer, _ length: Int) {
        let segments = segments.unsafelyUnwrapped
        if segmentCount > 2 {
            let last = segments[segmentCount - 1]
            if last.baseAddress.unsafelyUnwrapped + last.count == start {
                segments[segmentCount - 1] = UnsafeRawBufferPointer(start: last.baseAddress, count: last.count + length)
                return
            }
        }
        segments[segmentCount] = UnsafeRawBufferPointer(start: start, count: length)
        segmentCount += 1
    }

    @inline(__always)
    private func writeDescriptor(page: UInt64, hash: UInt64, encoding: PageEncoding, length: Int) {
        let descriptor = base + (Self.headerSize + count * Self.descriptorSize)
        descriptor.storeBytes(of: page.littleEndian, toByteOffset: 0, as: UInt64.self)
        descriptor.storeBytes(of: hash.littleEndian, toByteOffset: 8, as: UInt64.self)
        descriptor.storeBytes(of: UInt32(length).littleEndian, toByteOffset: 16, as: UInt32.self)
        // Encoding in byte 20, reserved bytes 21…23 zero.
        descriptor.storeBytes(of: UInt32(encoding.rawValue).littleEndian, toByteOffset: 20, as: UInt32.self)
    }

    private func writeBatchHeader() {
        base.storeBytes(of: round.littleEndian, toByteOffset: 0, as: UInt32.self)
        base.storeBytes(of: UInt32(count).littleEndian, toByteOffset: 4, as: UInt32.self)
    }

    /// Gather mode: fills in the batch header and returns the pieces of the payload in order,
    /// slot 0 left empty for the frame header, and the payload's length.
    public mutating func finishGathered() -> (parts: UnsafeMutableBufferPointer<UnsafeRawBufferPointer>, length: Int) {
        guard let segments else { preconditionFailure("finishGathered needs a writer made with segments") }
        precondition(count > 0, "a PAGE_BATCH needs at least one entry")
        writeBatchHeader()
        segments[0] = UnsafeRawBufferPointer(start: nil, count: 0)
        segments[1] = UnsafeRawBufferPointer(start: base, count: Self.headerSize + count * Self.descriptorSize)
        return (UnsafeMutableBufferPointer(rebasing: segments[0..<segmentCount]), byteCount)
    }

    /// Fills in the batch header and returns the payload as one contiguous buffer, moving the
    /// inline payloads down to the end of the table. The batch must not be empty and must hold
    /// no external entries (use `finishGathered` for those). No entry can be added after it
    /// until `reset`.
    public mutating func finish() -> UnsafeRawBufferPointer {
        precondition(count > 0, "a PAGE_BATCH needs at least one entry")
        precondition(externalBytes == 0, "a batch with external entries is sent with finishGathered")
        writeBatchHeader()
        let tableEnd = Self.headerSize + count * Self.descriptorSize
        if !compacted && tableEnd != payloadArea && inlineBytes > 0 {
            // Overlapping move: raw-pointer copyMemory has memmove semantics.
            (base + tableEnd).copyMemory(from: base + payloadArea, byteCount: inlineBytes)
        }
        compacted = true
        return UnsafeRawBufferPointer(start: base, count: tableEnd + inlineBytes)
    }
}
