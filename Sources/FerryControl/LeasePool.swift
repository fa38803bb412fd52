import FerryHostModel
import Foundation

/// The rules of delivered leases' private pools, the same for every backend; pure (the backend
/// reads the rows in its transaction and asks here).
extension ControlRules {
    /// How long after its start a delivery counts as on time in the SLA record.
    public static let leaseDeliveryGraceMilliseconds: Int64 = 60_000

    /// What delivered leases set aside per host beyond what their own guests there hold: the
    /// on-demand scheduler adds it to the host's usage, so it never places into a pool.
    public static func poolReserve(leases: [LeaseRecord], guests: [CloudGuest]) -> [String: Resources] {
        var reserve: [String: Resources] = [:]
        for lease in leases where lease.state == .admitted && lease.phase.holdsSlots {
            for (host, units) in lease.slots {
                var free = Resources.zero
                for _ in 0..<units { free = free + lease.unit }
                for guest in guests where guest.request.lease == lease.id && guest.host == host {
                    free = free - guest.resources
                }
                reserve[host, default: .zero] = reserve[host, default: .zero] + nonNegative(free)
            }
        }
        return reserve
    }

    /// Refuses an on-demand guest that would leave an admitted lease short at some instant from
    /// now on: the leases' units (a `suspend` lease's for ever, `admissionLoad`), the on-demand
    /// guests and the new one must fit the capacity of the hosts taking guests, or that would once
    /// woken (what admission promised the lessees).
    public static func checkLeasesKeepRoom(
        for flavor: Flavor, leases: [LeaseRecord], onDemand: Resources, hosts: [HostRecord], now: Date,
        heartbeatTimeout: Duration
    ) throws(ControlError) {
        let from = Billing.milliseconds(now)
        let open = leases.filter {
            $0.state == .admitted && $0.phase != .ended && (Billing.milliseconds($0.end) > from || $0.atEnd == .suspend)
        }
        let admitted = try open.map { lease throws(ControlError) in try admissionLoad(lease, from: from) }
        guard let lastEnd = admitted.map(\.endMilliseconds).max() else { return }
        let capacity = hosts.filter { $0.takesGuestsWhenOn(at: now, heartbeatTimeout: heartbeatTimeout) }
            .reduce(Resources.zero) { $0 + $1.capacity }
        let guest = try LeaseRequest(
            id: "on-demand", unit: flavor.resources, count: 1, startMilliseconds: from, endMilliseconds: lastEnd)
        guard
            case .refuse(let shortfall) = LeaseAdmission.decide(
                guest, admitted: admitted, capacity: capacity, onDemand: onDemand)
        else { return }
        throw ControlError(
            .insufficientCapacity,
            "a guest of flavor \(flavor.name) does not fit beside the capacity reserved by leases: from"
                + " \(iso(shortfall.atMilliseconds)) it would be short by \(shortfall.shortfall); pick a smaller flavor"
                + " or try after the leases end")
    }

    /// The host of a delivered lease's pool a new guest of the lessee goes to: the lease is the
    /// project's, open, of the guest's flavor, and one of its hosts (taking guests, or in standby:
    /// the guest's build wakes it) has a unit its guests do not fill.
    public static func choosePoolHost(
        _ request: GuestRequest, lease: LeaseRecord?, guests: [CloudGuest], hosts: [HostRecord], now: Date,
        heartbeatTimeout: Duration
    ) throws(ControlError) -> String {
        guard let lease, lease.project == request.project, lease.state == .admitted else {
            throw ControlError(
                .notFound, "no lease \(request.lease ?? "") of project \(request.project): list the project's leases")
        }
        guard lease.phase.open else {
            throw ControlError(
                .invalidArgument,
                "lease \(lease.id) is \(lease.phase.rawValue): its pool takes guests once delivered (it starts at"
                    + " \(iso(Billing.milliseconds(lease.start))))")
        }
        guard request.flavor == lease.flavor else {
            throw ControlError(
                .invalidArgument, "lease \(lease.id) holds units of flavor \(lease.flavor): ask for that flavor")
        }
        // Guests on hosts that stopped taking guests do not count: the units were re-mapped.
        let usable = hosts.filter { $0.takesGuestsWhenOn(at: now, heartbeatTimeout: heartbeatTimeout) }.map(\.id)
        let members = guests.filter {
            $0.request.lease == lease.id && $0.state.holdsCapacity && usable.contains($0.host)
        }
        let host = lease.slots.keys.sorted().first { host in
            usable.contains(host) && members.filter { $0.host == host }.count < lease.slots[host]!
        }
        guard let host, members.count < lease.slots.values.reduce(0, +) else {
            throw ControlError(
                .insufficientCapacity,
                "lease \(lease.id)'s pool is full (\(members.count) guests in \(lease.slots.values.reduce(0, +)) of its"
                    + " \(lease.count) units"
                    + "\(lease.shortUnits > 0 ? ", \(lease.shortUnits) units short after a host failure" : "")):"
                    + " delete a guest of the pool first")
        }
        return host
    }

