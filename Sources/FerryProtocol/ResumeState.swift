/// `RESUME_STATE` (destination → source): which pages the destination holds intact, for one range
/// of pages; the answer to `RESUME` is one or more of these frames covering pages 0 … page_count − 1
/// in order (Protocol.md 3.18).
///
/// `held`: bit set = the destination holds a copy of the page whose bytes matched the hash that
/// came with it. `current`: bit set = that copy came in round `round` (the round `RESUME` named);
/// every `current` bit is also a `held` bit. Bit i of word w is page `firstPage + 64 w + i`.
public struct ResumeState: FrameMessage, ValidatingMessage, Equatable {
    public static let frameType = FrameType.resumeState

    /// Most pages one frame covers: its two bitmaps take 16 MiB.
    public static let maxPagesPerFrame = 1 << 26
    static let fixedSize = 32

    public var pageCount: UInt64
    /// First page this frame covers: a multiple of 64.
    public var firstPage: UInt64
    /// Pages this frame covers (1 … `maxPagesPerFrame`).
    public var pages: UInt64
    /// Echo of `RESUME.round`.
    public var round: UInt32
    public var held: [UInt64]
    public var current: [UInt64]

    public init(pageCount: UInt64, firstPage: UInt64, pages: UInt64, round: UInt32, held: [UInt64], current: [UInt64]) {
        self.pageCount = pageCount
        self.firstPage = firstPage
        self.pages = pages
        self.round = round
        self.held = held
        self.current = current
    }

    /// 64-bit words of each bitmap for `pages` pages.
    public static func words(pages: UInt64) -> Int { Int((pages + 63) / 64) }

    public func validate() throws(ProtocolError) {
        try Self.checkRange(pageCount: pageCount, firstPage: firstPage, pages: pages)
        let words = Self.words(pages: pages)
        guard held.count == words, current.count == words else {
            throw invalid(
                "RESUME_STATE",
                "bitmaps of \(held.count) and \(current.count) words for \(pages) pages (\(words) words each)")
        }
        let tailBits = Int(pages % 64)
        let tailMask: UInt64 = tailBits == 0 ? 0 : ~0 << UInt64(tailBits)
        for index in 0..<words {
            if current[index] & ~held[index] != 0 {
                throw invalid(
                    "RESUME_STATE",
                    "page \(firstPage + UInt64(index) * 64 + UInt64((current[index] & ~held[index]).trailingZeroBitCount)) is current but not held"
                )
            }
        }
        if words > 0 && (held[words - 1] | current[words - 1]) & tailMask != 0 {
            throw invalid("RESUME_STATE", "bits set past the \(pages) pages the frame covers")
        }
    }

    private static func checkRange(pageCount: UInt64, firstPage: UInt64, pages: UInt64) throws(ProtocolError) {
        if pageCount == 0 { throw invalid("RESUME_STATE", "page_count is 0") }
        if firstPage % 64 != 0 { throw invalid("RESUME_STATE", "first_page \(firstPage) is not a multiple of 64") }
        if pages == 0 || pages > UInt64(maxPagesPerFrame) {
            throw invalid("RESUME_STATE", "pages \(pages) is outside 1…\(maxPagesPerFrame)")
        }
        if firstPage >= pageCount || pages > pageCount - firstPage {
            throw invalid(
                "RESUME_STATE", "pages \(firstPage)…\(firstPage &+ pages &- 1) run past page_count \(pageCount)")
        }
    }

    public func encode(into out: inout [UInt8]) {
        requireValid()
        out.reserveCapacity(out.count + Self.fixedSize + 16 * held.count)
        out.appendLittleEndian(pageCount)
        out.appendLittleEndian(firstPage)
        out.appendLittleEndian(pages)
        out.appendLittleEndian(round)
        out.appendZeros(4)
        for word in held { out.appendLittleEndian(word) }
        for word in current { out.appendLittleEndian(word) }
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "RESUME_STATE")
        pageCount = try reader.read(UInt64.self, "page_count")
        firstPage = try reader.read(UInt64.self, "first_page")
        pages = try reader.read(UInt64.self, "pages")
        round = try reader.read(UInt32.self, "round")
        try reader.reserved(4)
        // The range decides the bitmaps' size: check it before reading (or allocating) them.
        try Self.checkRange(pageCount: pageCount, firstPage: firstPage, pages: pages)
        let words = Self.words(pages: pages)
        if reader.remaining != 16 * words {
            throw ProtocolError(
                reader.remaining < 16 * words ? .truncated : .trailingBytes,
                "RESUME_STATE for \(pages) pages needs \(16 * words) bitmap bytes, has \(reader.remaining)")
        }
        var held = [UInt64](repeating: 0, count: words)
        var current = [UInt64](repeating: 0, count: words)
        for index in 0..<words { held[index] = try reader.read(UInt64.self, "held") }
        for index in 0..<words { current[index] = try reader.read(UInt64.self, "current") }
        self.held = held
        self.current = current
        try reader.finish()
        try validate()
    }
}
