import Foundation

/// A reservation of capacity for a project (issue 17's advanced provisioning): `count` guests of
/// a flavor for the window `[start, end)`, and what happens at its end. Admitted only if, at
/// every instant of the window, the admitted leases and the guaranteed on-demand load fit the
/// hosts (`LeaseAdmission`), checked in the transaction that records it, so that parallel
/// requests cannot overbook. At its start the controller delivers it (`LeaseDelivery`): units
/// set aside on hosts (`slots`), on-demand guests live-migrated away to make room, the lease's
/// guests booted if it names an image; only the lessee's guests go into the slots. The delivery's
/// record (`deliveredAt`, `shortUnits`, the time short) is the lease's SLA record.
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
    /// The image of the guests booted into the pool at delivery (nil: the pool is delivered
    /// empty; the lessee creates into it).
    public var image: String?
    public var phase: LeasePhase = .waiting
    /// When every unit was first set aside and free (nil: not yet).
    public var deliveredAt: Date?
    public var endedAt: Date?
    /// Units the pool lacks now (a host failed and no other capacity could take them).
    public var shortUnits = 0
    /// Time the pool was short before `shortSince` (milliseconds).
    public var shortMilliseconds: Int64 = 0
    /// Since when it is short now (nil: not short).
    public var shortSince: Date?
    /// The latest thing that happened to the lease, in words (a delivery, a re-map, its end).
    public var note = ""
    /// Units set aside per host while delivered.
    public var slots: [String: Int] = [:]

    public init(
        id: String, project: String, flavor: String, count: Int, unit: Resources, start: Date, end: Date,
        atEnd: LeaseEnd, state: LeaseState, createdAt: Date, image: String? = nil
    ) {
        self.image = image
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
    /// Guests of this image are booted into the pool at delivery (nil: none).
    public var image: String?

    public init(
        project: String, flavor: String, count: Int, start: Date, end: Date, atEnd: LeaseEnd = .stop,
        image: String? = nil
    ) {
        self.image = image
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

/// Where an admitted lease is in its window.
public enum LeasePhase: String, Sendable, Codable, CaseIterable {
    /// Before its start.
    case waiting
    /// Started: its units are set aside, on-demand guests are being migrated out of them.
    case delivering
    /// Every unit set aside and free: the lessee's pool.
    case active
    /// Delivered, but hosts failed and some units have no capacity (`shortUnits`).
    case short
    /// Its window ended (by its terms) or it was cancelled: its units are free.
    case ended

    /// Its slots are set aside: on-demand placement does not use them.
    public var holdsSlots: Bool { self == .delivering || self == .active || self == .short }
    /// The lessee may create into its pool.
    public var open: Bool { self == .active || self == .short }
}

extension LeaseRecord {
    /// How long after its start the pool was delivered (nil: not yet).
    public var deliveryMilliseconds: Int64? {
        deliveredAt.map { Billing.milliseconds($0) - Billing.milliseconds(start) }
    }

    /// The SLA's measure: the share of the window so far (until `now` or its end) during which
    /// every unit was available: not before delivery, not while short.
    public func availableFraction(at now: Date) -> Double {
        let from = Billing.milliseconds(start)
        let until = min(Billing.milliseconds(endedAt ?? now), Billing.milliseconds(end))
        guard until > from else { return 1 }
        let delivered = deliveredAt.map { Billing.milliseconds($0) } ?? until
        var missing = min(until, delivered) - from + shortMilliseconds
        if let shortSince { missing += max(0, until - Billing.milliseconds(shortSince)) }
        return max(0, Double(until - from - min(missing, until - from)) / Double(until - from))
    }
}

extension ControlRules {
    /// The longest a lease may last, and how far ahead the nearest window that fits is looked for.
    public static let longestLeaseMilliseconds: Int64 = 366 * 86_400_000

    /// The lease to record, or why not: the submission is checked, and admitted against the
    /// capacity of the hosts that take guests now or would once woken (in standby: the lease's
    /// delivery wakes them), the resources every guest holds now (they stay
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
        // A host in standby counts: capacity the cloud has, woken when the lease's guests need it.
        let capacity = hosts.filter { $0.takesGuestsWhenOn(at: now, heartbeatTimeout: heartbeatTimeout) }
            .reduce(Resources.zero) { $0 + $1.capacity }
        let onDemand = usage.values.reduce(Resources.zero, +)
        let others = try admitted.filter { $0.state == .admitted }.map { lease throws(ControlError) in
            try admissionLoad(lease, from: Billing.milliseconds(lease.start))
        }
        switch LeaseAdmission.decide(request, admitted: others, capacity: capacity, onDemand: onDemand) {
        case .admit:
            return LeaseRecord(
                id: id, project: submission.project, flavor: flavor.name, count: submission.count,
                unit: flavor.resources, start: submission.start, end: submission.end, atEnd: submission.atEnd,
                state: .admitted, createdAt: now, image: submission.image)
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

    /// What an admitted lease weighs in admission from `from` (at most its start) on: its units
    /// over its window, and, for a lease whose terms are `suspend` and that has not ended, for
    /// ever after: its guests are kept suspended on their hosts, holding their places until the
    /// lessee deletes them (once it ended, they count as the on-demand load they are).
    public static func admissionLoad(_ lease: LeaseRecord, from: Int64) throws(ControlError) -> LeaseRequest {
        let keeps = lease.atEnd == .suspend && lease.phase != .ended
        return try LeaseRequest(
            id: lease.id, unit: lease.unit, count: lease.count,
            startMilliseconds: max(from, Billing.milliseconds(lease.start)),
            endMilliseconds: keeps ? .max : Billing.milliseconds(lease.end))
    }

    /// 16 hex digits from the system's random source, as API token IDs.
    public static func newLeaseID() -> String { Secrets.randomBytes(8).map { String(format: "%02x", $0) }.joined() }

    static func iso(_ milliseconds: Int64) -> String {
        Date(timeIntervalSince1970: Double(milliseconds) / 1000).formatted(
            Date.ISO8601FormatStyle(includingFractionalSeconds: false))
    }
}
