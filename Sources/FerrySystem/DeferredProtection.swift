/// Which pages a tracker started with `startDeferred()` has write-protected so far, so that each
/// page is protected exactly once (protecting a page again would, with uffd, forget a write made
/// since its first protection).
///
/// Not thread-safe: each tracker keeps it under its own lock. Allocated at `startDeferred()`
/// (one bit per page) and dropped once every page is protected.
struct DeferredProtection {
    private var protected: DirtyBitmap

    init(pages: Int) {
        protected = DirtyBitmap(count: pages)
    }

    var pageCount: Int { protected.count }

    /// True when every page has been protected.
    var isComplete: Bool { protected.popcount() == protected.count }

    /// Calls `protect` with each maximal run of pages in `range` not protected yet, ascending,
    /// and records the run as protected once `protect` returns. No allocation.
    mutating func protectOnce(_ range: Range<Int>, _ protect: (Range<Int>) throws -> Void) rethrows {
        precondition(
            range.lowerBound >= 0 && range.upperBound <= protected.count,
            "pages \(range) out of 0..<\(protected.count)")
        var page = range.lowerBound
        while page < range.upperBound {
            let start = firstPage(from: page, before: range.upperBound, protected: false)
            guard start < range.upperBound else { return }
            let end = firstPage(from: start, before: range.upperBound, protected: true)
            try protect(start..<end)
            protected.set(range: start..<end)
            page = end
        }
    }

    /// The first page in `start..<end` whose protected bit is `wanted`, or `end`.
    private func firstPage(from start: Int, before end: Int, protected wanted: Bool) -> Int {
        protected.words.withUnsafeBufferPointer { words in
            var page = start
            while page < end {
                let index = page >> 6
                var word = wanted ? words[index] : ~words[index]
                word &= UInt64.max << UInt64(page & 63)
                if word != 0 { return min(end, index << 6 | word.trailingZeroBitCount) }
                page = (index + 1) << 6
            }
            return end
        }
    }
}
