import FerryHostModel
import Foundation

/// The decisions every `ControlStore` backend makes the same way, with the same errors: what a
/// request must hold, whether a quota has room, whether a change of state is allowed, which hosts
/// the scheduler sees. Pure: the backend reads the rows in its transaction and asks here.
public enum ControlRules {
    public static func validate(_ registration: HostRegistration) throws(ControlError) {
        try ControlNames.validate(registration.id, "host")
        guard registration.capacity.isNonNegative, !registration.address.isEmpty else {
            throw ControlError(
                .invalidArgument,
                "host \(registration.id): needs an address and a capacity of at least zero (\(registration.capacity))")
        }
    }

    public static func validate(_ flavor: Flavor) throws(ControlError) { try flavor.validate() }
    public static func validate(_ image: Image) throws(ControlError) { try image.validate() }

    public static func validate(_ project: Project) throws(ControlError) {
        try ControlNames.validate(project.name, "project")
        try project.quota.validate(project.name)
    }

    public static func validate(_ quota: Quota, project: String) throws(ControlError) {
        try quota.validate(project)
    }

    public static func validate(clientToken: String?) throws(ControlError) {
        if let clientToken, clientToken.isEmpty || clientToken.utf8.count > 64 {
            throw ControlError(.invalidArgument, "a client token has 1 to 64 characters, got \(clientToken.utf8.count)")
        }
    }

    /// A change to `error` needs a reason, and only such a change has one.
    public static func validate(transitionOf id: GuestID, to next: CloudGuestState, errorReason: String?)
        throws(ControlError)
    {
        guard (next == .error) == (errorReason != nil) else {
            throw ControlError(
                .invalidArgument, "guest \(id): a change to error needs a reason, and only a change to error has one")
        }
    }

    /// What an earlier guest made with `clientToken` means for `request`: the same request gets
    /// that guest again; another one is refused.
    public static func repeatCreation(_ request: GuestRequest, clientToken: String, earlier: CloudGuest)
        throws(ControlError) -> GuestCreation
    {
        var asked = request
        asked.migrationPolicy = earlier.request.migrationPolicy
        guard earlier.request == asked else {
            throw ControlError(
                .clientTokenMismatch,
                "client token \(clientToken) of project \(request.project) was used for another request"
                    + " (guest \(earlier.id): \(earlier.request.name), flavor \(earlier.request.flavor), image"
                    + " \(earlier.request.image)): send that request again, or use a new token for this one")
        }
        return GuestCreation(guest: earlier, created: false)
    }

    /// Refuses a guest of `flavor` and `image` that no host could define or run: its root disk is
    /// the flavor's disk, its memory and vCPUs the flavor's, each within what the image's kind
    /// runs with (`GuestSpecification.validate`, which the agent applies, would refuse it only
    /// after the create was answered); a guest of a `kvm` image needs a registered host whose
    /// agent reports a usable /dev/kvm (among `hosts`, taking guests or not).
    public static func checkRunnable(_ flavor: Flavor, _ image: Image, hosts: [HostRecord]) throws(ControlError) {
        try checkDefinable(flavor, image)
        if image.kind == .kvm, !hosts.contains(where: \.kvm) {
            throw ControlError(
                .invalidArgument,
                "image \(image.name) is a kvm guest, and none of the \(hosts.count) registered hosts reports a usable"
                    + " /dev/kvm: register a host with KVM (its agent's GET /v1/host says why /dev/kvm is not"
                    + " usable), or pick an image of kind builtin")
        }
    }

    /// The flavor's resources within what the image's kind runs with.
    static func checkDefinable(_ flavor: Flavor, _ image: Image) throws(ControlError) {
        let resources = flavor.resources
        var wrong: [String] = []
        if !GuestSpecification.vcpuRange.contains(resources.vcpus) {
            wrong.append("\(resources.vcpus) vCPUs (1 to 64)")
        }
        let memory = image.kind.memoryRange
        if !memory.contains(resources.memoryBytes) || resources.memoryBytes % 4096 != 0 {
            wrong.append(
                "memory \(resources.memoryBytes) bytes (a multiple of 4096 from \(memory.lowerBound >> 20) MiB to"
                    + " \(memory.upperBound >> 30) GiB)")
        }
        if !DiskSpecification.sizeRange.contains(resources.diskBytes) || resources.diskBytes % 512 != 0 {
            wrong.append("disk \(resources.diskBytes) bytes (a multiple of 512 from 1 MiB to 4 TiB)")
        }
        guard wrong.isEmpty else {
            throw ControlError(
                .invalidArgument,
                "flavor \(flavor.name) cannot run image \(image.name), a \(image.kind.rawValue) guest:"
                    + " \(wrong.joined(separator: ", ")); pick another flavor")
        }
    }

    /// Refuses a guest of `flavor` the project's quota has no room for, naming every dimension over.
    public static func checkQuota(_ project: Project, _ usage: ProjectUsage, _ flavor: Flavor) throws(ControlError) {
        let quota = project.quota
        let after = usage.resources + flavor.resources
        var over: [String] = []
        if usage.guests + 1 > quota.guests { over.append("guests \(usage.guests + 1) > \(quota.guests)") }
        if after.vcpus > quota.resources.vcpus { over.append("vCPUs \(after.vcpus) > \(quota.resources.vcpus)") }
        if after.memoryBytes > quota.resources.memoryBytes {
            over.append("memory \(after.memoryBytes) > \(quota.resources.memoryBytes) bytes")
        }
        if after.diskBytes > quota.resources.diskBytes {
            over.append("disk \(after.diskBytes) > \(quota.resources.diskBytes) bytes")
        }
        guard over.isEmpty else {
            throw ControlError(
                .quotaExceeded,
                "project \(project.name): a guest of flavor \(flavor.name) would exceed its quota (\(over.joined(separator: ", "))):"
                    + " delete a guest, pick a smaller flavor, or ask an admin to raise the quota")
        }
    }