    /// Where `lease`'s units go now, and the migrations that make room (`LeaseDelivery`): its
    /// guests' hosts keep the units they fill; the rest are planned on the hosts taking guests,
    /// beside everything else that holds capacity (guests, other leases' slots). When those are
    /// short, hosts in standby count too (as admission counted them): the plan that gives more
    /// units is taken, and its units on a host in standby wake it (`LeaseKeeper`).
    public static func planDelivery(
        _ lease: LeaseRecord, needsKVM: Bool, leases: [LeaseRecord], guests: [CloudGuest], hosts: [HostRecord],
        now: Date, heartbeatTimeout: Duration
    ) -> DeliveryPlan {
        let on = planDelivery(
            lease, needsKVM: needsKVM, leases: leases, guests: guests, hosts: hosts, asleepToo: false, now: now,
            heartbeatTimeout: heartbeatTimeout)
        guard on.short > 0, hosts.contains(where: { $0.power != .on }) else { return on }
        let woken = planDelivery(
            lease, needsKVM: needsKVM, leases: leases, guests: guests, hosts: hosts, asleepToo: true, now: now,
            heartbeatTimeout: heartbeatTimeout)
        return woken.short < on.short ? woken : on
    }

    /// `planDelivery` on the hosts that take guests, and with `asleepToo` on those in standby (or
    /// waking) that would once on. No guest is moved onto a host that is not on.
    static func planDelivery(
        _ lease: LeaseRecord, needsKVM: Bool, leases: [LeaseRecord], guests: [CloudGuest], hosts: [HostRecord],
        asleepToo: Bool, now: Date, heartbeatTimeout: Duration
    ) -> DeliveryPlan {
        let others = leases.filter { $0.id != lease.id }
        let reserve = poolReserve(leases: others, guests: guests)
        let holding = guests.filter { $0.state.holdsCapacity }
        var kept: [String: Int] = [:]
        var deliveryHosts: [DeliveryHost] = []
        for host in hosts {
            let here = holding.filter { $0.host == host.id || $0.movingTo == host.id }
            let takes =
                asleepToo
                ? host.takesGuestsWhenOn(at: now, heartbeatTimeout: heartbeatTimeout)
                : host.takesGuests(at: now, heartbeatTimeout: heartbeatTimeout)
            let members = here.filter { $0.request.lease == lease.id && $0.host == host.id }.count
            if takes, members > 0 { kept[host.id] = members }
            let held = here.reduce(reserve[host.id] ?? .zero) { $0 + $1.resources }
            let movable = here.filter {
                $0.request.lease == nil && $0.state == .running && $0.movingTo == nil && $0.host == host.id
            }.map { MovableGuest(id: $0.id.hex, resources: $0.resources, needsKVM: $0.imageKind == .kvm) }
            deliveryHosts.append(
                DeliveryHost(
                    id: host.id, capacity: host.capacity, held: held, takesGuests: takes, runsKVM: host.kvm,
                    movable: movable, takesMoves: takes && host.power == .on))
        }
        let keptUnits = kept.values.reduce(0, +)
        var plan = LeaseDelivery.plan(
            unit: lease.unit, count: max(0, lease.count - keptUnits), needsKVM: needsKVM, hosts: deliveryHosts)
        plan.slots.merge(kept, uniquingKeysWith: +)
        return plan
    }

    /// The lease once its delivery was planned at `now`: its slots (the hosts given units), and a
    /// waiting lease `delivering`; an open one short by the units the plan could not place.
    public static func leaseDeliveryPlanned(_ lease: LeaseRecord, plan: DeliveryPlan, now: Date) -> LeaseRecord {
        var changed = lease
        changed.slots = plan.slots.filter { $0.value > 0 }
        if lease.phase == .waiting {
            changed.phase = .delivering
            changed.note =
                "window began: \(plan.slots.values.reduce(0, +)) units set aside on \(plan.slots.count) hosts,"
                + " \(plan.moves.count) on-demand guests to migrate out\(plan.short > 0 ? ", \(plan.short) units short" : "")"
        }
        return changed
    }

    /// The lease in `phase` from `now`: delivered the first time its pool opens; time short
    /// summed; an ended lease's slots freed.
    public static func leaseChanged(
        _ lease: LeaseRecord, to phase: LeasePhase, shortUnits: Int, note: String, now: Date
    ) -> LeaseRecord {
        var changed = lease
        if phase.open, changed.deliveredAt == nil { changed.deliveredAt = now }
        if phase == .short, changed.shortSince == nil { changed.shortSince = now }
        if phase != .short, let since = changed.shortSince {
            changed.shortMilliseconds += max(0, Billing.milliseconds(now) - Billing.milliseconds(since))
            changed.shortSince = nil
        }
        changed.shortUnits = phase == .short ? max(0, shortUnits) : 0
        if phase == .ended {
            changed.endedAt = now
            changed.slots = [:]
        }
        changed.phase = phase
        changed.note = note
        return changed
    }

    static func nonNegative(_ resources: Resources) -> Resources {
        Resources(
            vcpus: max(0, resources.vcpus), memoryBytes: max(0, resources.memoryBytes),
            diskBytes: max(0, resources.diskBytes))
    }
}
