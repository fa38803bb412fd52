import FerryControl
import Foundation

/// How a host's drain stands: `GET /v1/hosts/{id}/drain`, and the answer to a drain.
struct DrainReport: Codable, Sendable, Equatable {
    enum Phase: String, Codable, Sendable {
        /// Moving its guests.
        case draining
        /// Every running guest left; the host is `drained`.
        case drained
        /// Nothing more it can move: the guests in `stays` and `failed` are still on it, each with
        /// the reason. The host stays `draining` (it takes no guests); `drain` tries again.
        case incomplete
        /// Undrained (or the controller stopped) before it ended.
        case stopped
    }

    /// One guest that went, is going, or could not.
    struct Guest: Codable, Sendable, Equatable {
        var id: String
        var name: String
        /// Where it went (moved), or goes (moving).
        var to: String?
        /// The model's prediction of its migration, in seconds.
        var estimateSeconds: Double?
        /// How long its migration took, or has taken so far.
        var seconds: Double?
        /// A live move's downtime; a cold move's interruption (from the shutdown request to the
        /// guest's first line from its disk on the destination; none for a stopped guest).
        var downtimeMs: Double?
        /// Why it stays (failed, stays); why it went cold (moved_cold).
        var reason: String?

        enum CodingKeys: String, CodingKey {
            case id, name, to, reason
            case estimateSeconds = "estimate_s"
            case seconds = "seconds"
            case downtimeMs = "downtime_ms"
        }
    }

    var host: String
    /// Who asked for it and why ("drain asked by ops", "quarantined: …; evacuate by …").
    var cause: String = ""
    var phase: Phase
    /// RFC 3339, as every time the API gives.
    var startedAt: String
    var endedAt: String?
    /// Migrations at once, as the cost model chose for the guests still to go.
    var concurrency: Int
    /// The concurrency each migration started under, in the order they started.
    var concurrencies: [Int] = []
    /// The link the model assumes now (configured, then as the migrations measured it).
    var linkBytesPerSecond: Double
    /// The rest of the model: the fixed cost of one move, wire bytes per guest byte, and the dirty
    /// rate a guest never measured counts at (nil: none measured yet).
    var setupSeconds: Double = 0
    /// What one migration carries alone, on the wire (nil: not measured yet).
    var streamBytesPerSecond: Double?
    var wireRatio: Double = 1
    var assumedDirtyBytesPerSecond: Double?
    /// Predicted seconds until the host is empty, from now.
    var etaSeconds: Double
    var moved: [Guest]
    /// Guests that could not go live and went cold, as their policy (`live_then_cold`) allows, and
    /// stopped guests of that policy (moved cold, still stopped).
    var movedCold: [Guest] = []
    /// What the cold moves cost, summed: their interruptions, milliseconds.
    var coldDowntimeMs: Double = 0
    var moving: [Guest]
    var waiting: [Guest]
    /// Live migrations that failed (no host can take it, it did not converge, an agent refused).
    var failed: [Guest]
    /// Guests that are not running (stopped, suspended, in error): a live migration cannot move
    /// them; they keep their files on the host.
    var stays: [Guest]

    enum CodingKeys: String, CodingKey {
        case host, cause, phase, concurrency, concurrencies, moved, moving, waiting, failed, stays
        case movedCold = "moved_cold"
        case coldDowntimeMs = "cold_downtime_ms"
        case startedAt = "started_at"
        case endedAt = "ended_at"
        case linkBytesPerSecond = "link_bytes_per_s"
        case etaSeconds = "eta_s"
        case setupSeconds = "setup_s"
        case streamBytesPerSecond = "stream_bytes_per_s"
        case wireRatio = "wire_ratio"
        case assumedDirtyBytesPerSecond = "assumed_dirty_bytes_per_s"
    }

    /// One line for a log or a terminal: "host h1 draining: 3 of 8 moved (1 cold), 2 moving, eta 12 s".
    var summary: String {
        let total = moved.count + movedCold.count + moving.count + waiting.count + failed.count + stays.count
        var text = "host \(host) \(phase.rawValue): \(moved.count + movedCold.count) of \(total) moved"
        if !movedCold.isEmpty { text += " (\(movedCold.count) cold)" }
        if !moving.isEmpty { text += ", \(moving.count) moving" }
        if !failed.isEmpty { text += ", \(failed.count) failed" }
        if !stays.isEmpty { text += ", \(stays.count) not running" }
        if phase == .draining { text += ", \(concurrency) at once, eta \(Int(etaSeconds.rounded(.up))) s" }
        return text
    }
}
