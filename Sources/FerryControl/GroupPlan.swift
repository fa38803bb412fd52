import FerryHostModel
import Foundation

/// What the controller does to a group's members now, from the group and its members alone
/// (pure; `GroupScaler` carries it out):
///
/// - **Live members** are pending, building, running or unknown: they count toward `desired`.
///   **Warm members** are suspended: ready to resume, counted toward `warm`, not in the metric.
/// - **Resume** warm members first while fewer live members than desired (oldest first).
/// - **Create** while fewer live and warm members than `desired + warm`: names `NAME-N`, N one
///   past the highest any member ever had (names are never reused, so `N` with the group's ID is
///   a client token). A member made for the warm pool boots as a live one (one past desired).
/// - **Suspend** running members beyond desired while the warm pool has room (in the group's
///   `scaleIn` order), but never below `desired` running: a new warm member is suspended once it
///   runs, and a scale-in refills the pool before it removes anything.
/// - **Scale in** the live members beyond desired that the pool has no room for: first members
///   not started yet (pending: deleted at once), then running ones in the group's `scaleIn` order
///   (newest first, or least loaded first); a building or unknown member is not taken (it cannot
///   be stopped), the next pass looks again.
/// - **Delete** members that are stopped (scaled in, or stopped by a user: a replacement is made)
///   or in error: they hold no work, and a failed member is replaced; and warm members beyond
///   `warm` (newest first). A deleted group keeps no warm members.
/// - **Back-off**: while the group waits after members that failed to build (`BuildBackoff`: 2^k
///   × 1 s after k failures in a row, at most 5 min), it creates none (`held` says how many).
/// - Members with an operation in flight (`busy`) are left alone.
/// - **Settling**: while a member is pending or building, or runs without a metric yet (for at
///   most the policy's window and 10 s after it started: one whose telemetry never comes does not
///   hold the group forever), the group's metric does not include it, so the policy waits.
public struct GroupPlan: Sendable, Equatable {
    public static let liveStates: Set<CloudGuestState> = [.pending, .building, .running, .unknown]
    /// Live or warm: what the group's room (`desired + warm`) counts.
    public static let memberStates: Set<CloudGuestState> = liveStates.union([.suspended])

    public var live: Int
    /// Warm members to resume (suspended → building → running), in order.
    public var resume: [CloudGuest]
    /// New members' names, in order.
    public var create: [GuestName]
    /// Running members to suspend into the warm pool.
    public var suspend: [CloudGuest]
    /// Live members to take out: a running one is stopped then deleted, a pending one deleted.
    public var scaleIn: [CloudGuest]
    /// Stopped members, members in error and warm members beyond `warm`, to delete.
    public var delete: [CloudGuest]
    /// Some live member's metric is not in yet (see above), so the policy waits.
    public var settling: Bool
    /// The group's back-off after failed builds (as given).
    public var backoff: BuildBackoff = .none
    /// Members not created now because the group backs off.
    public var held = 0

    public init(
        live: Int, resume: [CloudGuest] = [], create: [GuestName], suspend: [CloudGuest] = [], scaleIn: [CloudGuest],
        delete: [CloudGuest], settling: Bool
    ) {
        self.live = live
        self.resume = resume
        self.create = create
        self.suspend = suspend
        self.scaleIn = scaleIn
        self.delete = delete
        self.settling = settling
    }

    /// The plan for `group` with `members` (the store's `groupMembers`), `load` each member's
    /// mean metric over the policy's window (for `least_loaded`; a member without one is taken
    /// first; a running member without one for less than the window and 10 s before `now` is
    /// settling), `busy` the members with an operation in flight, and of those `suspending` the
    /// running ones on their way into the warm pool (counted as warm already).
    public static func make(
        group: ScalingGroup, members: [CloudGuest], load: [GuestID: Double] = [:], busy: Set<GuestID> = [],
        suspending: Set<GuestID> = [], now: Date? = nil, backoff: BuildBackoff = .none
    ) -> GroupPlan {
        let members = members.map { member in
            var member = member
            if member.state == .running, suspending.contains(member.id) { member.state = .suspended }
            return member
        }
        let busy = busy.union(suspending)
        let live = members.filter { liveStates.contains($0.state) }
        let warmTarget = group.state == .active ? group.warm : 0
        let warm = members.filter { $0.state == .suspended }
        let freeWarm = warm.filter { !busy.contains($0.id) }.sorted { newestFirst($1, $0) }
        let resume = Array(freeWarm.prefix(Swift.max(0, group.desired - live.count)))
        // Warm members beyond the pool (after those resumed), newest first.
        let extraWarm = Array(
            freeWarm.dropFirst(resume.count).reversed().prefix(Swift.max(0, warm.count - resume.count - warmTarget)))
        let delete = members.filter { [.stopped, .error].contains($0.state) && !busy.contains($0.id) } + extraWarm
        let grace = Double(group.policy.windowMilliseconds + 10_000) / 1000
        let settling = live.contains { member in
            if member.state == .pending || member.state == .building { return true }
            guard let now, member.state == .running, load[member.id] == nil else { return false }
            return now.timeIntervalSince(member.stateSince) < grace
        }
        var create: [GuestName] = []
        let missing = group.desired + warmTarget - live.count - warm.count
        let held = now.map { missing > 0 && backoff.waits(now: Billing.milliseconds($0)) } ?? false
        if missing > 0, !held {
            let next = (members.compactMap { index(of: $0.name, in: group) }.max() ?? 0) + 1
            create = (next..<next + missing).compactMap { try? memberName(group, $0) }
        }
        var (suspend, scaleIn) = ([CloudGuest](), [CloudGuest]())
        if live.count > group.desired {
            let free = live.filter { !busy.contains($0.id) }
            let pending = free.filter { $0.state == .pending }.sorted(by: newestFirst)
            let running = order(free.filter { $0.state == .running }, group.scaleIn, load: load)
            let excess = live.count - group.desired
            let toPool = Swift.min(excess, Swift.max(0, warmTarget - warm.count))
            scaleIn = Array((pending + running).prefix(excess - toPool))
            let taken = Set(scaleIn.map(\.id))
            // Never below desired free running members (a busy one is on its way out).
            let left = running.filter { !taken.contains($0.id) }
            suspend = Array(left.prefix(Swift.min(toPool, Swift.max(0, left.count - group.desired))))
        }
        var plan = GroupPlan(
            live: live.count, resume: resume, create: create, suspend: suspend, scaleIn: scaleIn, delete: delete,
            settling: settling)
        plan.backoff = backoff
        plan.held = held ? missing : 0
        return plan
    }

