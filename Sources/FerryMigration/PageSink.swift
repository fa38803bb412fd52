import FerryCodec
import FerryProtocol
import FerrySystem

/// The destination's data path: applies PAGE_BATCH payloads to guest memory, verifying each
/// page's hash on the bytes actually written, and keeps the destination's page hash table.
///
/// One sink per stream; a stream's pages never travel on another stream (`PageStripes`), which
/// the sink checks, so its bitmaps are its own. `@unchecked Sendable`: used by one receiving
/// thread; the shared hash table is written only at this stream's pages.
final class PageSink: @unchecked Sendable {
    let memory: UnsafeMutableRawPointer
    let pageSize: Int
    let pageCount: Int
    let decoder: PageDecoder
    let hashTable: PageHashTable
    let stripes: PageStripes
    let stream: Int
    /// Pages received at least once.
    private(set) var held: DirtyBitmap
    /// Pages that may hold non-zero bytes (written with data at least once). The others are still
    /// the zeros of the fresh sparse image, so zero pages need no write.
    private var written: DirtyBitmap
    private(set) var counts = EncodingCounts()
    private(set) var pagesHeld = 0
    /// Pages applied so far, counting repeats.
    private(set) var pagesApplied = 0
    /// Nanoseconds spent in `apply` so far (decoding, writing, hashing).
    private(set) var applyNanos: UInt64 = 0
    /// Pages whose last copy did not match its hash (see `apply`).
    private var stale: DirtyBitmap
    private(set) var staleCount = 0

    /// The lowest page still stale, if any.
    var firstStalePage: Int? {
        guard let word = stale.words.firstIndex(where: { $0 != 0 }) else { return nil }
        return word << 6 | stale.words[word].trailingZeroBitCount
    }

    init(memory: UnsafeMutableRawPointer, pageSize: Int, pageCount: Int, hashTable: PageHashTable,
         stripes: PageStripes = PageStripes(streamCount: 1), stream: Int = 0) {
        self.memory = memory
        self.pageSize = pageSize
        self.pageCount = pageCount
        self.decoder = PageDecoder(pageSize: pageSize)
        self.hashTable = hashTable
        self.stripes = stripes
        self.stream = stream
        self.held = DirtyBitmap(count: pageCount)
        self.stale = DirtyBitmap(count: pageCount)
        self.written = DirtyBitmap(count: pageCount)
    }

    /// Applies one batch; returns the number of pages in it.
    func apply(batch payload: UnsafeRawBufferPointer) throws -> Int {
        let start = MonotonicClock.now()
        defer { applyNanos &+= MonotonicClock.now() &- start }
        var reader = try PageBatchReader(payload: payload, pageSize: pageSize, pageCount: UInt64(pageCount))
        var applied = 0
        while let entry = try reader.next() {
            let page = Int(entry.page)
            guard stripes.stream(of: page) == stream else {
                throw ProtocolError(.invalidField,
                    "page \(page) arrived on stream \(stream); with \(stripes.streamCount) streams it belongs to stream \(stripes.stream(of: page))")
            }
            let destination = memory + page &* pageSize
            let isZero = entry.encoding == .zero
            let hash = try decoder.decode(encoding: entry.encoding, payload: entry.payload, into: destination,
                                          destinationIsZero: isZero && !written[page])
            // A raw page is sent from guest memory while the guest runs; if the guest wrote it
            // after the source hashed it, the bytes differ from the hash. The source's tracker
            // caught that write and sends the page again, so a mismatch marks the page stale
            // until a copy that matches arrives. A page still stale at COMPLETE fails verification.
            if hash == entry.hash {
                if stale[page] {
                    stale.clear(page)
                    staleCount -= 1
                }
            } else if !stale[page] {
                stale.set(page)
                staleCount += 1
            }
            hashTable[page] = hash
            if !held[page] {
                held.set(page)
                pagesHeld += 1
            }
            if !isZero { written.set(page) }
            switch entry.encoding {
            case .zero: counts.zero += 1
            case .lz4: counts.lz4 += 1
            case .raw: counts.raw += 1
            }
            applied += 1
        }
        pagesApplied += applied
        return applied
    }

}
