import FerryCodec
import FerryGuestMigration
import FerryKVMMigration
import Testing

@testable import FerryMigration

@Suite struct EncodingChooserTests {
    @Test func fixedChoicesNeverChange() {
        var lz4 = EncodingChooser(.lz4)
        var none = EncodingChooser(.none)
        for _ in 0..<40 {
            #expect(lz4.next() == .lz4)
            #expect(none.next() == .none)
            lz4.record(.lz4, nonZeroPages: 100, seconds: 1)
            none.record(.none, nonZeroPages: 100, seconds: 0.001)
        }
    }

    /// Simulates batches of 512 non-zero pages whose cost per page is `lz4Cost`/`rawCost`;
    /// returns the modes chosen. Two batches make a sample.
    func run(_ chooser: inout EncodingChooser, batches: Int, lz4Cost: Double, rawCost: Double) -> [CompressionMode] {
        (0..<batches).map { _ in
            let mode = chooser.next()
            chooser.record(mode, nonZeroPages: 512, seconds: 512 * (mode == .lz4 ? lz4Cost : rawCost))
            return mode
        }
    }

    @Test func autoMeasuresBothThenKeepsTheCheaperAndStillExplores() {
        var chooser = EncodingChooser(.auto)
        // Fast link: raw costs 1 µs per page, LZ4 1.2 µs (close: explored every 16th sample).
        let modes = run(&chooser, batches: 128, lz4Cost: 1.2e-6, rawCost: 1e-6)
        #expect(Array(modes.prefix(4)) == [.lz4, .lz4, .none, .none], "a whole sample of each first")
        let later = modes.dropFirst(4)
        #expect(later.filter { $0 == .none }.count >= 112)
        #expect(later.contains(.lz4), "the losing encoding is measured again now and then")
    }

    @Test func aCloseLoserIsExploredMoreOftenThanAClearOne() {
        var close = EncodingChooser(.auto)
        var clear = EncodingChooser(.auto)
        // 2 batches per sample: 4 to measure both, then 256 samples.
        let closeModes = run(&close, batches: 516, lz4Cost: 1.2e-6, rawCost: 1e-6).dropFirst(4)
        let clearModes = run(&clear, batches: 516, lz4Cost: 3e-6, rawCost: 1e-6).dropFirst(4)
        #expect(closeModes.filter { $0 == .lz4 }.count == 2 * 16)  // every 16th of 256 samples
        #expect(clearModes.filter { $0 == .lz4 }.count == 2 * 4)  // every 64th
    }

    /// One slow batch (a preemption) does not flip the choice: it is averaged over its sample.
    @Test func aSlowBatchIsAveragedOverItsSample() {
        var chooser = EncodingChooser(.auto)
        _ = run(&chooser, batches: 8, lz4Cost: 3e-6, rawCost: 1e-6)
        var modes: [CompressionMode] = []
        for batch in 0..<20 {
            let mode = chooser.next()
            modes.append(mode)
            // Batches of 256 pages: four per sample; the first raw batch is stalled 20× (alone, it
            // would have made raw look dearer than LZ4).
            let cost = mode == .lz4 ? 3e-6 : (batch == 0 ? 20e-6 : 1e-6)
            chooser.record(mode, nonZeroPages: 256, seconds: 256 * cost)
        }
        #expect(!modes.contains(.lz4), "\(modes)")
    }

    @Test func autoFollowsALinkThatSlowsDown() {
        var chooser = EncodingChooser(.auto)
        _ = run(&chooser, batches: 40, lz4Cost: 3e-6, rawCost: 1e-6)
        // The link drops to 1 Gbit/s: a raw page now costs 33 µs on the wire, an LZ4 page ~17 µs.
        let modes = run(&chooser, batches: 64, lz4Cost: 17e-6, rawCost: 33e-6)
        #expect(modes.suffix(32).filter { $0 == .lz4 }.count >= 29)
    }

    @Test func aSampleNeedsEnoughPages() {
        var chooser = EncodingChooser(.auto)
        let mode = chooser.next()
        chooser.record(mode, nonZeroPages: 1000, seconds: 1)
        #expect(chooser.lz4SecondsPerPage == nil, "1000 pages are not a sample yet")
        #expect(chooser.next() == mode, "the sample continues")
        chooser.record(mode, nonZeroPages: 24, seconds: 1)
        #expect(chooser.lz4SecondsPerPage == 2.0 / 1024)
    }
}
