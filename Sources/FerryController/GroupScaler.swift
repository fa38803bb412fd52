import FerryControl
import FerryHostModel
import Foundation
import Logging
import Synchronization

/// The controller's auto-scaling loop: every `--scaling-interval`, for each group to reconcile
/// (`ControlStore.scalingGroupsToReconcile`), it reads the members and their telemetry over the
/// policy's window, asks the group's policy for the desired count (`ScalingGroup.decide`, with
/// the group's desired count as the current one, as the Kubernetes HPA takes its spec's), records
/// a change with its reason, then carries out `GroupPlan`: resumes warm (suspended) members,
/// creates the missing members through the guest create (quota, placement and the group's room
/// checked in its transaction), suspends running members into the warm pool, stops the members a
/// scale-in takes gracefully and deletes them, deletes the stopped and failed ones and the warm
/// ones beyond the pool. No decision is made while a member's metric is not in yet (`GroupPlan.settling`).
///
/// A scale-in of running members consolidates first (`GroupPlan.consolidation`): the members it
/// live-migrates (through `GuestMover`, never stopped to move) to empty a host, then the ones it
/// removes; the group is left alone meanwhile (`consolidating`). A move that fails leaves its
/// guest where it was, and the scale-in falls back to the policy's order.
///
/// Target tracking's recommendation history is kept here, in memory: a controller that restarts
/// starts with an empty history, so its first decisions are stabilised only by what it has seen
/// since (a scale-down may come sooner than the down window after a restart).
final class GroupScaler: Sendable {
    let store: any ControlStore
    let provisioner: GuestProvisioner
    /// Moves members to consolidate (nil: a scale-in never moves).
    let mover: GuestMover?
    let heartbeatTimeout: Duration
    let clock: @Sendable () -> Date
    let logger: Logger
    private let history = Mutex<[String: [ScalingRecommendation]]>([:])
    /// Members with a stop or delete in flight: the plan leaves them alone.
    let busy = Mutex<Set<GuestID>>([])
    /// Groups whose scale-in is consolidating (moves, then removals): no pass touches them.
    let consolidating = Mutex<Set<String>>([])
    /// Of those, the running members being suspended into the warm pool (warm already).
    private let suspending = Mutex<Set<GuestID>>([])
    /// The last problem logged per group, so that one that persists is logged once.
    private let problems = Mutex<[String: String]>([:])
    /// Set when new telemetry came (`nudge`): the next pass does not wait for the interval.
    private let nudged = Atomic<Bool>(false)

    init(
        store: any ControlStore, provisioner: GuestProvisioner, mover: GuestMover? = nil,
        heartbeatTimeout: Duration = .seconds(5), clock: @escaping @Sendable () -> Date = { Date() }, logger: Logger
    ) {
        self.store = store
        self.provisioner = provisioner
        self.mover = mover
        self.heartbeatTimeout = heartbeatTimeout
        self.clock = clock
        self.logger = logger
    }

    /// Passes every `interval` until the task is cancelled, and soon after new telemetry came
    /// (`nudge`): a breach is acted on when its samples arrive, not at the next tick.
    func run(every interval: Duration) async {
        while !Task.isCancelled {
            await pass()
            let until = ContinuousClock.now + interval
            while ContinuousClock.now < until, !nudged.exchange(false, ordering: .acquiringAndReleasing) {
                try? await Task.sleep(for: .milliseconds(20))
            }
        }
    }

    /// New samples are in (a heartbeat's telemetry was recorded).
    func nudge() { nudged.store(true, ordering: .releasing) }

    /// One pass over every group to reconcile.
    func pass() async {
        let groups: [ScalingGroup]
        do { groups = try await store.scalingGroupsToReconcile() } catch {
            logger.error("listing the scaling groups failed: \(error)")
            return
        }
        for group in groups {
            do { try await reconcile(group) } catch { report(group, "\(error)") }
        }
    }

