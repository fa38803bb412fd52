import FerryCodec

/// What the user asked for: a fixed encoding, or the cheaper one as measured.
public enum CompressionChoice: String, Sendable, CaseIterable {
    /// Per batch, whichever of LZ4 and raw has moved a page at the lower measured cost.
    case auto
    /// LZ4 whenever it makes a page smaller.
    case lz4
    /// Never compress (zero pages are still markers).
    case none
}

/// Picks LZ4 or raw for each batch from what batches of each kind have cost.
///
/// The cost of a batch is the time from reading its first page to its last byte being accepted
/// by the socket, per non-zero page: encoding CPU plus the time the link (and, through flow
/// control, the destination's decoding) takes for its bytes. On a fast link raw wins because
/// LZ4 costs more CPU than it saves on the wire; on a slow link LZ4 wins because the wire is the
/// cost. The chooser keeps a smoothed estimate per kind and re-measures the losing kind on every
/// `exploreEvery`-th batch, so a change in the link or the data is noticed within a few batches;
/// when the loser costs more than `clearMargin` times the winner, only every
/// `exploreClearLoserEvery`-th batch (on loopback LZ4 costs ~3× raw, and exploring it every 16th
/// batch took ~7% of the CPU). A winner that gets dearer is noticed at once, without exploring.
///
/// Pure: durations in, choices out.
struct EncodingChooser {
    static let exploreEvery = 16
    static let exploreClearLoserEvery = 64
    static let clearMargin = 1.5
    static let smoothing = 0.3
    /// Batches with fewer non-zero pages say little about per-page cost.
    static let minimumPages = 16

    let choice: CompressionChoice
    private(set) var lz4SecondsPerPage: Double?
    private(set) var rawSecondsPerPage: Double?
    private var batches = 0

    init(_ choice: CompressionChoice) {
        self.choice = choice
    }

    /// The encoding for the next batch.
    mutating func next() -> CompressionMode {
        switch choice {
        case .lz4: return .lz4
        case .none: return .none
        case .auto: break
        }
        batches += 1
        guard let lz4 = lz4SecondsPerPage else { return .lz4 }
        guard let raw = rawSecondsPerPage else { return .none }
        let best: CompressionMode = lz4 <= raw ? .lz4 : .none
        let interval = max(lz4, raw) > Self.clearMargin * min(lz4, raw) ? Self.exploreClearLoserEvery : Self.exploreEvery
        if batches % interval == 0 { return best == .lz4 ? .none : .lz4 }
        return best
    }

    /// What a batch encoded with `mode` cost.
    mutating func record(_ mode: CompressionMode, nonZeroPages: Int, seconds: Double) {
        guard nonZeroPages >= Self.minimumPages, seconds > 0 else { return }
        let perPage = seconds / Double(nonZeroPages)
        func smooth(_ old: Double?) -> Double { old.map { $0 + Self.smoothing * (perPage - $0) } ?? perPage }
        switch mode {
        case .lz4: lz4SecondsPerPage = smooth(lz4SecondsPerPage)
        case .none: rawSecondsPerPage = smooth(rawSecondsPerPage)
        }
    }
}
