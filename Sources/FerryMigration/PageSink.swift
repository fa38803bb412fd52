import FerryCodec
import FerryProtocol
import FerrySystem

/// The destination's data path: applies PAGE_BATCH payloads to guest memory, verifying each
/// page's hash on the bytes actually written, and keeps the destination's page hash table.
final class PageSink {
    let memory: UnsafeMutableRawPointer
    let pageSize: Int
    let pageCount: Int
    let decoder: PageDecoder
    let hashTable: UnsafeMutableBufferPointer<UInt64>
    /// Pages received at least once.
    private(set) var held: DirtyBitmap
    /// Pages that may hold non-zero bytes (written with data at least once). The others are still
    /// the zeros of the fresh sparse image, so zero pages need no write.
    private var written: DirtyBitmap
    private(set) var counts = EncodingCounts()
    private(set) var pagesHeld = 0

    init(memory: UnsafeMutableRawPointer, pageSize: Int, pageCount: Int) {
        self.memory = memory
        self.pageSize = pageSize
        self.pageCount = pageCount
        self.decoder = PageDecoder(pageSize: pageSize)
        self.hashTable = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: pageCount)
        hashTable.initialize(repeating: 0)
        self.held = DirtyBitmap(count: pageCount)
        self.written = DirtyBitmap(count: pageCount)
    }

    deinit { hashTable.deallocate() }

    /// Applies one batch; returns the number of pages in it.
    func apply(batch payload: UnsafeRawBufferPointer) throws -> Int {
        var reader = try PageBatchReader(payload: payload, pageSize: pageSize, pageCount: UInt64(pageCount))
        var applied = 0
        while let entry = try reader.next() {
            let page = Int(entry.page)
            let destination = memory + page &* pageSize
            let isZero = entry.encoding == .zero
            let hash = try decoder.decode(encoding: entry.encoding, payload: entry.payload, into: destination,
                                          destinationIsZero: isZero && !written[page])
            guard hash == entry.hash else {
                throw CodecError(.hashMismatch,
                    "page \(page) (\(entry.encoding)) hashes to \(hex(hash)) after decoding, the source sent \(hex(entry.hash))")
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
        return applied
    }

    var pagesMissing: Int { pageCount - pagesHeld }

    func digest() -> UInt64 {
        PageHash.digest(ofHashTable: UnsafeBufferPointer(hashTable))
    }
}
