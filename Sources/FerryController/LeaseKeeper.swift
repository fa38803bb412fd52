import FerryControl
import FerryHostModel
import Foundation
import Logging

/// Carries leases through their windows, a pass every second:
/// - **start**: plans the delivery (`ControlStore.planLeaseDelivery`: the units are set aside at
///   once, so no new on-demand guest lands in them), live-migrates the on-demand guests in the
///   way (never stops them), then opens the pool (`active`, or `short` by the units no host
///   could give) and boots the lease's guests if it names an image;
/// - **inside the window**: a host of the pool that stops taking guests (silent, degraded) makes
///   the keeper plan again: the units go to other capacity (migrating on-demand guests out of the
///   way again) or the lease is `short`, visibly, until capacity returns;
/// - **end**: by its terms: `extend` (if admission admits the next window of the same length),
///   `stop` (the pool's guests stopped gracefully and deleted, as capacity blocks end) or
///   `suspend` (suspended as a user's suspend does, outside the pool: they keep their places on
///   their hosts, which later leases and on-demand guests count as taken; one its host does not
///   suspend is stopped gracefully instead, and the lease's note says which and why).
///
/// Everything it decides is in the store, so a controller that restarts carries on where the
/// last one stopped (a move that was under way is settled by the mover's own recovery).
final class LeaseKeeper: Sendable {
    typealias Move = @Sendable (GuestID, String, String) async throws(ControlError) -> Void

    let store: any ControlStore
    let provisioner: GuestProvisioner
    let move: Move
    let heartbeatTimeout: Duration
    let clock: @Sendable () -> Date
    let logger: Logger

    init(
        store: any ControlStore, provisioner: GuestProvisioner, heartbeatTimeout: Duration,
        clock: @escaping @Sendable () -> Date = { Date() }, logger: Logger, move: @escaping Move
    ) {
        self.store = store
        self.provisioner = provisioner
        self.move = move
        self.heartbeatTimeout = heartbeatTimeout
        self.clock = clock
        self.logger = logger
    }

    /// Passes every `interval` until the task is cancelled, and at the instant a window starts or
    /// ends between two passes: a delivery does not wait for the next tick.
    func watch(every interval: Duration) async {
        while !Task.isCancelled {
            do { try await pass() } catch { logger.error("keeping the leases failed: \(error)") }
            let now = clock()
            let seconds = Double(interval.components.seconds) + Double(interval.components.attoseconds) / 1e18
            let horizon = now.addingTimeInterval(seconds)
            let upcoming = (try? await store.leasesInWindow(at: horizon)) ?? []
            let next = upcoming.flatMap { [$0.start, $0.end] }.filter { $0 > now && $0 <= horizon }.min() ?? horizon
            try? await Task.sleep(for: .milliseconds(max(1, Int((next.timeIntervalSince(now) * 1000).rounded(.up)))))
        }
    }

    /// One pass over the leases whose window began.
    func pass() async throws(ControlError) {
        let now = clock()
        let hosts = try await store.hosts()
        for lease in try await store.leasesInWindow(at: now) {
            do {
                if now >= lease.end {
                    try await end(lease)
                } else if lease.phase == .waiting || lease.phase == .delivering {
                    try await deliver(lease, cause: "its window began")
                } else if let lost = lostHosts(lease, hosts: hosts, now: now) {
                    try await deliver(lease, cause: lost)
                }
            } catch {
                logger.error("lease \(lease.id): \(error)", metadata: ["lease.id": "\(lease.id)"])
            }
        }
    }

    /// Why the pool must be planned again, if it must: a host of it no longer takes guests (one
    /// in standby or waking does: the guests placed there wake it), or it is short and capacity
    /// may have returned.
    func lostHosts(_ lease: LeaseRecord, hosts: [HostRecord], now: Date) -> String? {
        let failing = lease.slots.keys.sorted().filter { id in
            !(hosts.first { $0.id == id }?.takesGuestsWhenOn(at: now, heartbeatTimeout: heartbeatTimeout) ?? false)
        }
        if !failing.isEmpty { return "host \(failing.joined(separator: ", ")) of its pool stopped taking guests" }
        return lease.phase == .short ? "it is short of \(lease.shortUnits) units" : nil
    }

