import FerryMigration
import Foundation

/// Formats the engine's `MigrationProgress` values for people: a bar redrawn in place on a
/// terminal, plain lines otherwise, one line per round's end and per event.
enum ProgressLine {
    /// The bar of a live value on a terminal, e.g.
    /// `[source] round 0 [#########...........] 47%  612/~1300 MB wire  elapsed 3.1s  ETA 3.4s (migration —)  198 MB/s`;
    /// on a terminal narrower than that, shorter forms (down to
    /// `round 0 [####......] 47% 612/~1300 MB wire elapsed 3.1s ETA 3.4s (all —) 198 MB/s`, which
    /// fits 80 columns), then none of the bar, then cut to `columns - 1` characters: a line that
    /// wraps cannot be redrawn in place.
    static func bar(_ progress: MigrationProgress, columns: Int? = nil) -> String {
        let fraction = progress.fractionOfRound ?? 0
        let elapsed = duration(progress.elapsedSeconds)
        let (round, migration) = (duration(progress.roundETASeconds), duration(progress.migrationETASeconds))
        let sendRate = rate(progress.sendBytesPerSecond)
        let wide =
            "\(percent(fraction))  \(wire(progress)) wire  elapsed \(elapsed)  ETA \(round) (migration \(migration))  "
            + sendRate
        let compact =
            "\(percent(fraction)) \(wire(progress)) wire elapsed \(elapsed) ETA \(round) (all \(migration)) \(sendRate)"
        func bar(_ width: Int) -> String {
            let filled = min(width, Int((fraction * Double(width)).rounded(.down)))
            return "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "] "
        }
        let candidates = [
            "[\(progress.role.rawValue)] round \(progress.round) \(bar(20))\(wide)",
            "round \(progress.round) \(bar(20))\(wide)",
            "round \(progress.round) \(bar(10))\(compact)",
            "round \(progress.round) \(compact)",
        ]
        guard let columns else { return candidates[0] }
        if let fitting = candidates.first(where: { $0.count < columns }) { return fitting }
        return String(candidates[3].prefix(max(columns - 1, 0)))
    }

    /// A live value as a plain line (stderr not a terminal), e.g.
    /// `[source] round 0: 47% (15400/32768 pages), 612/~1300 MB wire, elapsed 3.1s, ETA 3.4s (migration —), 198 MB/s`.
    static func plain(_ progress: MigrationProgress) -> String {
        let pages = progress.pagesInRound.map { "\(progress.pagesSent)/\($0)" } ?? "\(progress.pagesSent)"
        return "[\(progress.role.rawValue)] round \(progress.round): \(percent(progress.fractionOfRound ?? 0)) "
            + "(\(pages) pages), \(wire(progress)) wire, elapsed \(duration(progress.elapsedSeconds)), "
            + "\(eta(progress)), \(rate(progress.sendBytesPerSecond))"
    }

    /// A round's end: the source's figures and the convergence model's view, or what the
    /// destination received in the round.
    static func roundEnd(_ progress: MigrationProgress) -> String {
        let role = "[\(progress.role.rawValue)]"
        let elapsed = "elapsed \(duration(progress.elapsedSeconds))"
        guard progress.role == .source else {
            return "\(role) round \(progress.round): \(progress.pagesSent) pages (\(mb(progress.roundWireBytes)) MB) "
                + "received, \(rate(progress.sendBytesPerSecond)), \(elapsed)"
        }
        let predicted = progress.predictedDowntimeSeconds.map { String(format: "%.1f ms", $0 * 1000) } ?? "—"
        return "\(role) round \(progress.round) done: \(progress.pagesSent) pages, "
            + "\(mb(progress.roundWireBytes)) MB wire, \(rate(progress.sendBytesPerSecond)), \(elapsed), "
            + "dirty \(rate(progress.dirtyPagesPerSecond * Double(progress.pageSize))), "
            + "predicted downtime \(predicted), migration ETA \(duration(progress.migrationETASeconds))"
    }

    /// An event's line (a lost connection, a resume); nil for figures.
    static func event(_ progress: MigrationProgress) -> String? {
        switch progress.kind {
        case .live, .roundEnded:
            return nil
        case .reconnecting(let percentSent, let attempt, let attempts):
            return "[\(progress.role.rawValue)] connection lost during round \(progress.round) at \(percentSent)%; "
                + "reconnecting (attempt \(attempt)/\(attempts))"
        case .resumed(let pagesHeld):
            return "[\(progress.role.rawValue)] resumed: destination holds \(pagesHeld) of \(progress.pageCount) "
                + "pages; resending \(progress.pagesInRound ?? 0)"
        }
    }

    static func percent(_ fraction: Double) -> String { "\(Int((fraction * 100).rounded(.down)))%" }

    /// `612/~1300 MB`: the round's wire bytes so far and, while it runs, its extrapolated total.
    static func wire(_ progress: MigrationProgress) -> String {
        guard let estimate = progress.roundWireBytesEstimate, estimate > progress.roundWireBytes else {
            return "\(mb(progress.roundWireBytes)) MB"
        }
        return "\(mb(progress.roundWireBytes))/~\(mb(estimate)) MB"
    }

    static func eta(_ progress: MigrationProgress) -> String {
        "ETA \(duration(progress.roundETASeconds)) (migration \(duration(progress.migrationETASeconds)))"
    }

    static func mb(_ bytes: UInt64) -> String {
        let value = Double(bytes) / 1e6
        return String(format: value < 10 ? "%.1f" : "%.0f", value)
    }

    /// `198 MB/s`, or `— MB/s` before it was measured.
    static func rate(_ bytesPerSecond: Double?) -> String {
        guard let bytesPerSecond, bytesPerSecond.isFinite else { return "— MB/s" }
        let value = bytesPerSecond / 1e6
        return String(format: value < 10 ? "%.1f MB/s" : "%.0f MB/s", value)
    }

    /// `3.1s`, `2m05s`, `1h02m`; `—` when unknown.
    static func duration(_ seconds: Double?) -> String {
        guard let seconds, seconds.isFinite, seconds >= 0 else { return "—" }
        if seconds < 60 { return String(format: "%.1fs", seconds) }
        let whole = Int(seconds.rounded())
        func two(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }
        if whole < 3600 { return "\(whole / 60)m\(two(whole % 60))s" }
        return "\(whole / 3600)h\(two(whole % 3600 / 60))m"
    }
}
