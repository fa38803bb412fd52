/// Where a new guest goes: filter, then weigh (as Nova's filter scheduler does). Pure: no I/O,
/// no clock; the same input gives the same host.
///
/// - Filter: the host takes guests (healthy, heard from recently: the caller decides that and
///   says so in `PlacementCandidate.takesGuests`) and its free resources fit the request in
///   every dimension.
/// - Weigh: by the free resources the host would have left, compared as (memory, vCPUs, disk),
///   memory first. `spread` takes the host with the most left (guests spread out, a host's
///   failure hits few); `pack` the one with the least that still fits (hosts fill up one by one,
///   whole hosts stay free for large flavors or can be switched off).
/// - Tie: the smallest host ID, so that every controller decides the same.
public enum Placement {
    public static func choose(
        _ request: Resources, among candidates: [PlacementCandidate], policy: PlacementPolicy
    ) -> PlacementDecision {
        var best: Int?
        for index in candidates.indices {
            let candidate = candidates[index]
            guard candidate.takesGuests, candidate.free.fits(request) else { continue }
            if let current = best, !prefers(candidate, over: candidates[current], policy: policy) { continue }
            best = index
        }
        if let best { return .host(candidates[best].hostID) }
        return .none(refusal(request, candidates))
    }

    /// Whether `policy` weighs `candidate` above `other` (both fit the same request).
    public static func prefers(
        _ candidate: PlacementCandidate, over other: PlacementCandidate, policy: PlacementPolicy
    ) -> Bool {
        let order = compare(candidate.free, other.free)
        if order != 0 { return policy == .spread ? order > 0 : order < 0 }
        return candidate.hostID < other.hostID
    }

    /// -1, 0 or 1 as `a` has less, as much, or more free than `b` (memory, then vCPUs, then disk).
    /// Subtracting the same request from both does not change it, so free-before is weighed.
    static func compare(_ a: Resources, _ b: Resources) -> Int {
        if a.memoryBytes != b.memoryBytes { return a.memoryBytes < b.memoryBytes ? -1 : 1 }
        if a.vcpus != b.vcpus { return a.vcpus < b.vcpus ? -1 : 1 }
        if a.diskBytes != b.diskBytes { return a.diskBytes < b.diskBytes ? -1 : 1 }
        return 0
    }

    static func refusal(_ request: Resources, _ candidates: [PlacementCandidate]) -> PlacementRefusal {
        let taking = candidates.filter(\.takesGuests)
        var largest: Resources?
        for candidate in taking where largest.map({ compare(candidate.free, $0) > 0 }) ?? true {
            largest = candidate.free
        }
        return PlacementRefusal(
            request: request, hosts: candidates.count, hostsTakingGuests: taking.count, largestFree: largest)
    }
}

/// How the scheduler weighs hosts that fit (`Placement`).
public enum PlacementPolicy: String, Sendable, Codable, CaseIterable {
    /// Most free resources first.
    case spread
    /// Least free resources that still fit first.
    case pack
}

/// One host as the scheduler sees it: its free resources (capacity minus what its guests hold).
public struct PlacementCandidate: Sendable, Equatable {
    public var hostID: String
    /// Healthy and heard from recently.
    public var takesGuests: Bool
    public var free: Resources

    public init(hostID: String, takesGuests: Bool, free: Resources) {
        self.hostID = hostID
        self.takesGuests = takesGuests
        self.free = free
    }
}

public enum PlacementDecision: Sendable, Equatable {
    case host(String)
    case none(PlacementRefusal)
}

/// Why no host was chosen, in numbers a message can show.
public struct PlacementRefusal: Sendable, Equatable, CustomStringConvertible {
    public var request: Resources
    public var hosts: Int
    public var hostsTakingGuests: Int
    /// The free resources of the host with the most free memory among those taking guests.
    public var largestFree: Resources?

    public var description: String {
        guard hostsTakingGuests > 0 else {
            return hosts == 0
                ? "no host is registered: start an agent and register it"
                : "none of the \(hosts) hosts takes guests (degraded, or silent past the heartbeat timeout):"
                    + " check their agents"
        }
        return "no host has \(request) free (\(hostsTakingGuests) of \(hosts) hosts take guests; the most free"
            + " memory is on one with \(largestFree.map(String.init(describing:)) ?? "nothing")): add a host or"
            + " delete guests"
    }
}
