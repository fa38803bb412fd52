import FerryControl
import Foundation

/// What a consolidation planned and did: `POST /v1/consolidate` answers it, `GET /v1/consolidate`
/// gives the last one.
struct ConsolidationReport: Codable, Sendable, Equatable {
    enum Phase: String, Codable, Sendable {
        /// A dry run: the plan only.
        case planned
        /// Moving guests, then putting the emptied hosts in standby.
        case running
        case done
    }

    /// One move, planned, done or failed.
    struct Move: Codable, Sendable, Equatable {
        var guest: String
        var from: String
        var to: String
        var seconds: Double?
        var downtimeMs: Double?
        /// Why it failed (the guest stays on `from`).
        var reason: String?

        enum CodingKeys: String, CodingKey {
            case guest, from, to, seconds, reason
            case downtimeMs = "downtime_ms"
        }
    }

    /// A host the plan emptied that stays on, and why.
    struct Kept: Codable, Sendable, Equatable {
        var host: String
        var reason: String
    }

    var phase: Phase
    var dryRun: Bool
    var cause: String
    var startedAt: String
    var endedAt: String?
    /// From the start to the last host put in standby.
    var seconds: Double?
    /// The share of each receiving host's capacity kept free.
    var headroom: Double
    /// Hosts holding guests before, and after the plan's moves.
    var hostsUsedBefore: Int
    var hostsUsedAfter: Int
    /// The fewest hosts that could hold the guests (`ClusterConsolidation.lowerBound`).
    var lowerBound: Int
    /// The hosts the plan empties, in order.
    var emptied: [String]
    var movesPlanned: [Move]
    var movesDone: [Move] = []
    var movesFailed: [Move] = []
    /// Emptied hosts put in standby.
    var standby: [String] = []
    /// Emptied hosts that stay on (a move out failed, a guest arrived meanwhile, the agent refused).
    var stayedOn: [Kept] = []
    /// Migrations at once, as the drain's cost model chose.
    var concurrency: Int = 1

    /// Hosts put in standby (a dry run: the hosts the plan would free).
    var hostsSaved: Int { dryRun ? hostsUsedBefore - hostsUsedAfter : standby.count }

    enum CodingKeys: String, CodingKey {
        case phase, cause, seconds, headroom, emptied, standby, concurrency
        case dryRun = "dry_run"
        case startedAt = "started_at"
        case endedAt = "ended_at"
        case hostsUsedBefore = "hosts_used_before"
        case hostsUsedAfter = "hosts_used_after"
        case hostsSaved = "hosts_saved"
        case lowerBound = "lower_bound"
        case movesPlanned = "moves_planned"
        case movesDone = "moves_done"
        case movesFailed = "moves_failed"
        case stayedOn = "stayed_on"
    }

    init(plan: ClusterConsolidationPlan, lowerBound: Int, headroom: Double, dryRun: Bool, cause: String) {
        phase = dryRun ? .planned : .running
        self.dryRun = dryRun
        self.cause = cause
        startedAt = CloudViews.time(Date())
        self.headroom = headroom
        hostsUsedBefore = plan.hostsUsedBefore
        hostsUsedAfter = plan.hostsUsedAfter
        self.lowerBound = lowerBound
        emptied = plan.emptied
        movesPlanned = plan.moves.map { Move(guest: $0.guest, from: $0.from, to: $0.to) }
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        phase = try container.decode(Phase.self, forKey: .phase)
        dryRun = try container.decode(Bool.self, forKey: .dryRun)
        cause = try container.decode(String.self, forKey: .cause)
        startedAt = try container.decode(String.self, forKey: .startedAt)
        endedAt = try container.decodeIfPresent(String.self, forKey: .endedAt)
        seconds = try container.decodeIfPresent(Double.self, forKey: .seconds)
        headroom = try container.decode(Double.self, forKey: .headroom)
        hostsUsedBefore = try container.decode(Int.self, forKey: .hostsUsedBefore)
        hostsUsedAfter = try container.decode(Int.self, forKey: .hostsUsedAfter)
        lowerBound = try container.decode(Int.self, forKey: .lowerBound)
        emptied = try container.decode([String].self, forKey: .emptied)
        movesPlanned = try container.decode([Move].self, forKey: .movesPlanned)
        movesDone = try container.decode([Move].self, forKey: .movesDone)
        movesFailed = try container.decode([Move].self, forKey: .movesFailed)
        standby = try container.decode([String].self, forKey: .standby)
        stayedOn = try container.decode([Kept].self, forKey: .stayedOn)
        concurrency = try container.decode(Int.self, forKey: .concurrency)
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(phase, forKey: .phase)
        try container.encode(dryRun, forKey: .dryRun)
        try container.encode(cause, forKey: .cause)
        try container.encode(startedAt, forKey: .startedAt)
        try container.encodeIfPresent(endedAt, forKey: .endedAt)
        try container.encodeIfPresent(seconds, forKey: .seconds)
        try container.encode(headroom, forKey: .headroom)
        try container.encode(hostsUsedBefore, forKey: .hostsUsedBefore)
        try container.encode(hostsUsedAfter, forKey: .hostsUsedAfter)
        try container.encode(hostsSaved, forKey: .hostsSaved)
        try container.encode(lowerBound, forKey: .lowerBound)
        try container.encode(emptied, forKey: .emptied)
        try container.encode(movesPlanned, forKey: .movesPlanned)
        try container.encode(movesDone, forKey: .movesDone)
        try container.encode(movesFailed, forKey: .movesFailed)
        try container.encode(standby, forKey: .standby)
        try container.encode(stayedOn, forKey: .stayedOn)
        try container.encode(concurrency, forKey: .concurrency)
    }
}
