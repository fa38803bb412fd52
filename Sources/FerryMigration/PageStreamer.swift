import FerryCodec
import FerryProtocol
import FerrySystem
import FerryTransport

/// The source's data path: reads the pages a bitmap names from guest memory, encodes them into
/// `PAGE_BATCH` frames and writes them to the connection. Keeps the source's page hash table
/// (the hash of what was last sent for each page), from which the image digest is computed.
///
/// One batch buffer, one encoder, no allocation per page. Each stream has its own streamer and
/// sends only its stripe of pages (`PageStripes`).
///
/// `@unchecked Sendable`: handed to a worker thread per round, used by one thread at a time; the
/// shared hash table is written only at this stream's pages.
final class PageStreamer: @unchecked Sendable {
    let memory: GuestMemory
    let pageSize: Int
    /// Replaced after a resume (`SourceStreams.reattach`), between rounds.
    var connection: FramedConnection
    let encoder: PageEncoder
    private let buffer: UnsafeMutableRawBufferPointer
    /// Pieces of a batch for the gather write: raw pages are sent from guest memory, not copied.
    private let segments: UnsafeMutableBufferPointer<UnsafeRawBufferPointer>
    private var writer: PageBatchWriter
    /// A batch is sent once its payload reaches this many bytes (raw pages gathered from guest
    /// memory included), so that the pages just hashed are still in cache when the socket copies
    /// them.
    private let batchLimit: Int
    /// Hash of the last content sent for each page (shared by all streams).
    let hashTable: PageHashTable
    let stripes: PageStripes
    let stream: Int

    private(set) var wireBytes: UInt64 = 0
    /// Pages handed to the connection (or put in the batch being filled) in the current round.
    private(set) var roundPagesSent = 0
    private(set) var batches = 0
    private(set) var chooser: EncodingChooser
    /// Start of the batch being filled, and its non-zero pages (for the chooser).
    private var batchStart: UInt64 = 0
    private var batchNonZero = 0
    /// nil: as fast as the link goes.
    var limiter: BandwidthLimiter?
    /// Checked before each batch: a cancel stops the stream between two frames.
    var cancellation: MigrationCancellation?
    /// Counts each batch for the live progress as it is written (shared by the streams).
    let meter: RoundMeter?
    private(set) var counts = EncodingCounts()
    /// Zero pages sent without reading them: holes of the image file in round 0.
    private(set) var holePages = 0
    private let zeroHash: UInt64