    /// Plans, migrates the guests in the way, opens the pool, boots its guests.
    func deliver(_ lease: LeaseRecord, cause: String) async throws(ControlError) {
        let began = ContinuousClock.now
        let (planned, plan) = try await store.planLeaseDelivery(id: lease.id)
        if Self.unchanged(lease, planned: planned, plan: plan) { return }
        await wakeAsleep(planned)
        if !plan.moves.isEmpty {
            logger.notice(
                "lease delivery: migrating on-demand guests out of its units",
                metadata: ["lease.id": "\(lease.id)", "moves": "\(plan.moves.count)", "cause": "\(cause)"])
        }
        for step in plan.moves {
            do throws(ControlError) {
                try await move(
                    try Self.guestID(step.guest), step.to, "lease \(lease.id): its units are set aside on \(step.from)")
            } catch {
                // The next pass plans again from what the store then holds.
                throw ControlError(
                    error.code, "migrating guest \(step.guest) from \(step.from) to \(step.to) failed: \(error.message)"
                )
            }
        }
        let took = Double((ContinuousClock.now - began) / .milliseconds(1)) / 1000
        let units = plan.slots.values.reduce(0, +)
        let placed = plan.slots.sorted { $0.key < $1.key }.map { "\($0.key) × \($0.value)" }.joined(separator: ", ")
        let note =
            "\(cause): \(units) units on \(placed.isEmpty ? "no host" : placed); \(plan.moves.count) on-demand guests"
            + " migrated out in \(String(format: "%.2f", took)) s"
            + (plan.short > 0 ? "; \(plan.short) units short: no capacity takes them" : "")
        let opened = try await store.changeLease(
            id: lease.id, to: plan.short > 0 ? .short : .active, shortUnits: plan.short, note: note)
        if planned.phase == .delivering { try await bootGuests(opened) }
    }

    /// Asks the hosts in standby that the plan gave units to wake (the capacity admission counted),
    /// so the pool's guests need not wait for them; a guest placed on one still waits until it is
    /// on (`GuestProvisioner`). A wake that is refused is logged: the build asks again.
    func wakeAsleep(_ lease: LeaseRecord) async {
        guard let hosts = try? await store.hosts() else { return }
        for host in hosts where host.power == .standby && (lease.slots[host.id] ?? 0) > 0 {
            do throws(ControlError) {
                _ = try await provisioner.power.wake(host.id, cause: "lease \(lease.id): its units are set aside on it")
                logger.notice(
                    "lease delivery: waking a host in standby for its units",
                    metadata: ["lease.id": "\(lease.id)", "host.id": "\(host.id)"])
            } catch {
                logger.warning(
                    "lease delivery: a host in standby did not take the wake: \(error.message)",
                    metadata: ["lease.id": "\(lease.id)", "host.id": "\(host.id)"])
            }
        }
    }

    /// Whether planning the open lease again changed nothing: the same slots, no migration, as
    /// many units short as it was (a short lease is planned every pass until capacity returns; it
    /// is written, and its note and SLA record changed, only when something did).
    static func unchanged(_ lease: LeaseRecord, planned: LeaseRecord, plan: DeliveryPlan) -> Bool {
        lease.phase.open && planned.slots == lease.slots && plan.moves.isEmpty
            && (plan.short > 0 ? LeasePhase.short : .active) == lease.phase && plan.short == lease.shortUnits
    }

    static func guestID(_ hex: String) throws(ControlError) -> GuestID {
        do throws(HostModelError) { return try GuestID(hex) } catch {
            throw ControlError(.invalidArgument, "guest \(hex): \(error.message)")
        }
    }

