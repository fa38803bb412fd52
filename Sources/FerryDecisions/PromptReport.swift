/// When an agent sends a heartbeat before its interval is up; pure (times are milliseconds on
/// any one clock, the caller's).
///
/// An agent reports its guests every interval (a second). Between two reports it looks at them
/// every watch interval (a fifth of a second) and reports at once when what the controller knows
/// has gone stale in a way that matters to a decision:
///
/// - **A guest's state changed**, or a guest came or went: a guest that became `running` is
///   sampled at once, so the controller holds its first sample without waiting for the interval.
/// - **A running guest's CPU use moved** by at least `cpuChangePoints` percentage points: its use
///   since the previous look (`Δcpu / (Δt × vCPUs)`; since the last report when the previous look
///   is less than `minimumWindowMilliseconds` ago) against its use over the interval the
///   controller last computed (between the last two reports). The report that follows carries the
///   use since the last report, which may still be diluted by the quiet time before the change;
///   the next look then finds that figure stale in turn and reports again. So a load spike reaches
///   a scaling policy within two watch intervals, rather than within one to two intervals.
/// - **A guest's own load figure moved** by at least `loadChangePermille`.
/// - **The host's health state changed** (its hardware's signals: `healthy`, `warning`,
///   `failing`): a failing host is quarantined by the controller within a watch interval and a
///   round trip, not an interval later.
///
/// A guest with no counters (its vmm did not answer in time) decides nothing by its CPU.
public struct PromptReport: Sendable, Equatable {
    public var cpuChangePoints: Double
    public var loadChangePermille: Int
    public var minimumWindowMilliseconds: Int64

    public init(cpuChangePoints: Double = 25, loadChangePermille: Int = 250, minimumWindowMilliseconds: Int64 = 150) {
        self.cpuChangePoints = cpuChangePoints
        self.loadChangePermille = loadChangePermille
        self.minimumWindowMilliseconds = minimumWindowMilliseconds
    }

    /// One guest as the agent sees it at one time.
    public struct Guest: Sendable, Equatable {
        public var state: String
        /// The vCPU threads' CPU time so far, if its vmm answered.
        public var cpuNanoseconds: UInt64?
        public var vcpus: Int
        public var loadPermille: Int?

        public init(state: String, cpuNanoseconds: UInt64?, vcpus: Int, loadPermille: Int?) {
            self.state = state
            self.cpuNanoseconds = cpuNanoseconds
            self.vcpus = vcpus
            self.loadPermille = loadPermille
        }
    }

    /// What the last report said, and the CPU use per guest the controller computed from it.
    public struct Sent: Sendable, Equatable {
        public var timeMilliseconds: Int64
        public var guests: [String: Guest]
        /// Percent of the guest's vCPUs between the report before and this one.
        public var cpuPercent: [String: Double]
        /// The host's health state reported (`HealthState`'s raw value).
        public var health: String

        public init(
            timeMilliseconds: Int64, guests: [String: Guest], cpuPercent: [String: Double] = [:],
            health: String = "healthy"
        ) {
            self.timeMilliseconds = timeMilliseconds
            self.guests = guests
            self.cpuPercent = cpuPercent
            self.health = health
        }
    }

    /// Why a report should go now, or nil to wait for the interval; `previousLook` is the look
    /// before this one (its `cpuPercent` unused), if it came after the last report; `health` the
    /// host's health state now.
    public func reason(
        last: Sent, previousLook: Sent? = nil, now: Int64, guests: [String: Guest], health: String = "healthy"
    ) -> String? {
        if health != last.health { return "the host's health is \(health) (was \(last.health))" }
        let base =
            previousLook.flatMap {
                $0.timeMilliseconds >= last.timeMilliseconds
                    && now - $0.timeMilliseconds >= minimumWindowMilliseconds ? $0 : nil
            } ?? last
        for id in Set(last.guests.keys).union(guests.keys).sorted() {
            guard let before = last.guests[id] else { return "guest \(id) appeared" }
            guard let guest = guests[id] else { return "guest \(id) is gone" }
            if guest.state != before.state { return "guest \(id) is \(guest.state) (was \(before.state))" }
            if let load = guest.loadPermille, let was = before.loadPermille, abs(load - was) >= loadChangePermille {
                return "guest \(id)'s load is \(load)‰ (was \(was)‰)"
            }
            if guest.loadPermille != nil, before.loadPermille == nil { return "guest \(id) reports a load" }
            guard now - base.timeMilliseconds >= minimumWindowMilliseconds, let previous = last.cpuPercent[id],
                let then = base.guests[id],
                let use = Self.cpuPercent(from: then, to: guest, milliseconds: now - base.timeMilliseconds)
            else { continue }
            if abs(use - previous) >= cpuChangePoints {
                return "guest \(id) uses \(Int(use.rounded()))% of its vCPUs (was \(Int(previous.rounded()))%)"
            }
        }
        return nil
    }

    /// The record of a report sent at `now` with `guests` and `health`, after `last` (nil: the first).
    public func sent(after last: Sent?, now: Int64, guests: [String: Guest], health: String = "healthy") -> Sent {
        var use: [String: Double] = [:]
        if let last {
            for (id, guest) in guests {
                guard let before = last.guests[id],
                    let percent = Self.cpuPercent(
                        from: before, to: guest, milliseconds: now - last.timeMilliseconds)
                else { continue }
                use[id] = percent
            }
        }
        return Sent(timeMilliseconds: now, guests: guests, cpuPercent: use, health: health)
    }

    /// Percent of the guest's vCPUs used between two looks (nil: no counters, a counter that went
    /// down, no time between them, no vCPUs); at most 100.
    static func cpuPercent(from before: Guest, to after: Guest, milliseconds: Int64) -> Double? {
        guard let then = before.cpuNanoseconds, let now = after.cpuNanoseconds, now >= then, milliseconds > 0,
            after.vcpus > 0
        else { return nil }
        return min(100, Double(now - then) / (Double(milliseconds) * 1e6 * Double(after.vcpus)) * 100)
    }
}
