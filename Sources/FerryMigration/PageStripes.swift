import FerryCodec
import FerrySystem
import Glibc

/// Which page stream carries which page (Protocol.md section 3.16): page `p` travels on stream
/// `(p / 512) % streamCount`. Fixed stripes keep every page on one stream for the whole
/// migration, so each destination stream applies its pages in order and alone.
struct PageStripes: Sendable {
    /// Pages per stripe: 512 pages are 8 bitmap words, and 2 MiB of 4 KiB pages.
    static let pagesPerStripe = 512
    let streamCount: Int

    func stream(of page: Int) -> Int {
        (page / Self.pagesPerStripe) % streamCount
    }

    /// Calls `body` with every page set in `bitmap` that belongs to `stream`, in page order.
    func forEachPage(in bitmap: DirtyBitmap, of stream: Int, _ body: (Int) throws -> Void) rethrows {
        let wordsPerStripe = Self.pagesPerStripe / 64
        try bitmap.words.withUnsafeBufferPointer { words in
            var stripe = stream
            while stripe * wordsPerStripe < words.count {
                let first = stripe * wordsPerStripe
                for index in first..<min(first + wordsPerStripe, words.count) {
                    var word = words[index]
                    while word != 0 {
                        try body(index << 6 | word.trailingZeroBitCount)
                        word &= word - 1
                    }
                }
                stripe += streamCount
            }
        }
    }

    /// Pages of `bitmap` on `stream`.
    func count(in bitmap: DirtyBitmap, of stream: Int) -> Int {
        let wordsPerStripe = Self.pagesPerStripe / 64
        var total = 0
        var stripe = stream
        while stripe * wordsPerStripe < bitmap.words.count {
            let first = stripe * wordsPerStripe
            for index in first..<min(first + wordsPerStripe, bitmap.words.count) {
                total += bitmap.words[index].nonzeroBitCount
            }
            stripe += streamCount
        }
        return total
    }
}

/// The page hash table (Protocol.md section 3.9), shared by the streams of one side: each entry
/// is written only by the stream that carries its page.
final class PageHashTable: @unchecked Sendable {
    let hashes: UnsafeMutableBufferPointer<UInt64>

    init(pageCount: Int) {
        hashes = allocateZeroed(UInt64.self, count: pageCount)
    }

    deinit { free(hashes.baseAddress) }

    subscript(page: Int) -> UInt64 {
        get { hashes[page] }
        set { hashes[page] = newValue }
    }

    func digest() -> UInt64 {
        PageHash.digest(ofHashTable: UnsafeBufferPointer(hashes))
    }
}