    /// The lease's guests, if it names an image: as many as it has units in its pool, less those
    /// it has.
    func bootGuests(_ lease: LeaseRecord) async throws(ControlError) {
        guard let image = lease.image else { return }
        let members = try await store.guests(project: lease.project).filter {
            $0.request.lease == lease.id && $0.state.holdsCapacity
        }
        let available = lease.slots.values.reduce(0, +)
        for number in members.count..<max(members.count, min(lease.count, available)) {
            let name: GuestName
            do throws(HostModelError) { name = try GuestName("lease-\(lease.id.prefix(8))-\(number + 1)") } catch {
                throw ControlError(.invalidArgument, "lease \(lease.id): \(error.message)")
            }
            let creation = try await store.createGuest(
                GuestRequest(project: lease.project, name: name, flavor: lease.flavor, image: image, lease: lease.id),
                clientToken: "lease-\(lease.id)-\(number + 1)", cause: "lease \(lease.id): delivered")
            if creation.created { Task { await provisioner.build(creation.guest) } }
        }
    }

    /// The window's end, by the lease's terms.
    func end(_ lease: LeaseRecord) async throws(ControlError) {
        if lease.atEnd == .extend {
            do throws(ControlError) {
                let extended = try await store.extendLease(id: lease.id)
                _ = try await store.changeLease(
                    id: lease.id, to: lease.phase, shortUnits: lease.shortUnits,
                    note: "extended to \(CloudViews.time(extended.end)): admission admitted the next window")
                return
            } catch  where error.code == .insufficientCapacity {
                logger.notice(
                    "lease \(lease.id) cannot be extended; it stops", metadata: ["reason": "\(error.message)"])
            }
        }
        let members = try await store.guests(project: lease.project).filter { $0.request.lease == lease.id }
        let note: String
        if lease.atEnd == .suspend {
            note = await suspendMembers(lease, members.filter { $0.state == .running })
        } else {
            var stopped = 0
            for guest in members where guest.state == .running {
                _ = try await provisioner.stop(guest, cause: "lease \(lease.id): its window ended")
                stopped += 1
            }
            for guest in try await store.guests(project: lease.project)
            where guest.request.lease == lease.id && (guest.state == .stopped || guest.state == .error) {
                _ = try await provisioner.delete(guest, cause: "lease \(lease.id): its window ended")
            }
            note = "window ended (\(lease.atEnd.rawValue)): \(stopped) guests stopped gracefully and deleted"
        }
        _ = try await store.changeLease(id: lease.id, to: .ended, shortUnits: 0, note: note)
    }

    /// `at_end: suspend`: each running guest suspended as a user's suspend does (its host saves
    /// its memory and devices; it keeps its place and is not billed); one its host does not
    /// suspend (the agent unreachable, the suspend failed) is stopped gracefully instead. The
    /// lease's note: how many of each, and which guest was not suspended and why.
    func suspendMembers(_ lease: LeaseRecord, _ running: [CloudGuest]) async -> String {
        let cause = "lease \(lease.id): its window ended (at_end: suspend)"
        var suspended = 0
        var stopped = 0
        var failures: [String] = []
        for guest in running {
            let refusal: ControlError
            do throws(ControlError) {
                _ = try await provisioner.suspend(guest, cause: cause)
                suspended += 1
                continue
            } catch {
                refusal = error
            }
            logger.warning(
                "a lease's guest was not suspended at its end; it is stopped instead",
                metadata: ["lease.id": "\(lease.id)", "guest.id": "\(guest.id)", "reason": "\(refusal.message)"])
            do throws(ControlError) {
                _ = try await provisioner.stop(
                    guest, cause: "\(cause); not suspended (\(refusal.message)): stopped gracefully instead")
                stopped += 1
                failures.append("guest \(guest.id) not suspended (\(refusal.message)): stopped instead")
            } catch {
                failures.append(
                    "guest \(guest.id) not suspended (\(refusal.message)) nor stopped (\(error.message))")
            }
        }
        return "window ended (suspend): \(suspended) guests suspended, kept on their hosts outside the pool"
            + (stopped > 0 ? "; \(stopped) stopped gracefully instead, kept with their disks" : "")
            + (failures.isEmpty ? "" : "; " + failures.joined(separator: "; "))
    }
}
