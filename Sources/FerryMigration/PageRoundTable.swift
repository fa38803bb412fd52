import Glibc

/// The destination's round of each page's last copy (the `round` of the `PAGE_BATCH` it came in),
/// shared by the streams' sinks like `PageHashTable`: after a lost connection it tells which pages
/// arrived in the round that was cut off (Protocol.md, "Resuming after a connection loss").
///
/// `@unchecked Sendable`: each stream's sink writes only the pages of its own stripe; the session
/// reads the table only after it has stopped the streams' threads.
final class PageRoundTable: @unchecked Sendable {
    let rounds: UnsafeMutableBufferPointer<UInt32>

    init(pageCount: Int) {
        rounds = allocateZeroed(UInt32.self, count: pageCount)
    }

    deinit { free(rounds.baseAddress) }

    subscript(page: Int) -> UInt32 {
        get { rounds[page] }
        set { rounds[page] = newValue }
    }
}