    /// Decides (an active group whose members are all up) and carries out the plan.
    func reconcile(_ group: ScalingGroup) async throws(ControlError) {
        guard !consolidating.withLock({ $0.contains(group.id) }) else { return }
        var group = group
        let date = clock()
        let now = Billing.milliseconds(date)
        let members = try await store.groupMembers(group: group.id)
        let running = members.filter { $0.state == .running }.map(\.id)
        // From a little before the window: the sample before its first gives its first interval.
        let samples =
            running.isEmpty
            ? [:]
            : try await store.samples(guests: running, sinceMilliseconds: now - group.policy.windowMilliseconds - 2000)
        let load = GroupMetric.perMember(samples, metric: group.policy.metric)
        let backoff = try await Self.backoff(store, members: members)
        var plan = GroupPlan.make(
            group: group, members: members, load: load, busy: busy.withLock { $0 },
            suspending: suspending.withLock { $0 }, now: date, backoff: backoff)
        if group.state == .active, !plan.settling {
            let decided = try await decide(group, samples: samples, now: now)
            if decided.desired != group.desired {
                group = decided
                plan = GroupPlan.make(
                    group: group, members: members, load: load, busy: busy.withLock { $0 },
                    suspending: suspending.withLock { $0 }, now: date, backoff: backoff)
            }
        }
        await carryOut(plan, group, members: members, load: load)
    }

    /// The policy's decision, recorded if it changes the desired count; the group as it is now.
    private func decide(_ group: ScalingGroup, samples: [GuestID: [GuestSample]], now: Int64)
        async throws(ControlError) -> ScalingGroup
    {
        // Only what was measured since the group's last change: earlier samples were taken with
        // another number of members (a mean over them overshoots; Tools/cluster-sim measured 3
        // changes instead of 1 on issue 17's square wave with them kept).
        let since = group.lastActionAt.map(Billing.milliseconds) ?? Int64.min
        let series = GroupMetric.series(samples, metric: group.policy.metric).filter { $0.timeMilliseconds > since }
        let past = history.withLock { $0[group.id] ?? [] }
        let decision = try group.decide(current: group.desired, samples: series, history: past, now: now)
        if let rule = try group.policy.targetTracking(min: group.min, max: group.max) {
            history.withLock { all in
                var kept = rule.retained(all[group.id] ?? [], now: now)
                if let recommendation = decision.recommendation { kept.append(recommendation) }
                all[group.id] = kept
            }
        }
        guard decision.desired != group.desired else { return group }
        return try await store.setDesired(group: group.id, to: decision.desired, reason: decision.reason)
    }

    /// The group's back-off after failed builds (`BuildBackoff`), from its members' journals,
    /// newest member first, read until one that ran (a running member needs no read).
    static func backoff(_ store: any ControlStore, members: [CloudGuest]) async throws(ControlError)
        -> BuildBackoff
    {
        var outcomes: [BuildBackoff.Outcome] = []
        for member in members.reversed() {
            switch member.state {
            case .running, .stopping, .suspended: outcomes.append(.ran)
            case .pending, .building: outcomes.append(.undecided)
            case .stopped, .error, .deleted, .unknown:
                outcomes.append(GroupPlan.outcome(try await store.journal(of: member.id)))
            }
            if outcomes.last == .ran { break }
            if outcomes.count(where: { $0 != .ran && $0 != .undecided }) >= BuildBackoff.countedAtMost { break }
        }
        return BuildBackoff(newestFirst: outcomes)
    }

    private func carryOut(_ plan: GroupPlan, _ group: ScalingGroup, members: [CloudGuest], load: [GuestID: Double])
        async
    {
        if plan.held > 0, let next = plan.backoff.nextAttemptMilliseconds {
            report(
                group,
                "\(plan.backoff.failuresInARow) member builds failed in a row: backing off, the next of "
                    + "\(plan.held) missing members at \(CloudViews.time(milliseconds: next))")
        }
        for member in plan.resume {
            await resume(member, group)
        }
        for name in plan.create {
            guard await create(name, group) else { break }
        }
        for member in plan.suspend {
            suspend(member, cause: "group \(group.name): into warm capacity (\(group.warm) warm)")
        }
        await scaleIn(plan, group, members: members, load: load)
        for member in plan.delete {
            remove(
                member, cause: "group \(group.name): remove a \(member.state.rawValue) member" + Self.note(plan.backoff)
            )
        }
    }