    /// How a member's build ended, from its journal (oldest first): it ran if it ever reached
    /// running; it failed if it went to error first (at that time); else nothing is known yet.
    public static func outcome(_ journal: [CloudJournalEntry]) -> BuildBackoff.Outcome {
        for entry in journal {
            if entry.to == .running { return .ran }
            if entry.to == .error { return .failed(atMilliseconds: Billing.milliseconds(entry.time)) }
        }
        return .undecided
    }

    /// `NAME-N`.
    public static func memberName(_ group: ScalingGroup, _ index: Int) throws(HostModelError) -> GuestName {
        try GuestName("\(group.name)-\(index)")
    }

    /// The client token of member N: at most one such guest per group, whoever asks.
    public static func clientToken(_ group: ScalingGroup, _ name: GuestName) -> String {
        "group-\(group.id)-\(name.value)"
    }

    /// N of a member named `NAME-N`, if it is one.
    static func index(of name: GuestName, in group: ScalingGroup) -> Int? {
        let prefix = group.name + "-"
        guard name.value.hasPrefix(prefix) else { return nil }
        return Int(name.value.dropFirst(prefix.count))
    }

    static func newestFirst(_ a: CloudGuest, _ b: CloudGuest) -> Bool {
        a.createdAt != b.createdAt ? a.createdAt > b.createdAt : a.name.value > b.name.value
    }

    /// Running members in the order a scale-in takes them.
    static func order(_ members: [CloudGuest], _ scaleIn: ScaleInOrder, load: [GuestID: Double]) -> [CloudGuest] {
        switch scaleIn {
        case .newest:
            return members.sorted(by: newestFirst)
        case .leastLoaded:
            return members.sorted { a, b in
                let (la, lb) = (load[a.id] ?? -1, load[b.id] ?? -1)
                return la != lb ? la < lb : newestFirst(a, b)
            }
        }
    }
}

/// A group's metric from its members' telemetry samples (pure).
public enum GroupMetric {
    /// The group's metric in percent per `bucketMilliseconds`, oldest first: the mean over the
    /// members (`Telemetry.groupMean`) of their CPU use, or of their load ÷ 10; buckets without a
    /// load are left out of the load's series.
    public static func series(
        _ samples: [GuestID: [GuestSample]], metric: ScalingMetric, bucketMilliseconds: Int64 = 1000
    ) -> [MetricSample] {
        let points = Telemetry.groupMean(
            samples.keys.sorted { $0.hex < $1.hex }.map { Telemetry.usage(samples[$0] ?? []) },
            bucketMilliseconds: bucketMilliseconds)
        return points.compactMap { point in
            value(point, metric).map { MetricSample(timeMilliseconds: point.timeMilliseconds, value: $0) }
        }
    }

    /// Each member's mean metric in percent over its samples (members without a point are absent).
    public static func perMember(_ samples: [GuestID: [GuestSample]], metric: ScalingMetric) -> [GuestID: Double] {
        var means: [GuestID: Double] = [:]
        for (id, list) in samples {
            let values = Telemetry.usage(list).compactMap { value($0, metric) }
            if !values.isEmpty { means[id] = values.reduce(0, +) / Double(values.count) }
        }
        return means
    }

    static func value(_ point: UsagePoint, _ metric: ScalingMetric) -> Double? {
        switch metric {
        case .cpu: point.cpuPercent
        case .load: point.loadPermille.map { Double($0) / 10 }
        }
    }
}

extension ScalingGroup {
    /// The policy's decision for the group running `current` live members at `now`, from the
    /// group's metric `samples` and (target tracking) the `history` of recommendations.
    public func decide(current: Int, samples: [MetricSample], history: [ScalingRecommendation], now: Int64)
        throws(ControlError) -> ScalingDecision
    {
        if let rule = try policy.targetTracking(min: min, max: max) {
            return rule.decide(current: current, samples: samples, history: history, now: now)
        }
        let rule = try policy.threshold(min: min, max: max)!
        let window = samples.filter { $0.timeMilliseconds > now - policy.windowMilliseconds }
        return rule.decide(
            current: current, samples: window, lastActionMilliseconds: lastActionAt.map(Billing.milliseconds),
            now: now)
    }
}
