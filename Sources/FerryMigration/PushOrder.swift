import FerrySystem

/// The order of post-copy's background push (pure): the hot stale pages first — those dirtied
/// in each of the last two pre-copy intervals, which a guest that keeps a working set is the
/// likeliest to touch soon after the switch — then the rest, each part in page order. Pages
/// already sent (not in `remaining`) are skipped; a resume starts over on what is left.
struct PushOrder: Equatable {
    let hot: DirtyBitmap
    private var hotCursor = 0
    private var cursor = 0

    /// `stale`: the pages the destination lacks; `lastRound`: those the last pre-copy round sent
    /// (dirtied in the interval before it).
    init(stale: DirtyBitmap, lastRound: DirtyBitmap) {
        var hot = stale
        if lastRound.count == stale.count {
            hot.withUnsafeMutableWords { words in
                for index in 0..<words.count { words[index] &= lastRound.words[index] }
            }
        } else {
            hot.clearAll()
        }
        self.hot = hot
    }

    /// Up to `limit` pages of `remaining`, hot ones first; empty when none is left.
    mutating func next(_ limit: Int, of remaining: DirtyBitmap) -> [Int] {
        var pages: [Int] = []
        let count = remaining.count
        while pages.count < limit && hotCursor < count {
            if hot[hotCursor] && remaining[hotCursor] { pages.append(hotCursor) }
            hotCursor += 1
        }
        while pages.count < limit && cursor < count {
            // A hot page taken above is no longer in `remaining` once its batch went.
            if remaining[cursor] && !pages.contains(cursor) { pages.append(cursor) }
            cursor += 1
        }
        return pages
    }

    /// After a resume: both passes start over on what is left.
    mutating func restart() {
        hotCursor = 0
        cursor = 0
    }
}
