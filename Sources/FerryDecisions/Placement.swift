/// Where a new guest goes: filter, then weigh (as Nova's filter scheduler does). Pure: no I/O,
/// no clock; the same input gives the same host.
///
/// - Filter: the host takes guests (healthy, heard from recently: the caller decides that and
///   says so in `PlacementCandidate.takesGuests`), runs the request's kind of guest (a request
///   that needs KVM goes only to a host whose agent reports a usable /dev/kvm,
///   `PlacementCandidate.runsKVM`), and its free resources fit the request in every dimension.
/// - Weigh: by the free resources the host would have left, compared as (memory, vCPUs, disk),
///   memory first. `spread` takes the host with the most left (guests spread out, a host's
///   failure hits few); `pack` the one with the least that still fits (hosts fill up one by one,
///   whole hosts stay free for large flavors or can be switched off).
/// - Tie: the smallest host ID, so that every controller decides the same.
public enum Placement {
    public static func choose(
        _ request: PlacementRequest, among candidates: [PlacementCandidate], policy: PlacementPolicy
    ) -> PlacementDecision {
        var best: Int?
        for index in candidates.indices {
            let candidate = candidates[index]
            guard candidate.accepts(request), candidate.free.fits(request.resources) else { continue }
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

    static func refusal(_ request: PlacementRequest, _ candidates: [PlacementCandidate]) -> PlacementRefusal {
        let taking = candidates.filter(\.takesGuests)
        let eligible = taking.filter { $0.accepts(request) }
        var largest: Resources?
        for candidate in eligible where largest.map({ compare(candidate.free, $0) > 0 }) ?? true {
            largest = candidate.free
        }
        return PlacementRefusal(
            request: request, hosts: candidates.count, hostsTakingGuests: taking.count,
            hostsWithKVM: candidates.filter(\.runsKVM).count, hostsEligible: eligible.count, largestFree: largest,
            hostsQuarantined: candidates.filter(\.quarantined).count)
    }
}

/// How the scheduler weighs hosts that fit (`Placement`).
public enum PlacementPolicy: String, Sendable, Codable, CaseIterable {
    /// Most free resources first.
    case spread
    /// Least free resources that still fit first.
    case pack
}

/// What a new guest needs of its host: its flavor's resources, and KVM for a guest of a `kvm`
/// image.
public struct PlacementRequest: Sendable, Equatable, CustomStringConvertible {
    public var resources: Resources
    /// The guest runs on KVM: only a host with a usable /dev/kvm can run it.
    public var needsKVM: Bool

    public init(_ resources: Resources, needsKVM: Bool = false) {
        self.resources = resources
        self.needsKVM = needsKVM
    }

    public var description: String { needsKVM ? "\(resources) with KVM" : "\(resources)" }
}

/// One host as the scheduler sees it: its free resources (capacity minus what its guests hold)
/// and what it can run.
public struct PlacementCandidate: Sendable, Equatable {
    public var hostID: String
    /// Healthy and heard from recently.
    public var takesGuests: Bool
    public var free: Resources
    /// Its agent reports a usable /dev/kvm: it runs guests of `kvm` images.
    public var runsKVM: Bool
    /// Its hardware is failing: it takes no guests (`takesGuests` is false too), and refusals say so.
    public var quarantined: Bool

    public init(hostID: String, takesGuests: Bool, free: Resources, runsKVM: Bool = false, quarantined: Bool = false) {
        self.hostID = hostID
        self.takesGuests = takesGuests
        self.free = free
        self.runsKVM = runsKVM
        self.quarantined = quarantined
    }

    /// Whether the host takes guests and runs the request's kind (its room aside).
    public func accepts(_ request: PlacementRequest) -> Bool {
        takesGuests && (runsKVM || !request.needsKVM)
    }
}

public enum PlacementDecision: Sendable, Equatable {
    case host(String)
    case none(PlacementRefusal)
}

/// Why no host was chosen, in numbers a message can show.
public struct PlacementRefusal: Sendable, Equatable, CustomStringConvertible {
    public var request: PlacementRequest
    public var hosts: Int
    public var hostsTakingGuests: Int
    /// Hosts whose agents report a usable /dev/kvm, taking guests or not.
    public var hostsWithKVM: Int
    /// Hosts that take guests and run the request's kind (with KVM, for a request that needs it).
    public var hostsEligible: Int
    /// The free resources of the eligible host with the most free memory.
    public var largestFree: Resources?
    /// Hosts quarantined for failing hardware (none of them takes guests).
    public var hostsQuarantined: Int

    public init(
        request: PlacementRequest, hosts: Int, hostsTakingGuests: Int, hostsWithKVM: Int, hostsEligible: Int,
        largestFree: Resources?, hostsQuarantined: Int = 0
    ) {
        self.request = request
        self.hosts = hosts
        self.hostsTakingGuests = hostsTakingGuests
        self.hostsWithKVM = hostsWithKVM
        self.hostsEligible = hostsEligible
        self.largestFree = largestFree
        self.hostsQuarantined = hostsQuarantined
    }

    public var description: String {
        guard hostsTakingGuests > 0 else {
            return hosts == 0
                ? "no host is registered: start an agent and register it"
                : "none of the \(hosts) hosts takes guests (degraded, quarantined, or silent past the heartbeat"
                    + " timeout\(quarantine)): check their agents"
        }
        let largest = largestFree.map(String.init(describing:)) ?? "nothing"
        guard request.needsKVM else {
            return "no host has \(request) free (\(hostsTakingGuests) of \(hosts) hosts take guests\(quarantine); the"
                + " most free memory is on one with \(largest)): add a host or delete guests"
        }
        guard hostsEligible > 0 else {
            return "no host with KVM takes guests (\(hostsWithKVM) of \(hosts) hosts report a usable /dev/kvm;"
                + " \(hostsTakingGuests) take guests\(quarantine)): check the agents of the hosts with KVM, or add one"
        }
        return "no host with KVM has room for \(request.resources) (\(hostsEligible) of \(hosts) hosts have KVM and"
            + " take guests\(quarantine); the most free memory is on one with \(largest)): add a host with KVM or"
            + " delete guests"
    }

    /// `; 1 is quarantined (failing hardware)`, or nothing when none is.
    private var quarantine: String {
        switch hostsQuarantined {
        case 0: ""
        case 1: "; 1 is quarantined (failing hardware)"
        default: "; \(hostsQuarantined) are quarantined (failing hardware)"
        }
    }
}