    /// A new member, built in a task of its own; false if the store refused it (the reason is
    /// logged once while it lasts).
    private func create(_ name: GuestName, _ group: ScalingGroup) async -> Bool {
        let request = GuestRequest(project: group.project, name: name, flavor: group.flavor, image: group.image)
        do {
            let creation = try await store.createGuest(
                request, clientToken: GroupPlan.clientToken(group, name),
                cause: "group \(group.name): scale out to \(group.desired)", scalingGroup: group.id)
            if creation.created {
                logger.info(
                    "scaling group member created",
                    metadata: ["group.id": "\(group.id)", "guest.id": "\(creation.guest.id)", "guest.name": "\(name)"])
                Task { await provisioner.build(creation.guest) }
            }
            report(group, nil)
            return true
        } catch {
            report(group, "member \(name) was not created: \(error)")
            return false
        }
    }

    /// A warm member resumed (its host restores it; `GuestProvisioner.build` finishes it).
    private func resume(_ member: CloudGuest, _ group: ScalingGroup) async {
        do {
            _ = try await provisioner.resumeSuspended(
                member, cause: "group \(group.name): scale out to \(group.desired), resumed from warm capacity")
            logger.info(
                "scaling group member resumed from warm capacity",
                metadata: ["group.id": "\(group.id)", "guest.id": "\(member.id)", "guest.name": "\(member.name)"])
        } catch {
            report(group, "member \(member.name) was not resumed: \(error)")
        }
    }

    /// Suspends a running member into the warm pool, in a task of its own; the plan leaves it
    /// alone meanwhile.
    private func suspend(_ member: CloudGuest, cause: String) {
        guard busy.withLock({ $0.insert(member.id).inserted }) else { return }
        suspending.withLock { _ = $0.insert(member.id) }
        Task { [provisioner, logger] in
            defer {
                _ = suspending.withLock { $0.remove(member.id) }
                _ = busy.withLock { $0.remove(member.id) }
            }
            do {
                _ = try await provisioner.suspend(member, cause: cause)
            } catch {
                logger.warning(
                    "a scaling group member was not suspended; the next pass looks again: \(error)",
                    metadata: ["guest.id": "\(member.id)"])
            }
        }
    }

    /// Stops the member gracefully if it runs, then deletes it, in a task of its own; the plan
    /// leaves it alone meanwhile.
    func remove(_ member: CloudGuest, cause: String) {
        guard busy.withLock({ $0.insert(member.id).inserted }) else { return }
        Task {
            defer { _ = busy.withLock { $0.remove(member.id) } }
            await removeNow(member, cause: cause)
        }
    }

    /// Stops the member gracefully if it runs, then deletes it.
    func removeNow(_ member: CloudGuest, cause: String) async {
        do {
            var guest = member
            if guest.state == .running { guest = try await provisioner.stop(guest, cause: cause) }
            _ = try await provisioner.delete(guest, cause: cause)
        } catch {
            logger.warning(
                "a scaling group member was not removed; the next pass tries again: \(error)",
                metadata: ["guest.id": "\(member.id)"])
        }
    }

    /// What a removal's cause says of the back-off (nothing without one).
    static func note(_ backoff: BuildBackoff) -> String {
        guard let next = backoff.nextAttemptMilliseconds else { return "" }
        return "; \(backoff.failuresInARow) failed builds in a row, the next member not before "
            + CloudViews.time(milliseconds: next)
    }

    /// Logs a group's problem once while it lasts (nil: it is over).
    func report(_ group: ScalingGroup, _ problem: String?) {
        let new = problems.withLock { all in
            defer { all[group.id] = problem }
            return problem != nil && all[group.id] != problem
        }
        if new, let problem {
            logger.warning(
                "scaling group: \(problem)", metadata: ["group.id": "\(group.id)", "group.name": "\(group.name)"])
        }
    }
}
