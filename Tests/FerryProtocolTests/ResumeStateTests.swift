import FerryProtocol
import Testing

/// `RESUME_STATE` (Protocol.md 3.18): the range and bitmap rules a receiver checks.
@Suite struct ResumeStateTests {
    /// The payload of a RESUME_STATE, written by hand (no validation).
    func payload(
        pageCount: UInt64 = 200, firstPage: UInt64 = 64, pages: UInt64 = 136, round: UInt32 = 2,
        held: [UInt64] = [~0, ~0, 0xFF], current: [UInt64] = [1, 0, 0x80], extra: [UInt8] = []
    ) -> [UInt8] {
        var out: [UInt8] = []
        func le<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        le(pageCount)
        le(firstPage)
        le(pages)
        le(round)
        le(UInt32(0))
        for word in held { le(word) }
        for word in current { le(word) }
        return out + extra
    }

    @Test func aValidFrameDecodes() throws {
        let state = try payload().withUnsafeBytes { try ResumeState(payload: $0) }
        #expect(
            state.held == [~0, ~0, 0xFF] && state.current == [1, 0, 0x80] && state.firstPage == 64 && state.pages == 136
        )
    }

    @Test func brokenRulesAreRejected() {
        expectRejected(ResumeState.self, payload(current: [2, 0, 0x100]), .invalidField)  // current page not held
        expectRejected(ResumeState.self, payload(held: [~0, ~0, 0x1FF]), .invalidField)  // bit past the 136 pages
        expectRejected(ResumeState.self, payload(firstPage: 32), .invalidField)  // not a multiple of 64
        expectRejected(ResumeState.self, payload(pages: 137), .invalidField)  // runs past page_count
        expectRejected(ResumeState.self, payload(pages: 0, held: [], current: []), .invalidField)
        expectRejected(ResumeState.self, payload(pageCount: 0), .invalidField)
        expectRejected(
            ResumeState.self,
            payload(pageCount: UInt64.max, firstPage: 0, pages: UInt64(ResumeState.maxPagesPerFrame) + 1), .invalidField
        )
        expectRejected(ResumeState.self, payload(extra: [0]), .trailingBytes)
        expectRejected(ResumeState.self, payload(held: [~0, ~0], current: [1, 0]), .truncated)
    }

    @Test func resumeNeedsPages() {
        var out: [UInt8] = []
        func le<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        le(UInt64(7))
        le(UInt64(3))
        le(UInt64(5))
        le(UInt64(0))
        le(UInt32(1))
        le(UInt32(0))  // id, token, page_count 0
        expectRejected(Resume.self, out, .invalidField)
    }
}