    /// The scheduler's choice among `hosts` (in the order read) with what their guests hold. When
    /// no host that is on has room, a host that would take the guest once on: one waking first,
    /// then one in standby (the caller records it waking; the guest's build waits for it).
    public static func chooseHost(
        _ request: PlacementRequest, hosts: [HostRecord], usage: [String: Resources], policy: PlacementPolicy,
        now: Date, heartbeatTimeout: Duration
    ) throws(ControlError) -> String {
        let candidates = hosts.map { host in
            PlacementCandidate(
                hostID: host.id, takesGuests: host.takesGuests(at: now, heartbeatTimeout: heartbeatTimeout),
                free: host.capacity - (usage[host.id] ?? .zero), runsKVM: host.kvm, quarantined: host.quarantined)
        }
        switch Placement.choose(request, among: candidates, policy: policy) {
        case .host(let id): return id
        case .none(let refusal):
            for asleep: Set<HostPower> in [[.waking], [.standby]] {
                let sleeping = hosts.filter {
                    asleep.contains($0.power) && $0.takesGuestsWhenOn(at: now, heartbeatTimeout: heartbeatTimeout)
                }.map { host in
                    PlacementCandidate(
                        hostID: host.id, takesGuests: true, free: host.capacity - (usage[host.id] ?? .zero),
                        runsKVM: host.kvm)
                }
                if case .host(let id) = Placement.choose(request, among: sleeping, policy: policy) { return id }
            }
            throw ControlError(.insufficientCapacity, refusal.description)
        }
    }

    /// The host a new guest was placed on must wake first (`chooseHost` chose it in standby): the
    /// store records it `waking` in the transaction that places the guest.
    public static func mustWake(_ host: String, among hosts: [HostRecord]) -> Bool {
        hosts.first { $0.id == host }?.power == .standby
    }

    /// Refuses a change of `guest` (as read in the transaction) unless it is in `expected` (at
    /// `generation`, if given) and `expected` allows `next`; a guest that is moving is not
    /// stopped, started, suspended or deleted (its source's agent is migrating it, live or cold).
    public static func checkTransition(
        _ guest: CloudGuest, from expected: CloudGuestState, to next: CloudGuestState, generation: Int64?
    ) throws(ControlError) {
        guard guest.state == expected, generation.map({ $0 == guest.generation }) ?? true else {
            throw ControlError(
                .stale,
                "guest \(guest.id) is \(guest.state.rawValue) at generation \(guest.generation), not \(expected.rawValue)"
                    + "\(generation.map { " at generation \($0)" } ?? ""): read it again and decide again")
        }
        if let movingTo = guest.movingTo, [.stopping, .building, .suspended, .deleted].contains(next) {
            throw ControlError(
                .transitionRefused,
                "guest \(guest.id) is moving from host \(guest.host) to host \(movingTo): \(Self.verb(next)) it once the"
                    + " move has ended")
        }
        guard expected.allows(next) else {
            let allowed = expected.successors.map(\.rawValue).sorted().joined(separator: ", ")
            throw ControlError(
                .transitionRefused,
                "guest \(guest.id) cannot go from \(expected.rawValue) to \(next.rawValue); from \(expected.rawValue)"
                    + " it may go to \(allowed.isEmpty ? "nothing (it is final)" : allowed)")
        }
    }

    /// What a change to `next` is called in a refusal.
    static func verb(_ next: CloudGuestState) -> String {
        switch next {
        case .stopping: "stop"
        case .building: "start"
        case .suspended: "suspend"
        case .deleted: "delete"
        default: "change"
        }
    }

    /// The guest as a transition the store just wrote leaves it: in `next`, a generation on,
    /// since `now`, with `errorReason` if one was given (an earlier reason stays otherwise).
    public static func transitioned(
        _ guest: CloudGuest, to next: CloudGuestState, errorReason: String?, at now: Date
    ) -> CloudGuest {
        var changed = guest
        changed.state = next
        changed.errorReason = errorReason ?? guest.errorReason
        changed.generation += 1
        changed.stateSince = now
        return changed
    }

    /// The states that hold capacity, as an SQL list: `('pending', 'building', …)`.
    public static let holdingStatesSQL =
        "(" + CloudGuestState.allCases.filter(\.holdsCapacity).map { "'\($0.rawValue)'" }.joined(separator: ", ") + ")"

    /// What each guest that holds capacity holds on each host, one row per (host, guest): on its
    /// host, and, while it moves, on the host it moves to as well (columns host, vcpus,
    /// memory_bytes, disk_bytes; the same SQL on SQLite and PostgreSQL).
    public static let holdingByHostSQL = """
        SELECT host, vcpus, memory_bytes, disk_bytes FROM guests WHERE state IN \(holdingStatesSQL)
        UNION ALL SELECT moving_to AS host, vcpus, memory_bytes, disk_bytes FROM guests
        WHERE moving_to IS NOT NULL AND state IN \(holdingStatesSQL)
        """
}
