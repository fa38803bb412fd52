/// How one `PAGE_BATCH` entry carries its page (Protocol.md 3.5).
public enum PageEncoding: UInt8, Sendable, CaseIterable {
    /// No payload: the page is all zero bytes.
    case zero = 1
    /// Exactly `page_size` bytes: the page as is.
    case raw = 2
    /// One LZ4 block, `0 < length < page_size`, that decompresses to exactly `page_size` bytes.
    case lz4 = 3
    /// A page that is zero except for the words listed: `length / 10` records of a UInt16 word
    /// index and the UInt64 word (Protocol.md 3.5). Only to a peer whose codecs include `words`.
    case words = 4

    /// Whether an entry of this encoding may carry `length` payload bytes for pages of `pageSize`.
    @inline(__always)
    public func allowsLength(_ length: Int, pageSize: Int) -> Bool {
        switch self {
        case .zero: return length == 0
        case .raw: return length == pageSize
        case .lz4: return length > 0 && length < pageSize
        case .words: return length > 0 && length % 10 == 0 && length < pageSize  // records of 2 + 8 bytes
        }
    }
}
