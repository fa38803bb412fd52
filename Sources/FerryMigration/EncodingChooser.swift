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

/// Picks LZ4 or raw for each batch from what pages of each kind have cost.
///
/// The cost of a batch is the time from reading its first page to its last byte being accepted
/// by the socket, per non-zero page: encoding CPU plus the time the link (and, through flow
/// control, the destination's decoding) takes for its bytes. On a fast link raw wins because
/// LZ4 costs more CPU than it saves on the wire; on a slow link LZ4 wins because the wire is the
/// cost.
///
/// Costs are measured over **samples** of at least `samplePages` non-zero pages (consecutive
/// batches of one kind), not single batches: on two cores shared by both agents a single 1 MiB
/// batch is often stretched by a preemption, and per-batch estimates then flipped to LZ4 for no
/// reason (up to 20% of the pages of an idle loopback migration, at ~3× raw's CPU). The chooser
/// keeps a smoothed cost per kind and re-measures the losing kind every `exploreEvery`-th sample,
/// or every `exploreClearLoserEvery`-th when it costs more than `clearMargin` times the winner. A
/// winner that gets dearer is noticed at the end of its next sample, without exploring.
///
/// Pure: durations in, choices out.
struct EncodingChooser {
    static let exploreEvery = 16
    static let exploreClearLoserEvery = 64
    static let clearMargin = 1.5
    static let smoothing = 0.3
    /// Non-zero pages per sample (4 MiB of 4 KiB pages).
    static let samplePages = 1024

    let choice: CompressionChoice
    private(set) var lz4SecondsPerPage: Double?
    private(set) var rawSecondsPerPage: Double?
    /// Samples completed, and the one being measured.
    private var samples = 0
    private var sampleMode: CompressionMode?
    private var sampleSeconds = 0.0
    private var samplePagesSoFar = 0

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
        if let sampleMode { return sampleMode }
        let mode = nextSampleMode()
        sampleMode = mode
        return mode
    }

    private mutating func nextSampleMode() -> CompressionMode {
        samples += 1
        guard let lz4 = lz4SecondsPerPage else { return .lz4 }
        guard let raw = rawSecondsPerPage else { return .none }
        let best: CompressionMode = lz4 <= raw ? .lz4 : .none
        let interval =
            max(lz4, raw) > Self.clearMargin * min(lz4, raw) ? Self.exploreClearLoserEvery : Self.exploreEvery
        if samples % interval == 0 { return best == .lz4 ? .none : .lz4 }
        return best
    }

    /// What a batch encoded with `mode` cost.
    mutating func record(_ mode: CompressionMode, nonZeroPages: Int, seconds: Double) {
        guard choice == .auto, mode == sampleMode, seconds >= 0 else { return }
        sampleSeconds += seconds
        samplePagesSoFar += nonZeroPages
        guard samplePagesSoFar >= Self.samplePages else { return }
        let perPage = sampleSeconds / Double(samplePagesSoFar)
        func smooth(_ old: Double?) -> Double { old.map { $0 + Self.smoothing * (perPage - $0) } ?? perPage }
        switch mode {
        case .lz4: lz4SecondsPerPage = smooth(lz4SecondsPerPage)
        case .none: rawSecondsPerPage = smooth(rawSecondsPerPage)
        }
        sampleMode = nil
        sampleSeconds = 0
        samplePagesSoFar = 0
    }
}
