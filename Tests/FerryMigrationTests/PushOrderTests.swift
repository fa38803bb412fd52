import FerrySystem
import Testing

@testable import FerryMigration

/// Post-copy's push order (issue 19, item 1): the stale pages the last two pre-copy intervals
/// both dirtied go first, then the rest in page order; sent pages are skipped; a resume starts
/// over on what is left.
@Suite struct PushOrderTests {
    static func bitmap(_ count: Int, _ pages: [Int]) -> DirtyBitmap {
        var bitmap = DirtyBitmap(count: count)
        for page in pages { bitmap.set(page) }
        return bitmap
    }

    @Test func hotPagesGoFirstThenTheRestInOrder() {
        let stale = Self.bitmap(200, [1, 5, 9, 64, 70, 130, 199])
        let lastRound = Self.bitmap(200, [5, 70, 100, 199])  // 100: sent, not stale now
        var order = PushOrder(stale: stale, lastRound: lastRound)
        #expect(order.hot == Self.bitmap(200, [5, 70, 199]))
        var remaining = stale
        var sent: [Int] = []
        while true {
            let pages = order.next(2, of: remaining)
            if pages.isEmpty { break }
            #expect(pages.count <= 2 && Set(pages).count == pages.count)
            for page in pages { remaining.clear(page) }
            sent += pages
        }
        #expect(sent == [5, 70, 199, 1, 9, 64, 130], "\(sent)")
    }

    @Test func aBatchDoesNotRepeatAHotPageAndAResumeStartsOver() {
        let stale = Self.bitmap(8, [0, 1, 2, 3])
        var order = PushOrder(stale: stale, lastRound: Self.bitmap(8, [3]))
        // The hot page and the first cold ones in one batch, without the hot one twice.
        #expect(order.next(3, of: stale) == [3, 0, 1])
        // Lost before it went: a resume says the destination holds 0 and 3.
        order.restart()
        let remaining = Self.bitmap(8, [1, 2])
        #expect(order.next(8, of: remaining) == [1, 2])
        #expect(order.next(8, of: Self.bitmap(8, [])) == [])
    }

    @Test func noHistoryMeansPageOrder() {
        let stale = Self.bitmap(100, [3, 50, 99])
        var order = PushOrder(stale: stale, lastRound: DirtyBitmap(count: 0))
        #expect(order.hot.isEmpty)
        #expect(order.next(10, of: stale) == [3, 50, 99])
    }
}
