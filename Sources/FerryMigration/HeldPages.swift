import FerryProtocol
import FerrySystem

/// What a destination holds after a lost connection, as `RESUME_STATE` reports it (Protocol.md
/// 3.18): `held`, the pages whose last copy arrived intact (received, hash matched, not torn by
/// the loss); `current`, those of them whose copy came in round `round` (the one that was cut
/// off). Built from the streams' sinks once their threads have stopped.
struct HeldPages {
    let pageCount: Int
    let round: UInt32
    private(set) var held: DirtyBitmap
    private(set) var current: DirtyBitmap

    init(sinks: [PageSink], roundTable: PageRoundTable, pageCount: Int, round: UInt32) {
        self.pageCount = pageCount
        self.round = round
        var held = DirtyBitmap(count: pageCount)
        // Each sink has bits only for its own stripe.
        held.withUnsafeMutableWords { words in
            for sink in sinks {
                for (index, word) in sink.held.words.enumerated() { words[index] |= word & ~sink.stale.words[index] }
            }
        }
        var current = DirtyBitmap(count: pageCount)
        held.forEachSetBit { page in
            if roundTable[page] == round { current.set(page) }
        }
        self.held = held
        self.current = current
    }

    init(held: DirtyBitmap, current: DirtyBitmap, round: UInt32) {
        precondition(held.count == current.count, "bitmaps of one image")
        self.pageCount = held.count
        self.round = round
        self.held = held
        self.current = current
    }

    /// From the words of `RESUME_STATE` frames (checked to cover 0 … pageCount − 1 in order).
    init(frames: [ResumeState], pageCount: Int, round: UInt32) throws(ProtocolError) {
        self.pageCount = pageCount
        self.round = round
        var held = DirtyBitmap(count: pageCount)
        var current = DirtyBitmap(count: pageCount)
        var next: UInt64 = 0
        for frame in frames {
            guard frame.pageCount == UInt64(pageCount), frame.firstPage == next, frame.round == round else {
                throw ProtocolError(
                    .invalidField,
                    "RESUME_STATE for pages \(frame.firstPage)… of \(frame.pageCount), round \(frame.round): expected pages \(next)… of \(pageCount), round \(round)"
                )
            }
            let firstWord = Int(frame.firstPage / 64)
            held.withUnsafeMutableWords { words in
                for (index, word) in frame.held.enumerated() { words[firstWord + index] = word }
            }
            current.withUnsafeMutableWords { words in
                for (index, word) in frame.current.enumerated() { words[firstWord + index] = word }
            }
            next += frame.pages
        }
        guard next == UInt64(pageCount) else {
            throw ProtocolError(.truncated, "RESUME_STATE frames cover \(next) of \(pageCount) pages")
        }
        self.held = held
        self.current = current
    }

    var heldCount: Int { held.popcount() }
    var currentCount: Int { current.popcount() }

    /// The `RESUME_STATE` frames, in order, each covering at most `ResumeState.maxPagesPerFrame`.
    func frames() -> [ResumeState] {
        var frames: [ResumeState] = []
        var first = 0
        repeat {
            let pages = min(ResumeState.maxPagesPerFrame, pageCount - first)
            let words = (first / 64)..<((first + pages + 63) / 64)
            frames.append(
                ResumeState(
                    pageCount: UInt64(pageCount), firstPage: UInt64(first), pages: UInt64(pages), round: round,
                    held: Array(held.words[words]), current: Array(current.words[words])))
            first += pages
        } while first < pageCount
        return frames
    }

    /// How many frames answer a RESUME for `pageCount` pages.
    static func frameCount(pageCount: Int) -> Int {
        (pageCount + ResumeState.maxPagesPerFrame - 1) / ResumeState.maxPagesPerFrame
    }
}
