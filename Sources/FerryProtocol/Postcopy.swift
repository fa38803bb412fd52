/// `POSTCOPY_BEGIN` (source → destination, control connection): the switch to post-copy
/// (Protocol.md 11.2). The vCPUs are paused and `DEVICE_STATE` has been sent; from here the
/// destination may run the guest before it holds every page. `stale` lists the pages whose
/// copy at the destination, if any, is not the final one (dirtied since it was sent, or never
/// sent): the destination drops them and fetches them on demand. Bit i of word w is page
/// 64 w + i.
public struct PostcopyBegin: FrameMessage, ValidatingMessage, Equatable {
    public static let frameType = FrameType.postcopyBegin

    static let fixedSize = 32
    /// Most pages one `POSTCOPY_BEGIN` covers: its bitmap fills the frame.
    public static let maxPages = UInt64(ProtocolLimits.maxFramePayload - fixedSize) / 8 * 64

    /// The post-copy round: the number the pages pushed after the switch carry in `PAGE_BATCH`.
    public var round: UInt32
    /// Must equal `HELLO.page_count`.
    public var pageCount: UInt64
    /// XXH3-64 (seed 0) over the `GUEST_CONFIG` payload followed by the `DEVICE_STATE` payload,
    /// as `COMPLETE.state_digest` (3.9): checked before the destination answers `VERIFIED`.
    public var stateDigest: UInt64
    /// Pages set in `stale`.
    public var staleCount: UInt64
    public var stale: [UInt64]

    public init(round: UInt32, pageCount: UInt64, stateDigest: UInt64, stale: [UInt64]) {
        self.round = round
        self.pageCount = pageCount
        self.stateDigest = stateDigest
        self.stale = stale
        self.staleCount = stale.reduce(0) { $0 + UInt64($1.nonzeroBitCount) }
    }

    /// 64-bit words of the bitmap for `pageCount` pages.
    public static func words(pageCount: UInt64) -> Int { Int((pageCount + 63) / 64) }

    public func validate() throws(ProtocolError) {
        try Self.checkCount(pageCount)
        let words = Self.words(pageCount: pageCount)
        guard stale.count == words else {
            throw invalid("POSTCOPY_BEGIN", "a bitmap of \(stale.count) words for \(pageCount) pages (\(words) words)")
        }
        let tailBits = Int(pageCount % 64)
        if tailBits != 0 && stale[words - 1] & (~0 << UInt64(tailBits)) != 0 {
            throw invalid("POSTCOPY_BEGIN", "bits set past the \(pageCount) pages")
        }
        let counted = stale.reduce(0) { $0 + UInt64($1.nonzeroBitCount) }
        if counted != staleCount {
            throw invalid("POSTCOPY_BEGIN", "stale_count \(staleCount), but the bitmap has \(counted) pages set")
        }
    }

    private static func checkCount(_ pageCount: UInt64) throws(ProtocolError) {
        if pageCount == 0 || pageCount > maxPages {
            throw invalid("POSTCOPY_BEGIN", "page_count \(pageCount) is outside 1…\(maxPages)")
        }
    }

    public func encode(into out: inout [UInt8]) {
        requireValid()
        out.reserveCapacity(out.count + Self.fixedSize + 8 * stale.count)
        out.appendLittleEndian(round)
        out.appendZeros(4)
        out.appendLittleEndian(pageCount)
        out.appendLittleEndian(stateDigest)
        out.appendLittleEndian(staleCount)
        for word in stale { out.appendLittleEndian(word) }
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "POSTCOPY_BEGIN")
        round = try reader.read(UInt32.self, "round")
        try reader.reserved(4)
        pageCount = try reader.read(UInt64.self, "page_count")
        stateDigest = try reader.read(UInt64.self, "state_digest")
        staleCount = try reader.read(UInt64.self, "stale_count")
        // The page count decides the bitmap's size: check it before reading (or allocating) it.
        try Self.checkCount(pageCount)
        let words = Self.words(pageCount: pageCount)
        if reader.remaining != 8 * words {
            throw ProtocolError(
                reader.remaining < 8 * words ? .truncated : .trailingBytes,
                "POSTCOPY_BEGIN for \(pageCount) pages needs \(8 * words) bitmap bytes, has \(reader.remaining)")
        }
        var stale = [UInt64](repeating: 0, count: words)
        for index in 0..<words { stale[index] = try reader.read(UInt64.self, "stale") }
        self.stale = stale
        try reader.finish()
        try validate()
    }
}

/// `PAGE_REQUEST` (destination → source, control connection, post-copy only): pages the guest
/// touched and waits for (Protocol.md 11.3). The source sends them ahead of the background push.
public struct PageRequest: FrameMessage, ValidatingMessage, Equatable {
    public static let frameType = FrameType.pageRequest

    /// Most pages one request names (the frame stays within 4096 bytes).
    public static let maxPages = 511

    public var pages: [UInt64]

    public init(pages: [UInt64]) {
        self.pages = pages
    }

    public func validate() throws(ProtocolError) {
        if pages.isEmpty || pages.count > Self.maxPages {
            throw invalid("PAGE_REQUEST", "count \(pages.count) is outside 1…\(Self.maxPages)")
        }
    }

    public func encode(into out: inout [UInt8]) {
        requireValid()
        out.appendLittleEndian(UInt32(pages.count))
        out.appendZeros(4)
        for page in pages { out.appendLittleEndian(page) }
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "PAGE_REQUEST")
        let count = Int(try reader.read(UInt32.self, "count"))
        try reader.reserved(4)
        if count == 0 || count > Self.maxPages {
            throw invalid("PAGE_REQUEST", "count \(count) is outside 1…\(Self.maxPages)")
        }
        if reader.remaining != 8 * count {
            throw ProtocolError(
                reader.remaining < 8 * count ? .truncated : .trailingBytes,
                "PAGE_REQUEST of \(count) pages needs \(8 * count) bytes, has \(reader.remaining)")
        }
        var pages: [UInt64] = []
        pages.reserveCapacity(count)
        for _ in 0..<count { pages.append(try reader.read(UInt64.self, "page")) }
        self.pages = pages
        try reader.finish()
    }
}
