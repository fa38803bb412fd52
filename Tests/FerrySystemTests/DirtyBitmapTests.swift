import FerrySystem
import FerryTestSupport
import Testing

@Suite struct DirtyBitmapTests {

    static func setBits(_ bitmap: DirtyBitmap) -> [Int] {
        var pages: [Int] = []
        bitmap.forEachSetBit { pages.append($0) }
        return pages
    }

    @Test(arguments: [0, 1, 63, 64, 65, 127, 128, 1000, 4097])
    func randomOperationsMatchASetReference(count: Int) {
        var random = SplitMix64(seed: UInt64(count) &* 7919)
        var bitmap = DirtyBitmap(count: count)
        var reference = Set<Int>()
        var other = DirtyBitmap(count: count)
        var otherReference = Set<Int>()
        for _ in 0..<2000 where count > 0 {
            let page = Int.random(in: 0..<count, using: &random)
            switch Int.random(in: 0..<100, using: &random) {
            case 0..<45:
                bitmap.set(page)
                reference.insert(page)
            case 45..<75:
                bitmap.clear(page)
                reference.remove(page)
            case 75..<85:
                let end = Int.random(in: page...min(count, page + 200), using: &random)
                bitmap.set(range: page..<end)
                reference.formUnion(page..<end)
            case 85..<95:
                other.set(page)
                otherReference.insert(page)
            case 95..<98:
                bitmap.formUnion(other)
                reference.formUnion(otherReference)
            case 98:
                bitmap.clearAll()
                reference.removeAll()
            default:
                bitmap.setAll()
                reference = Set(0..<count)
            }
            #expect(bitmap[page] == reference.contains(page))
        }
        #expect(Self.setBits(bitmap) == reference.sorted())
        #expect(bitmap.popcount() == reference.count)
        #expect(bitmap.isEmpty == reference.isEmpty)
        #expect(bitmap.count == count)
        #expect(bitmap.words.count == (count + 63) / 64)
    }

    @Test(arguments: [(0, 0), (0, 64), (3, 64), (63, 65), (64, 128), (5, 200), (130, 131), (0, 200)])
    func setRangeSetsExactlyTheRange(lower: Int, upper: Int) {
        var bitmap = DirtyBitmap(count: 200)
        bitmap.set(range: lower..<upper)
        #expect(Self.setBits(bitmap) == Array(lower..<upper))
    }

    @Test func setAllLeavesNoBitsPastCount() {
        var bitmap = DirtyBitmap(count: 70)
        bitmap.setAll()
        #expect(bitmap.popcount() == 70)
        #expect(bitmap.words == [UInt64.max, (1 << 6) - 1])
        bitmap.withUnsafeMutableWords { $0[1] = .max }
        #expect(bitmap.popcount() == 70, "bits past count are cleared after withUnsafeMutableWords")
        bitmap.clearAll()
        #expect(bitmap.isEmpty)
    }

    @Test func forEachSetBitStopsOnError() {
        struct Stop: Error {}
        var bitmap = DirtyBitmap(count: 300)
        for page in [1, 70, 299] { bitmap.set(page) }
        var seen: [Int] = []
        #expect(throws: Stop.self) {
            try bitmap.forEachSetBit { page in
                seen.append(page)
                if page == 70 { throw Stop() }
            }
        }
        #expect(seen == [1, 70])
    }
}
