import Foundation

/// A reservation of capacity for a project (issue 17's advanced provisioning): `count` guests of
/// a flavor for the window `[start, end)`, and what happens at its end. Admitted only if, at
/// every instant of the window, the admitted leases and the guaranteed on-demand load fit the
/// hosts (`LeaseAdmission`), checked in the transaction that records it, so that parallel
/// requests cannot overbook. Delivery into the project's pool at the start is not built yet.
public struct LeaseRecord: Sendable, Equatable {
    public var id: String
    public var project: String
    public var flavor: String
    public var count: Int
    /// The flavor's resources when the lease was admitted (a flavor changed later does not
    /// change what was reserved).
    public var unit: Resources
    public var start: Date
    public var end: Date
    public var atEnd: LeaseEnd
    public var state: LeaseState
    public var createdAt: Date

    public init(
        id: String, project: String, flavor: String, count: Int, unit: Resources, start: Date, end: Date,
        atEnd: LeaseEnd, state: LeaseState, createdAt: Date
    ) {
        self.id = id
        self.project = project
        self.flavor = flavor
        self.count = count
        self.unit = unit
        self.start = start
        self.end = end
        self.atEnd = atEnd
        self.state = state
        self.createdAt = createdAt
    }
}

/// What a lease asks for.
public struct LeaseSubmission: Sendable, Equatable {
    public var project: String
    public var flavor: String
    public var count: Int
    public var start: Date
    public var end: Date
    public var atEnd: LeaseEnd

    public init(project: String, flavor: String, count: Int, start: Date, end: Date, atEnd: LeaseEnd = .stop) {
        self.project = project
        self.flavor = flavor
        self.count = count
        self.start = start
        self.end = end
        self.atEnd = atEnd
    }
}

/// What happens to the lease's guests when its window ends.
public enum LeaseEnd: String, Sendable, Codable, CaseIterable {
    case stop, suspend, extend
}

public enum LeaseState: String, Sendable, Codable {
    /// Counted against the capacity of its window.
    case admitted
    /// Given up before or during its window: its capacity is free again.
    case cancelled
}

extension ControlRules {
    /// The longest a lease may last, and how far ahead the nearest window that fits is looked for.
    public static let longestLeaseMilliseconds: Int64 = 366 * 86_400_000

    /// The lease to record, or why not: the submission is checked, and admitted against the
    /// capacity of the hosts that take guests now, the resources every guest holds now (they stay
    /// until migrated away) and the admitted leases. A refusal says when and by how much capacity
    /// falls short and, when one exists within a year, the nearest window of the same length that
    /// fits. Pure: the caller reads its inputs in the transaction that will record the lease and
    /// gives the new lease's `id` (`newLeaseID()`).
    public static func admitLease(
        _ submission: LeaseSubmission, id: String, flavor: Flavor, hosts: [HostRecord], usage: [String: Resources],
        admitted: [LeaseRecord], now: Date, heartbeatTimeout: Duration
    ) throws(ControlError) -> LeaseRecord {
        let start = Billing.milliseconds(submission.start)
        let end = Billing.milliseconds(submission.end)
        guard submission.count >= 1, submission.count <= 10_000 else {
            throw ControlError(.invalidArgument, "count \(submission.count): a lease holds 1 to 10000 guests")
        }
        guard start >= Billing.milliseconds(now) - 60_000 else {
            throw ControlError(.invalidArgument, "start: a lease cannot start in the past; give a time from now on")
        }
        guard end > start, end - start <= longestLeaseMilliseconds else {
            throw ControlError(.invalidArgument, "end: a lease ends after it starts, within 366 days")
        }
        let request = try LeaseRequest(
            id: id, unit: flavor.resources, count: submission.count, startMilliseconds: start, endMilliseconds: end)
        let capacity = hosts.filter { $0.takesGuests(at: now, heartbeatTimeout: heartbeatTimeout) }
            .reduce(Resources.zero) { $0 + $1.capacity }
        let onDemand = usage.values.reduce(Resources.zero, +)
        let others = try admitted.filter { $0.state == .admitted }.map { lease throws(ControlError) in
            try LeaseRequest(
                id: lease.id, unit: lease.unit, count: lease.count,
                startMilliseconds: Billing.milliseconds(lease.start),
                endMilliseconds: Billing.milliseconds(lease.end))
        }
        switch LeaseAdmission.decide(request, admitted: others, capacity: capacity, onDemand: onDemand) {
        case .admit:
            return LeaseRecord(
                id: id, project: submission.project, flavor: flavor.name, count: submission.count,
                unit: flavor.resources, start: submission.start, end: submission.end, atEnd: submission.atEnd,
                state: .admitted, createdAt: now)
        case .refuse(let shortfall):
            let nearest = LeaseAdmission.nearestWindow(
                request, admitted: others, capacity: capacity, onDemand: onDemand,
                latestStartMilliseconds: start + longestLeaseMilliseconds)
            let offer = nearest.map {
                "; the nearest window of the same length that fits starts at \(iso($0.startMilliseconds))"
            }
            throw ControlError(
                .insufficientCapacity,
                "lease of \(submission.count) × \(flavor.name) refused: from \(iso(shortfall.atMilliseconds)) capacity"
                    + " falls short by \(shortfall.shortfall) (at most \(shortfall.peakShortfall) in the window)"
                    + (offer ?? "; no window of that length fits within a year") + ": ask for fewer guests, a smaller"
                    + " flavor or another window")
        }
    }

    /// 16 hex digits from the system's random source, as API token IDs.
    public static func newLeaseID() -> String { Secrets.randomBytes(8).map { String(format: "%02x", $0) }.joined() }

    static func iso(_ milliseconds: Int64) -> String {
        Date(timeIntervalSince1970: Double(milliseconds) / 1000).formatted(
            Date.ISO8601FormatStyle(includingFractionalSeconds: false))
    }
}
