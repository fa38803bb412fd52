import FerryControl
import Foundation

/// `GET /v1/balance`: how the controller balances load, its last passes, and the moves of the last
/// hour against the cap.
struct BalanceReport: Codable, Sendable, Equatable {
    /// The settings, as `ferry control --balance-…` gave them.
    struct Settings: Codable, Sendable, Equatable {
        /// Seconds between passes; nil: no periodic pass.
        var intervalSeconds: Double?
        var threshold: Double
        var target: Double
        var margin: Double
        var maxMovesPerHour: Int
        var coolDownSeconds: Double
        var windowSeconds: Double

        enum CodingKeys: String, CodingKey {
            case threshold, target, margin
            case intervalSeconds = "interval_s"
            case maxMovesPerHour = "max_moves_per_hour"
            case coolDownSeconds = "cool_down_s"
            case windowSeconds = "window_s"
        }
    }

    var settings: Settings
    /// Balancing moves begun in the last hour (the store's journal); the cap is in `settings`.
    var movesLastHour: Int
    /// A pass runs now (its moves included).
    var running: Bool
    /// When the next periodic pass is due (RFC 3339); nil when none is.
    var nextPassAt: String?
    /// The last passes this controller ran, newest first (at most `BalancePassReport.kept`).
    var passes: [BalancePassReport]

    enum CodingKeys: String, CodingKey {
        case settings, running, passes
        case movesLastHour = "moves_last_hour"
        case nextPassAt = "next_pass_at"
    }
}

/// One balancing pass: what it saw, chose, predicted and did.
struct BalancePassReport: Codable, Sendable, Equatable {
    /// Passes a controller keeps in memory for the report.
    static let kept = 20

    enum Phase: String, Codable, Sendable {
        /// Looking, or carrying out its moves.
        case running
        /// Every chosen move ended (moved or failed), or none was chosen.
        case done
        /// It could not look at the cluster (the store failed): the error says why.
        case failed
    }

    /// A host's load as the pass saw it.
    struct Host: Codable, Sendable, Equatable {
        var id: String
        /// Fraction of its vCPUs, before the pass's moves.
        var load: Double
        var vcpus: Int
        var guests: Int
    }

    /// One move the pass chose.
    struct Move: Codable, Sendable, Equatable {
        enum State: String, Codable, Sendable {
            case waiting, moving, moved, failed
            /// Not begun: its source or destination stopped taking guests since the pass looked.
            case skipped
        }

        var guest: String
        var from: String
        var to: String
        /// The two hosts' loads predicted once it is done.
        var fromLoadAfter: Double
        var toLoadAfter: Double
        var benefit: Double
        /// The cost model's seconds for it, alone on the link.
        var estimateSeconds: Double
        var state: State
        /// How long it took (moved, failed).
        var seconds: Double?
        var downtimeMs: Double?
        /// Why it failed: where the guest is, as the mover said.
        var reason: String?

        enum CodingKeys: String, CodingKey {
            case guest, from, to, benefit, state, seconds, reason
            case fromLoadAfter = "from_load_after"
            case toLoadAfter = "to_load_after"
            case estimateSeconds = "estimate_s"
            case downtimeMs = "downtime_ms"
        }
    }

    var number: Int
    /// "periodic", or who asked ("asked by admin").
    var trigger: String
    var phase: Phase
    var startedAt: String
    var endedAt: String?
    /// The pass's time, looking and moving.
    var seconds: Double?
    var hosts: [Host] = []
    /// Population standard deviation of the hosts' loads: before, as predicted after the moves,
    /// and as measured by the next pass that looked at least a window after this one ended.
    var spreadBefore: Double = 0
    var spreadPredicted: Double = 0
    var spreadMeasuredAfter: Double?
    var movesInLastHour: Int = 0
    var movesAllowed: Int = 0
    /// At most this many at once out of one host (the drain's cost model chose it).
    var concurrency: Int = 1
    var moves: [Move] = []
    /// Why nothing was chosen (`below_threshold`, `cap_reached`, `cool_down`, `nothing_movable`,
    /// `no_legal_move`) and in words.
    var idle: BalanceIdle.Kind?
    var reason: String?
    var error: String?

    enum CodingKeys: String, CodingKey {
        case number, trigger, phase, seconds, hosts, concurrency, moves, idle, reason, error
        case startedAt = "started_at"
        case endedAt = "ended_at"
        case spreadBefore = "spread_before"
        case spreadPredicted = "spread_predicted"
        case spreadMeasuredAfter = "spread_measured_after"
        case movesInLastHour = "moves_in_last_hour"
        case movesAllowed = "moves_allowed"
    }

    /// "pass 3: 2 moves chosen, 2 moved; spread 0.47 → 0.02 predicted" or "pass 4: nothing (…)".
    var summary: String {
        var text = "pass \(number) \(phase.rawValue)"
        if let error { return text + ": \(error)" }
        guard !moves.isEmpty else { return text + ": nothing chosen (\(reason ?? "-"))" }
        let moved = moves.filter { $0.state == .moved }.count
        let failed = moves.filter { $0.state == .failed }.count
        let skipped = moves.filter { $0.state == .skipped }.count
        text += ": \(moves.count) moves chosen, \(moved) moved"
        if failed > 0 { text += ", \(failed) failed" }
        if skipped > 0 { text += ", \(skipped) not begun" }
        return text
            + "; spread \(BalancePass.format(spreadBefore)) → \(BalancePass.format(spreadPredicted)) predicted"
    }
}
