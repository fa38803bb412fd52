/// Whether a lease (a reservation of capacity for a window of time) can be admitted without
/// overbooking; pure (times are Unix milliseconds, as in `Billing`; nothing here reads a clock or
/// a database).
///
/// **The rule.** A lease holds `count × unit` resources for its window `[start, end)`. The load at
/// an instant is the guaranteed on-demand load (the resources of the on-demand guests running now:
/// they stay until they are migrated away, so they are taken as constant over any window) plus
/// every admitted lease whose window contains the instant. A request is admitted if, at every
/// instant of its window, that load plus the request fits the capacity in every dimension (vCPUs,
/// memory, disk). Otherwise it is refused with the first instant it falls short, by how much, and
/// the largest shortfall of each dimension over the window.
///
/// **Half-open windows.** `[a, b)` and `[b, c)` never overlap: a lease ending at `b` frees its
/// capacity for one starting at `b`.
///
/// **Capacity** is the sum of the resources of the hosts that take guests. Admission checks that
/// sum, not how the units pack onto hosts: a whole-host lease is a lease whose unit is a host's
/// resources, and fitting units onto hosts at the window's start is the scheduler's decision.
///
/// **The sweep.** The load only changes where a lease starts or ends, so both decisions walk the
/// sorted start and end points once (all the points of one instant together), never time steps.
public enum LeaseAdmission {
    /// Admits `request` if at every instant of its window the admitted leases, the on-demand load
    /// and the request fit `capacity`; otherwise the shortfall.
    public static func decide(
        _ request: LeaseRequest, admitted: [LeaseRequest], capacity: Resources, onDemand: Resources
    ) -> LeaseDecision {
        let segments = loadSegments(
            admitted, onDemand: onDemand, from: request.startMilliseconds, to: request.endMilliseconds)
        var first: LoadSegment?
        var firstShortfall = Resources.zero
        var peak = Resources.zero
        for segment in segments {
            let shortfall = shortfall(of: segment.load + request.total, capacity: capacity)
            guard shortfall != .zero else { continue }
            if first == nil {
                first = segment
                firstShortfall = shortfall
            }
            peak = componentMax(peak, shortfall)
        }
        guard let first else { return .admit }
        return .refuse(
            LeaseShortfall(
                leaseID: request.id, atMilliseconds: first.startMilliseconds,
                untilMilliseconds: first.endMilliseconds, shortfall: firstShortfall,
                dimensions: ResourceDimension.allCases.filter { firstShortfall[$0] > 0 }, peakShortfall: peak))
    }

    /// The earliest window of the request's length that starts at or after the request's start,
    /// no later than `latestStartMilliseconds`, and fits; nil if none does.
    ///
    /// The instants where the request does not fit form stretches `[a, b)`, each ending where an
    /// admitted lease ends. The earliest start that fits is the request's own start or the end of
    /// such a stretch, so one pass over the stretches in order finds it: a candidate start `t`
    /// fits if the next stretch begins at or after `t + length`; otherwise the next candidate is
    /// that stretch's end. A stretch that never ends (the request and the on-demand load alone
    /// exceed the capacity) means no window fits.
    public static func nearestWindow(
        _ request: LeaseRequest, admitted: [LeaseRequest], capacity: Resources, onDemand: Resources,
        latestStartMilliseconds: Int64
    ) -> LeaseWindow? {
        let length = request.endMilliseconds - request.startMilliseconds
        let segments = loadSegments(admitted, onDemand: onDemand, from: request.startMilliseconds, to: .max)
        var start = request.startMilliseconds
        for segment in segments where !capacity.fits(segment.load + request.total) {
            guard segment.endMilliseconds > start else { continue }
            if segment.startMilliseconds >= saturatingAdd(start, length) { break }
            guard segment.endMilliseconds < .max else { return nil }
            start = segment.endMilliseconds
        }
        guard start <= latestStartMilliseconds, start <= Int64.max - length else { return nil }
        return LeaseWindow(startMilliseconds: start, endMilliseconds: start + length)
    }

    /// The load over `[from, to)` as consecutive stretches of constant load (two neighbours never
    /// have the same load), in time order, covering the whole span: the on-demand load plus the leases whose windows contain each
    /// instant. Leases outside the span are ignored; a lease's end before `to` lowers the load.
    static func loadSegments(_ leases: [LeaseRequest], onDemand: Resources, from: Int64, to: Int64)
        -> [LoadSegment]
    {
        guard from < to else { return [] }
        var events: [(time: Int64, delta: Resources)] = []
        for lease in leases where lease.startMilliseconds < to && lease.endMilliseconds > from {
            events.append((max(lease.startMilliseconds, from), lease.total))
            if lease.endMilliseconds < to { events.append((lease.endMilliseconds, Resources.zero - lease.total)) }
        }
        // Every event at one instant is applied before the load is read: a window ending at b and
        // one starting at b never count together.
        events.sort { $0.time < $1.time }
        var segments: [LoadSegment] = []
        var load = onDemand
        var time = from
        var index = 0
        while index < events.count {
            let next = events[index].time
            var changed = load
            while index < events.count, events[index].time == next {
                changed = changed + events[index].delta
                index += 1
            }
            // A lease ending where another of the same size starts changes nothing.
            guard changed != load else { continue }
            if next > time { segments.append(LoadSegment(startMilliseconds: time, endMilliseconds: next, load: load)) }
            load = changed
            time = next
        }
        segments.append(LoadSegment(startMilliseconds: time, endMilliseconds: to, load: load))
        return segments
    }

