import FerryProtocol
import Testing

/// `POSTCOPY_BEGIN` and `PAGE_REQUEST` (Protocol.md section 11): the rules a receiver checks.
@Suite struct PostcopyMessageTests {
    /// A POSTCOPY_BEGIN payload written by hand (no validation).
    func begin(
        pageCount: UInt64 = 130, staleCount: UInt64 = 3, stale: [UInt64] = [1, 1 << 63, 0b10], extra: [UInt8] = []
    ) -> [UInt8] {
        var out: [UInt8] = []
        func le<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        le(UInt32(4))
        le(UInt32(0))
        le(pageCount)
        le(UInt64(0xABCD))
        le(staleCount)
        for word in stale { le(word) }
        return out + extra
    }

    func request(count: UInt32, pages: [UInt64]) -> [UInt8] {
        var out: [UInt8] = []
        func le<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        le(count)
        le(UInt32(0))
        for page in pages { le(page) }
        return out
    }

    @Test func aValidBeginDecodes() throws {
        let message = try begin().withUnsafeBytes { try PostcopyBegin(payload: $0) }
        #expect(message.round == 4 && message.pageCount == 130 && message.staleCount == 3)
        #expect(message.stale == [1, 1 << 63, 0b10] && message.stateDigest == 0xABCD)
    }

    @Test func brokenBeginsAreRejected() {
        expectRejected(PostcopyBegin.self, begin(staleCount: 4), .invalidField)  // count differs from the bitmap
        expectRejected(PostcopyBegin.self, begin(stale: [1, 1 << 63, 0b110]), .invalidField)  // page 130 of 130
        expectRejected(PostcopyBegin.self, begin(pageCount: 0, staleCount: 0, stale: []), .invalidField)
        expectRejected(PostcopyBegin.self, begin(pageCount: PostcopyBegin.maxPages + 1, stale: []), .invalidField)
        expectRejected(PostcopyBegin.self, begin(stale: [1, 1 << 63]), .truncated)
        expectRejected(PostcopyBegin.self, begin(extra: [0]), .trailingBytes)
    }

    @Test func requestsNameOneToMaxPages() throws {
        let decoded = try request(count: 2, pages: [9, 3]).withUnsafeBytes { try PageRequest(payload: $0) }
        #expect(decoded.pages == [9, 3])
        expectRejected(PageRequest.self, request(count: 0, pages: []), .invalidField)
        let tooMany = UInt32(PageRequest.maxPages + 1)
        expectRejected(
            PageRequest.self, request(count: tooMany, pages: Array(repeating: 1, count: Int(tooMany))), .invalidField)
        expectRejected(PageRequest.self, request(count: 3, pages: [1, 2]), .truncated)
        expectRejected(PageRequest.self, request(count: 1, pages: [1, 2]), .trailingBytes)
        // The largest request fits the frame type's limit.
        #expect(PageRequest(pages: Array(repeating: 5, count: PageRequest.maxPages)).encodedPayload().count <= 4096)
    }
}
