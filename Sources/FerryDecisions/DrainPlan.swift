// How a host is emptied for maintenance: how many live migrations run at once and in what order,
// chosen by the predicted time to empty it (`MigrationCostModel`). Several at once share the
// source's link: more at once hides each migration's fixed cost and the destinations' work, but a
// guest whose share of the link falls below its dirty rate never converges. Pure.

/// One guest to move off the host.
public struct DrainGuest: Sendable, Equatable {
    public var id: String
    public var profile: MigrationProfile

    public init(id: String, profile: MigrationProfile) {
        self.id = id
        self.profile = profile
    }
}

/// The plan: the concurrency, the order, and what the model predicts.
public struct DrainPlan: Sendable, Equatable {
    /// Migrations at once.
    public var concurrency: Int
    /// The guests in the order they start (longest first, so the last wave is short).
    public var order: [String]
    /// Predicted time to empty the host.
    public var seconds: Double
    /// Guests the model says would not converge even alone on the link: they go last, and the
    /// engine's throttling (or a cold move, if their policy allows) decides their end.
    public var notConverging: [String]
    /// Predicted seconds of each guest's migration at the chosen concurrency.
    public var estimates: [String: Double]

    public init(
        concurrency: Int, order: [String], seconds: Double, notConverging: [String], estimates: [String: Double]
    ) {
        self.concurrency = concurrency
        self.order = order
        self.seconds = seconds
        self.notConverging = notConverging
        self.estimates = estimates
    }

    /// The plan for `guests` with at most `maxConcurrency` migrations at once: for each
    /// concurrency k from 1 to the limit, every guest's migration at a k-th of the link, started
    /// longest first into the first free slot; the k with the shortest predicted time in which
    /// every guest that converges alone still converges (ties: the smaller k, fewer at once).
    /// `forced`: that concurrency, whatever the model says (an operator's override).
    public static func make(
        _ guests: [DrainGuest], model: MigrationCostModel, maxConcurrency: Int, forced: Int? = nil
    ) -> DrainPlan {
        let limit = max(1, min(maxConcurrency, max(1, guests.count)))
        let candidates = forced.map { max(1, $0)...max(1, $0) } ?? 1...limit
        let alone = Dictionary(uniqueKeysWithValues: guests.map { ($0.id, model.estimate($0.profile, sharing: 1)) })
        let stuck = guests.filter { !(alone[$0.id]?.converges ?? false) }.map(\.id)
        var best: DrainPlan?
        for k in candidates {
            var estimates: [String: Double] = [:]
            var keepsConverging = true
            for guest in guests {
                let estimate = model.estimate(guest.profile, sharing: k)
                estimates[guest.id] = estimate.seconds
                if alone[guest.id]?.converges == true, !estimate.converges { keepsConverging = false }
            }
            guard keepsConverging || k == candidates.lowerBound else { break }
            let order = ordered(guests, estimates: estimates, last: Set(stuck))
            let seconds = makespan(order.map { estimates[$0] ?? 0 }, slots: k)
            if best.map({ seconds < $0.seconds * 0.98 }) ?? true {
                best = DrainPlan(
                    concurrency: k, order: order, seconds: seconds, notConverging: stuck, estimates: estimates)
            }
        }
        return best ?? DrainPlan(concurrency: 1, order: [], seconds: 0, notConverging: [], estimates: [:])
    }

    /// The most migrations at once that keep every guest's downtime within `target`, as far as
    /// the drains' measured downtimes tell (`observations`: each migration's concurrency and its
    /// downtime). On a host whose CPUs the migrations share, a blackout lengthens with the
    /// migrations beside it: a concurrency that broke the target is not used again (the bound is
    /// below the lowest that did), and the bound climbs one step at a time above the highest that
    /// kept it, only while that one's worst downtime, scaled by the step's share (×(k+1)/k),
    /// still fits. Without a measured downtime: `limit` (the drain's probe goes first anyway).
    public static func downtimeBound(
        _ observations: [(sharing: Int, downtimeSeconds: Double)], target: Double, limit: Int
    ) -> Int {
        let limit = max(1, limit)
        guard !observations.isEmpty else { return limit }
        var worst: [Int: Double] = [:]
        for observation in observations {
            let sharing = max(1, observation.sharing)
            worst[sharing] = max(worst[sharing] ?? 0, observation.downtimeSeconds)
        }
        let broken = worst.filter { $0.value > target }.keys.min()
        guard let kept = worst.filter({ $0.value <= target }).keys.max() else { return 1 }
        var bound = kept
        if let downtime = worst[kept], downtime * Double(kept + 1) / Double(kept) <= target { bound = kept + 1 }
        if let broken { bound = min(bound, broken - 1) }
        return max(1, min(limit, bound))
    }

    /// Longest first; the guests in `last` after the rest (they may hold a slot a long time).
    static func ordered(_ guests: [DrainGuest], estimates: [String: Double], last: Set<String>) -> [String] {
        guests.sorted { a, b in
            let lastA = last.contains(a.id)
            let lastB = last.contains(b.id)
            if lastA != lastB { return lastB }
            let ea = estimates[a.id] ?? 0
            let eb = estimates[b.id] ?? 0
            return ea != eb ? ea > eb : a.id < b.id
        }.map(\.id)
    }

    /// When the last of `durations` ends, each started in order into the first of `slots` to free.
    public static func makespan(_ durations: [Double], slots: Int, busy: [Double] = []) -> Double {
        var ends = busy + Array(repeating: 0, count: max(0, max(1, slots) - busy.count))
        for duration in durations {
            let first = ends.indices.min { ends[$0] < ends[$1] } ?? 0
            ends[first] += duration
        }
        return ends.max() ?? 0
    }

    /// The time left to empty the host: the migrations under way end after what their estimate
    /// has left (at least nothing), the waiting ones follow in order into the first free slot.
    public static func remaining(
        running: [(estimate: Double, elapsed: Double)], waiting: [Double], concurrency: Int
    ) -> Double {
        let busy = running.map { max(0, $0.estimate - $0.elapsed) }
        return makespan(waiting, slots: max(concurrency, busy.count), busy: busy)
    }
}