    /// How far `load` exceeds `capacity` in each dimension (zero where it fits).
    static func shortfall(of load: Resources, capacity: Resources) -> Resources {
        Resources(
            vcpus: max(0, load.vcpus - capacity.vcpus), memoryBytes: max(0, load.memoryBytes - capacity.memoryBytes),
            diskBytes: max(0, load.diskBytes - capacity.diskBytes))
    }

    static func componentMax(_ a: Resources, _ b: Resources) -> Resources {
        Resources(
            vcpus: max(a.vcpus, b.vcpus), memoryBytes: max(a.memoryBytes, b.memoryBytes),
            diskBytes: max(a.diskBytes, b.diskBytes))
    }

    static func saturatingAdd(_ a: Int64, _ b: Int64) -> Int64 {
        let (sum, overflow) = a.addingReportingOverflow(b)
        return overflow ? .max : sum
    }
}

/// A stretch `[start, end)` of constant load (`LeaseAdmission.loadSegments`).
struct LoadSegment: Equatable {
    var startMilliseconds: Int64
    var endMilliseconds: Int64
    var load: Resources
}

/// A lease asked for or admitted: `count` units of `unit` (a flavor's resources, or a whole host's)
/// for the half-open window `[start, end)` in Unix milliseconds.
public struct LeaseRequest: Sendable, Equatable, Hashable {
    public let id: String
    public let unit: Resources
    public let count: Int
    public let startMilliseconds: Int64
    public let endMilliseconds: Int64
    /// `count × unit`.
    public let total: Resources

    /// Refused (`invalidArgument`) unless the window ends after it starts, `count` is at least
    /// one, `unit` is at least zero in every dimension and `count × unit` does not overflow.
    public init(id: String, unit: Resources, count: Int, startMilliseconds: Int64, endMilliseconds: Int64)
        throws(ControlError)
    {
        guard startMilliseconds < endMilliseconds else {
            throw ControlError(
                .invalidArgument,
                "lease \(id): a window ends after it starts: \(startMilliseconds) ms is not before"
                    + " \(endMilliseconds) ms")
        }
        guard count >= 1, unit.isNonNegative else {
            throw ControlError(
                .invalidArgument,
                "lease \(id): needs at least one unit of at least zero resources, not \(count) × \(unit)")
        }
        let vcpus = unit.vcpus.multipliedReportingOverflow(by: count)
        let memory = unit.memoryBytes.multipliedReportingOverflow(by: count)
        let disk = unit.diskBytes.multipliedReportingOverflow(by: count)
        guard !vcpus.overflow, !memory.overflow, !disk.overflow else {
            throw ControlError(.invalidArgument, "lease \(id): \(count) × \(unit) is more than can be counted")
        }
        self.id = id
        self.unit = unit
        self.count = count
        self.startMilliseconds = startMilliseconds
        self.endMilliseconds = endMilliseconds
        self.total = Resources(
            vcpus: vcpus.partialValue, memoryBytes: memory.partialValue, diskBytes: disk.partialValue)
    }

    public var window: LeaseWindow {
        LeaseWindow(startMilliseconds: startMilliseconds, endMilliseconds: endMilliseconds)
    }
}

/// A half-open span `[start, end)` in Unix milliseconds.
public struct LeaseWindow: Sendable, Equatable, Hashable {
    public var startMilliseconds: Int64
    public var endMilliseconds: Int64

    public init(startMilliseconds: Int64, endMilliseconds: Int64) {
        self.startMilliseconds = startMilliseconds
        self.endMilliseconds = endMilliseconds
    }
}

public enum LeaseDecision: Sendable, Equatable {
    case admit
    case refuse(LeaseShortfall)
}

/// One dimension of `Resources`.
public enum ResourceDimension: String, Sendable, CaseIterable, Codable {
    case vcpus
    case memory
    case disk
}

extension Resources {
    /// The amount in one dimension.
    public subscript(dimension: ResourceDimension) -> Int {
        switch dimension {
        case .vcpus: vcpus
        case .memory: memoryBytes
        case .disk: diskBytes
        }
    }
}

/// Why a lease was refused, in numbers a message can show.
public struct LeaseShortfall: Sendable, Equatable, CustomStringConvertible {
    public var leaseID: String
    /// The first instant of the window at which the leases and the on-demand load exceed the
    /// capacity.
    public var atMilliseconds: Int64
    /// The end of the stretch of constant load that begins at `atMilliseconds` (the load may still
    /// exceed the capacity after it, by another amount).
    public var untilMilliseconds: Int64
    /// By how much the capacity falls short at `atMilliseconds`, in each dimension (zero where it
    /// does not).
    public var shortfall: Resources
    /// The dimensions short at `atMilliseconds`.
    public var dimensions: [ResourceDimension]
    /// The largest shortfall of each dimension anywhere in the window (the largest of the vCPUs and
    /// that of memory may fall at different instants).
    public var peakShortfall: Resources

    public init(
        leaseID: String, atMilliseconds: Int64, untilMilliseconds: Int64, shortfall: Resources,
        dimensions: [ResourceDimension], peakShortfall: Resources
    ) {
        self.leaseID = leaseID
        self.atMilliseconds = atMilliseconds
        self.untilMilliseconds = untilMilliseconds
        self.shortfall = shortfall
        self.dimensions = dimensions
        self.peakShortfall = peakShortfall
    }

    public var description: String {
        let short = dimensions.map { "\($0.rawValue) by \(shortfall[$0])" }.joined(separator: ", ")
        let peak = ResourceDimension.allCases.filter { peakShortfall[$0] > 0 }
            .map { "\($0.rawValue) \(peakShortfall[$0])" }.joined(separator: ", ")
        return "lease \(leaseID) does not fit: from \(atMilliseconds) ms to \(untilMilliseconds) ms the capacity is"
            + " short of \(short) (at most, over the window: \(peak)); ask for fewer units or another window"
    }
}
