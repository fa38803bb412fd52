import FerryCodec
import FerryProtocol
import FerrySystem
import FerryTransport
import Glibc

/// The destination's data path: puts PAGE_BATCH pages into guest memory, verifying each page's
/// hash on the bytes actually written, and keeps the destination's page hash table.
///
/// `receive(batchLength:from:)` reads a batch off the connection in place: the table of
/// descriptors first, then the payloads with scatter reads, raw pages straight into guest memory
/// and LZ4 payloads into a small scratch area, a chunk (≤ 256 KiB) at a time so that each page is
/// hashed (and LZ4 decompressed) while it is still in cache. No page is copied in user space.
///
/// One sink per stream; a stream's pages never travel on another stream (`PageStripes`), which
/// the sink checks, so its bitmaps are its own. `@unchecked Sendable`: used by one receiving
/// thread; the shared hash table is written only at this stream's pages.
final class PageSink: @unchecked Sendable {
    let memory: GuestMemory
    let pageSize: Int
    let pageCount: Int
    let decoder: PageDecoder
    let hashTable: PageHashTable
    /// The round of each page's last copy (shared by all streams, like `hashTable`).
    let roundTable: PageRoundTable
    let stripes: PageStripes
    let stream: Int
    /// Pages received at least once.
    let held: PageBits
    /// Pages that may hold non-zero bytes (written with data at least once). The others are still
    /// the zeros of the fresh sparse image, so zero pages need no write.
    private let written: PageBits
    private(set) var counts = EncodingCounts()
    private(set) var pagesHeld = 0
    /// Pages applied so far, counting repeats.
    private(set) var pagesApplied = 0
    /// Nanoseconds spent in `receive` so far (reading, decoding, hashing).
    private(set) var applyNanos: UInt64 = 0
    /// Pages whose last copy did not match its hash (see `settle`), or whose bytes a batch cut
    /// off by a lost connection may have torn (see `receive`).
    let stale: PageBits
    private(set) var staleCount = 0
    /// Pages of the batch being read (a page may appear once per batch).
    private let inBatch: PageBits

    /// Batch header and descriptor table of the batch being received.
    private let table: UnsafeMutableRawPointer
    /// The checked descriptors of that batch.
    private let descriptors: UnsafeMutableBufferPointer<PageDescriptor>
    /// LZ4 payloads of one chunk.
    private let scratch: UnsafeMutableRawPointer
    private let vectors: UnsafeMutableBufferPointer<iovec>

    /// Payload bytes read per scatter read before the chunk's pages are hashed.
    static let chunkBytes = 256 * 1024
    static let maxVectors = 1024

    /// The lowest page still stale, if any.
    var firstStalePage: Int? { stale.first }

    init(
        memory: GuestMemory, pageCount: Int, hashTable: PageHashTable,
        roundTable: PageRoundTable? = nil, stripes: PageStripes = PageStripes(streamCount: 1), stream: Int = 0
    ) {
        self.roundTable = roundTable ?? PageRoundTable(pageCount: pageCount)
        self.memory = memory
        let pageSize = memory.pageSize
        self.pageSize = pageSize
        self.pageCount = pageCount
        self.decoder = PageDecoder(pageSize: pageSize)
        self.hashTable = hashTable
        self.stripes = stripes
        self.stream = stream
        self.held = PageBits(count: pageCount)
        self.stale = PageBits(count: pageCount)
        self.written = PageBits(count: pageCount)
        self.inBatch = PageBits(count: pageCount)
        self.table = .allocate(
            byteCount: PageBatchLayout.tableEnd(count: ProtocolLimits.maxEntriesPerBatch), alignment: 16)
        self.descriptors = .allocate(capacity: ProtocolLimits.maxEntriesPerBatch)
        self.scratch = .allocate(byteCount: Self.chunkBytes + pageSize, alignment: 64)
        self.vectors = .allocate(capacity: Self.maxVectors)
    }

    deinit {
        table.deallocate()
        descriptors.deallocate()
        scratch.deallocate()
        vectors.deallocate()
    }

