import FerryCodec
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

    /// Simulates batches whose cost per page is `lz4Cost`/`rawCost`; returns the modes chosen.
    func run(_ chooser: inout EncodingChooser, batches: Int, lz4Cost: Double, rawCost: Double) -> [CompressionMode] {
        (0..<batches).map { _ in
            let mode = chooser.next()
            chooser.record(mode, nonZeroPages: 500, seconds: 500 * (mode == .lz4 ? lz4Cost : rawCost))
            return mode
        }
    }

    @Test func autoMeasuresBothThenKeepsTheCheaperAndStillExplores() {
        var chooser = EncodingChooser(.auto)
        // Fast link: raw costs 1 µs per page, LZ4 3 µs.
        let modes = run(&chooser, batches: 64, lz4Cost: 3e-6, rawCost: 1e-6)
        #expect(Array(modes.prefix(2)) == [.lz4, .none])
        let later = modes.dropFirst(2)
        #expect(later.filter { $0 == .none }.count >= 56)
        #expect(later.contains(.lz4), "the losing encoding is measured again now and then")
    }

    @Test func aCloseLoserIsExploredMoreOftenThanAClearOne() {
        var close = EncodingChooser(.auto)
        var clear = EncodingChooser(.auto)
        let closeModes = run(&close, batches: 258, lz4Cost: 1.2e-6, rawCost: 1e-6).dropFirst(2)
        let clearModes = run(&clear, batches: 258, lz4Cost: 3e-6, rawCost: 1e-6).dropFirst(2)
        #expect(closeModes.filter { $0 == .lz4 }.count == 16)   // every 16th of 256
        #expect(clearModes.filter { $0 == .lz4 }.count == 4)    // every 64th
    }

    @Test func autoFollowsALinkThatSlowsDown() {
        var chooser = EncodingChooser(.auto)
        _ = run(&chooser, batches: 40, lz4Cost: 3e-6, rawCost: 1e-6)
        // The link drops to 1 Gbit/s: a raw page now costs 33 µs on the wire, an LZ4 page ~17 µs.
        let modes = run(&chooser, batches: 64, lz4Cost: 17e-6, rawCost: 33e-6)
        #expect(modes.suffix(32).filter { $0 == .lz4 }.count >= 29)
    }

    @Test func tinyBatchesDoNotMoveTheEstimate() {
        var chooser = EncodingChooser(.auto)
        chooser.record(.lz4, nonZeroPages: 3, seconds: 1)
        #expect(chooser.lz4SecondsPerPage == nil)
    }
}