    init(
        memory: GuestMemory, pageSize: Int, connection: FramedConnection,
        compression: CompressionChoice, peerCodecs: CodecSet, batchBytes: Int, hashTable: PageHashTable,
        stripes: PageStripes, stream: Int, meter: RoundMeter? = nil
    ) {
        self.meter = meter
        self.hashTable = hashTable
        self.stripes = stripes
        self.stream = stream
        self.memory = memory
        self.pageSize = pageSize
        self.connection = connection
        // Only what the destination decodes; `--compress none` sends every non-zero page raw.
        let usable = peerCodecs.contains(.lz4) ? compression : .none
        self.chooser = EncodingChooser(usable)
        self.encoder = PageEncoder(
            pageSize: pageSize, mode: usable == .none ? .none : .lz4,
            wordsLimit: usable != .none && peerCodecs.contains(.words) ? SparseWords.defaultLimit : 0)
        self.batchLimit = batchBytes
        self.zeroHash = PageHash.zeroPage(pageSize: pageSize)
        let capacity = max(batchBytes, PageBatchLayout.tableEnd(count: ProtocolLimits.maxEntriesPerBatch) + pageSize)
        self.buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 64)
        self.segments = .allocate(capacity: ProtocolLimits.maxEntriesPerBatch + 2)
        self.writer = PageBatchWriter(buffer: buffer, pageSize: pageSize, segments: segments)
    }

    deinit {
        buffer.deallocate()
        segments.deallocate()
    }

    /// Sends every page of this stream's stripe whose bit is set in `pages`; returns what it sent.
    /// Each batch is counted by `meter` as it is written. With
    /// `protection` (round 0 of a deferred tracker), each page is write-protected before it is
    /// read, and every page of the region by the time this returns.
    func send(
        pages: DirtyBitmap, round: UInt32, protection: RoundZeroProtection? = nil
    ) throws -> StreamRoundResult {
        let startBytes = wireBytes
        let startBatches = batches
        var roundCounts = EncodingCounts()
        var sent = 0
        roundPagesSent = 0
        // Also when the connection fails: the pages already went out (the report counts them).
        defer {
            roundPagesSent = sent
            counts.add(roundCounts)
        }
        // The batch writer lives in a local for the loop: a stored property of the class would be
        // checked for exclusive access (at run time) on every page.
        var writer = self.writer
        defer { self.writer = writer }
        startBatch(round: round, &writer)
        var protectedEnd = protection == nil ? Int.max : 0
        try stripes.forEachPage(in: pages, of: stream) { page in
            if page >= protectedEnd, let protection { protectedEnd = try protection.protect(through: page) }
            if !writer.hasRoomForPage || writer.byteCount >= batchLimit {
                try flush(round: round, &writer)
                startBatch(round: round, &writer)
            }
            if let protection, protection.isHole(page) {
                // A hole of the image file: zeros, not read (see RoundZeroProtection).
                writer.commitEntry(page: UInt64(page), hash: zeroHash, encoding: .zero, length: 0)
                hashTable[page] = zeroHash
                roundCounts.zero += 1
                holePages += 1
                sent += 1
                return
            }
            let source = UnsafeRawPointer(memory.address(ofPage: page))
            let encoded: EncodedPage
            if encoder.mode == .none {
                encoded = encoder.encodeInPlace(page: source, slot: writer.payloadSlot)
                if encoded.encoding == .raw {
                    writer.commitExternalEntry(page: UInt64(page), hash: encoded.hash, payload: source)
                } else {
                    writer.commitEntry(
                        page: UInt64(page), hash: encoded.hash, encoding: encoded.encoding, length: encoded.length)
                }
            } else {
                encoded = encoder.encode(page: source, into: writer.payloadSlot)
                writer.commitEntry(
                    page: UInt64(page), hash: encoded.hash, encoding: encoded.encoding, length: encoded.length)
            }
            hashTable[page] = encoded.hash
            switch encoded.encoding {
            case .zero: roundCounts.zero += 1
            case .lz4: roundCounts.lz4 += 1
            case .raw: roundCounts.raw += 1
            case .words: roundCounts.words += 1
            }
            // The chooser weighs LZ4 against raw: only the pages it chose for count.
            if encoded.encoding == .raw || encoded.encoding == .lz4 { batchNonZero += 1 }
            sent += 1
        }
        if writer.count > 0 { try flush(round: round, &writer) }
        try protection?.protectAll()
        return StreamRoundResult(
            pages: sent, wireBytes: wireBytes - startBytes, batches: batches - startBatches, counts: roundCounts)
    }

    private func startBatch(round: UInt32, _ writer: inout PageBatchWriter) {
        writer.reset(round: round)
        encoder.mode = chooser.next()
        batchStart = MonotonicClock.now()
        batchNonZero = 0
    }

    private func flush(round: UInt32, _ writer: inout PageBatchWriter) throws {
        // Between batches, each stream's connection at a frame boundary: the ABORT can follow.
        try cancellation.check(during: "round \(round)", guest: .source)
        let pagesInBatch = writer.count
        let batch = writer.finishGathered()
        try connection.send(.pageBatch, gather: batch.parts, length: batch.length)
        // A bandwidth limit is part of the link: its wait counts in the batch's cost.
        limiter?.consumed(FrameHeader.size + batch.length)
        chooser.record(encoder.mode, nonZeroPages: batchNonZero, seconds: MonotonicClock.seconds(since: batchStart))
        wireBytes += UInt64(FrameHeader.size + batch.length)
        batches += 1
        meter?.sent(pages: pagesInBatch, bytes: FrameHeader.size + batch.length)
    }

}

/// What one stream sent in one round.
struct StreamRoundResult: Sendable {
    var pages = 0
    var wireBytes: UInt64 = 0
    var batches = 0
    var counts = EncodingCounts()

    mutating func add(_ other: StreamRoundResult) {
        pages += other.pages
        wireBytes += other.wireBytes
        batches += other.batches
        counts.add(other.counts)
    }
}