    /// Reads the payload of a PAGE_BATCH frame of `batchLength` bytes from `connection` (whose
    /// `receive(direct:)` just returned its header) and applies it; returns its page count.
    /// After an error the connection is out of step and guest memory may hold parts of the batch:
    /// the pages whose payloads were being read are then marked stale (and possibly non-zero), so
    /// they count as not held (`isIntact`) and fail verification unless a later copy arrives.
    func receive(batchLength: Int, from connection: FramedConnection) throws -> Int {
        let start = MonotonicClock.now()
        defer { applyNanos &+= MonotonicClock.now() &- start }
        let header = UnsafeMutableRawBufferPointer(start: table, count: PageBatchWriter.headerSize)
        guard batchLength >= header.count else {
            throw ProtocolError(.truncated, "PAGE_BATCH payload of \(batchLength) bytes has no 8-byte batch header")
        }
        try connection.readDirect(into: header)
        let (round, count) = try PageBatchLayout.header(UnsafeRawBufferPointer(header), payloadLength: batchLength)
        let tableEnd = PageBatchLayout.tableEnd(count: count)
        try connection.readDirect(
            into: UnsafeMutableRawBufferPointer(start: table + header.count, count: tableEnd - header.count))
        let payloadBytes = try checkTable(count: count)
        try PageBatchLayout.checkPayloadTotal(payloadBytes, count: count, payloadLength: batchLength)

        var next = 0
        // Entries below `settled` are applied; those of the chunk above it may be torn if this
        // throws (a raw payload read straight into guest memory, cut off by a lost connection).
        var settled = 0
        defer { if settled < next { markTorn(settled..<next) } }
        while next < count {
            // One chunk: scatter-read its payloads into place, then settle its pages.
            let first = next
            var vectorCount = 0
            var bytes = 0
            var scratchUsed = 0
            while next < count && bytes < Self.chunkBytes && vectorCount < Self.maxVectors - 1 {
                let entry = descriptors[next]
                switch entry.encoding {
                case .zero: break
                case .raw: append(memory.address(ofPage: Int(entry.page)), entry.length, &vectorCount)
                case .lz4, .words:
                    append(scratch + scratchUsed, entry.length, &vectorCount)
                    scratchUsed += entry.length
                }
                bytes += entry.length
                next += 1
            }
            if vectorCount > 0 {
                try connection.readDirect(vectors: UnsafeMutableBufferPointer(rebasing: vectors[0..<vectorCount]))
            }
            var lz4Offset = 0
            for index in first..<next {
                let entry = descriptors[index]
                let page = Int(entry.page)
                let destination = memory.address(ofPage: page)
                let hash: UInt64
                switch entry.encoding {
                case .raw:
                    hash = PageHash.hash(destination, count: pageSize)
                case .zero, .lz4, .words:
                    let payload = UnsafeRawBufferPointer(start: scratch + lz4Offset, count: entry.length)
                    lz4Offset += entry.length
                    hash = try decoder.decode(
                        encoding: entry.encoding, payload: payload, into: destination,
                        destinationIsZero: entry.encoding != .lz4 && !written[page])
                }
                settle(page: page, expected: entry.hash, actual: hash, encoding: entry.encoding, round: round)
                settled = index + 1
            }
        }
        pagesApplied += count
        return count
    }

    /// Whether `page` holds a copy whose bytes matched its hash: received, not stale, not torn.
    @inline(__always)
    func isIntact(_ page: Int) -> Bool { held[page] && !stale[page] }

    /// Marks the pages of `entries` (descriptors of the batch being read) stale and possibly
    /// non-zero: a read cut off inside them may have left any mix of old and new bytes.
    private func markTorn(_ entries: Range<Int>) {
        for index in entries {
            let page = Int(descriptors[index].page)
            written.set(page)
            if !stale[page] {
                stale.set(page)
                staleCount += 1
            }
        }
    }

    /// Adds a scatter-read target, extending the previous one when it continues it.
    @inline(__always)
    private func append(_ start: UnsafeMutableRawPointer, _ length: Int, _ vectorCount: inout Int) {
        if vectorCount > 0 {
            let last = vectors[vectorCount - 1]
            if last.iov_base.unsafelyUnwrapped + last.iov_len == start {
                vectors[vectorCount - 1].iov_len += length
                return
            }
        }
        vectors[vectorCount] = iovec(iov_base: start, iov_len: length)
        vectorCount += 1
    }

    /// Checks the `count` descriptors in `table` (each one, its stream, no page twice) into
    /// `descriptors`; returns their payload bytes in all.
    private func checkTable(count: Int) throws -> Int {
        var total = 0
        var checked = 0
        defer {
            for index in 0..<checked { inBatch.clear(Int(descriptors[index].page)) }
        }
        for index in 0..<count {
            let entry = try PageBatchLayout.descriptor(
                at: table + PageBatchLayout.tableEnd(count: index), index: index,
                pageSize: pageSize, pageCount: UInt64(pageCount))
            let page = Int(entry.page)
            try checkStream(page)
            if inBatch[page] {
                throw ProtocolError(.invalidField, "PAGE_BATCH entry \(index): page \(page) appears twice in the batch")
            }
            inBatch.set(page)
            descriptors[index] = entry
            checked += 1
            total += entry.length
        }
        return total
    }

    @inline(__always)
    private func checkStream(_ page: Int) throws {
        guard stripes.stream(of: page) == stream else {
            throw ProtocolError(
                .invalidField,
                "page \(page) arrived on stream \(stream); with \(stripes.streamCount) streams it belongs to stream \(stripes.stream(of: page))"
            )
        }
    }

    /// Records a page whose bytes are in guest memory and hash to `actual`.
    ///
    /// A raw page is sent from guest memory while the guest runs; if the guest wrote it after
    /// the source hashed it, the bytes differ from the hash. The source's tracker caught that
    /// write and sends the page again, so a mismatch marks the page stale until a copy that
    /// matches arrives. A page still stale at COMPLETE fails verification.
    @inline(__always)
    private func settle(page: Int, expected: UInt64, actual: UInt64, encoding: PageEncoding, round: UInt32) {
        roundTable[page] = round
        if actual == expected {
            if stale[page] {
                stale.clear(page)
                staleCount -= 1
            }
        } else if !stale[page] {
            stale.set(page)
            staleCount += 1
        }
        hashTable[page] = actual
        if !held[page] {
            held.set(page)
            pagesHeld += 1
        }
        switch encoding {
        case .zero: counts.zero += 1
        case .lz4:
            counts.lz4 += 1
            written.set(page)
        case .raw:
            counts.raw += 1
            written.set(page)
        case .words:
            counts.words += 1
            written.set(page)
        }
    }
}
