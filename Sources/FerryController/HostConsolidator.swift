import FerryAgent
import FerryControl
import FerryHostModel
import Foundation
import Logging
import Synchronization

/// Consolidation at low demand (issue 18, part 3): packs the running guests onto as few hosts as
/// capacity allows (`ClusterConsolidation`, keeping `headroom` of each receiving host free), moves
/// them live through `GuestMover` (several at once, as the drain's cost model chooses, and teaching
/// it what they measure), then puts each emptied host in standby (`HostStandby`). A host out of
/// which a move failed, or onto which a guest was placed meanwhile, stays on; the report names it.
/// One consolidation at a time per controller; the last report is kept.
final class HostConsolidator: Sendable {
    let store: any ControlStore
    let mover: GuestMover
    let drainer: HostDrainer
    let power: HostStandby
    let headroom: Double
    let heartbeatTimeout: Duration
    let logger: Logger
    private let state = Mutex<(report: ConsolidationReport?, task: Task<Void, Never>?)>((nil, nil))

    init(
        store: any ControlStore, mover: GuestMover, drainer: HostDrainer, power: HostStandby, headroom: Double,
        heartbeatTimeout: Duration, logger: Logger
    ) {
        self.store = store
        self.mover = mover
        self.drainer = drainer
        self.power = power
        self.headroom = headroom
        self.heartbeatTimeout = heartbeatTimeout
        self.logger = logger
    }

    /// The last consolidation's report (nil: none since this controller started).
    var last: ConsolidationReport? { state.withLock { $0.report } }

    /// Plans on the cluster as it is now; unless `dryRun`, starts carrying the plan out (refused
    /// while one runs). Answers the report as it stands.
    func consolidate(dryRun: Bool, cause: String) async throws(ControlError) -> ConsolidationReport {
        let (report, guests) = try await plan(dryRun: dryRun, cause: cause)
        if dryRun { return report }
        try state.withLock { state throws(ControlError) in
            if state.report?.phase == .running {
                throw ControlError(.transitionRefused, "a consolidation is running: GET /v1/consolidate follows it")
            }
            state.report = report
            state.task = Task { [self] in await self.run(guests) }
        }
        return report
    }

    /// The plan on the hosts that are on and the guests that hold capacity on them: a running guest
    /// that is not moving may move; any other pins its host (and a moving one its destination).
    func plan(dryRun: Bool, cause: String) async throws(ControlError) -> (ConsolidationReport, [String: CloudGuest]) {
        let now = Date()
        let hosts = try await store.hosts().filter { $0.power == .on }
        let on = Set(hosts.map(\.id))
        let holding = Set(CloudGuestState.allCases.filter(\.holdsCapacity))
        let guests = try await store.guests(states: holding).filter { on.contains($0.host) }
        var cluster: [ClusterGuest] = guests.map { guest in
            ClusterGuest(
                id: guest.id.description, host: guest.host, resources: guest.resources,
                needsKVM: guest.imageKind == .kvm, movable: guest.state == .running && guest.movingTo == nil)
        }
        for guest in guests {
            if let to = guest.movingTo {
                cluster.append(
                    ClusterGuest(id: "\(guest.id)→", host: to, resources: guest.resources, movable: false))
            }
        }
        let clusterHosts = hosts.map { host in
            ClusterHost(
                id: host.id, capacity: host.capacity,
                takesGuests: host.takesGuests(at: now, heartbeatTimeout: heartbeatTimeout), runsKVM: host.kvm)
        }
        let plan = ClusterConsolidation.plan(hosts: clusterHosts, guests: cluster, headroom: headroom)
        let bound = ClusterConsolidation.lowerBound(hosts: clusterHosts, guests: cluster, headroom: headroom)
        var report = ConsolidationReport(
            plan: plan, lowerBound: bound, headroom: headroom, dryRun: dryRun, cause: cause)
        if dryRun { report.endedAt = report.startedAt }
        let byID = Dictionary(uniqueKeysWithValues: guests.map { ($0.id.description, $0) })
        return (report, byID)
    }

    /// Carries the running report's plan out: the moves, then the standby of each emptied host.
    func run(_ guests: [String: CloudGuest]) async {
        let started = ContinuousClock.now
        guard let report = last else { return }
        let moving = report.movesPlanned.compactMap { guests[$0.guest] }
        let source = report.emptied.first ?? ""
        let plan = drainer.plan(source, moving).0
        state.withLock { $0.report?.concurrency = plan.concurrency }
        let order = Dictionary(uniqueKeysWithValues: plan.order.enumerated().map { ($1, $0) })
        let moves = report.movesPlanned.sorted { (order[$0.guest] ?? .max) < (order[$1.guest] ?? .max) }
        await withTaskGroup(of: Void.self) { group in
            var running = 0
            for move in moves {
                if running >= plan.concurrency {
                    await group.next()
                    running -= 1
                }
                group.addTask { [self] in await self.moveOne(move, guests[move.guest], sharing: plan.concurrency) }
                running += 1
            }
        }
        for host in report.emptied { await putInStandby(host) }
        let summary = state.withLock { state -> String in
            state.report?.phase = .done
            state.report?.endedAt = CloudViews.time(Date())
            state.report?.seconds = HostDrainer.seconds(ContinuousClock.now - started)
            state.task = nil
            return state.report.map(Self.summary) ?? ""
        }
        logger.notice("a consolidation ended: \(summary)")
    }

    /// One planned move, to the plan's destination; its measurements teach the drain's model.
    func moveOne(_ move: ConsolidationReport.Move, _ guest: CloudGuest?, sharing: Int) async {
        let started = ContinuousClock.now
        var entry = move
        do throws(ControlError) {
            guard let guest else { throw ControlError(.notFound, "guest \(move.guest) is no longer recorded") }
            entry.downtimeMs =
                try await drainer.moveMeasured(
                    guest.id, from: move.from, to: move.to, cause: "consolidation: host \(move.from) is emptied",
                    sharing: sharing
                ).downtimeMs
        } catch {
            entry.reason = error.message
            logger.warning(
                "a consolidation's move failed: its source stays on",
                metadata: [
                    "guest.id": "\(move.guest)", "guest.host": "\(move.from)", "guest.error": "\(error.message)",
                ])
        }
        entry.seconds = HostDrainer.seconds(ContinuousClock.now - started)
        state.withLock { state in
            if entry.reason == nil {
                state.report?.movesDone.append(entry)
            } else {
                state.report?.movesFailed.append(entry)
            }
        }
    }

    /// Standby for an emptied host, unless a move out of it failed or it holds a guest again.
    func putInStandby(_ host: String) async {
        let failed = state.withLock { $0.report?.movesFailed.filter { $0.from == host } ?? [] }
        var reason: String?
        if !failed.isEmpty {
            reason = "the move of \(failed.map(\.guest).joined(separator: ", ")) out of it failed"
        } else {
            do throws(ControlError) { _ = try await power.standby(host, cause: "consolidation: emptied") } catch {
                reason = error.message
            }
        }
        state.withLock { state in
            if let reason {
                state.report?.stayedOn.append(ConsolidationReport.Kept(host: host, reason: reason))
            } else {
                state.report?.standby.append(host)
            }
        }
    }

    /// "3 hosts → 2 (bound 2): 2 of 2 moves done, 1 host in standby".
    static func summary(_ report: ConsolidationReport) -> String {
        "\(report.hostsUsedBefore) hosts → \(report.hostsUsedAfter) (bound \(report.lowerBound)):"
            + " \(report.movesDone.count) of \(report.movesPlanned.count) moves done, \(report.movesFailed.count)"
            + " failed, \(report.standby.count) host(s) in standby"
    }
}

/// Consolidation by itself at low demand (`ferry control --consolidate-below`).
extension HostConsolidator {
    /// The guests' share of the hosts that are on, in the fullest dimension (0 with no host on).
    func utilization() async throws(ControlError) -> Double {
        let hosts = try await store.hosts().filter { $0.power == .on }
        let usage = try await store.hostUsage()
        let capacity = hosts.reduce(Resources.zero) { $0 + $1.capacity }
        let used = hosts.reduce(Resources.zero) { $0 + (usage[$1.id] ?? .zero) }
        let shares = [
            (used.vcpus, capacity.vcpus), (used.memoryBytes, capacity.memoryBytes),
            (used.diskBytes, capacity.diskBytes),
        ].map { $0.1 > 0 ? Double($0.0) / Double($0.1) : 0 }
        return shares.max() ?? 0
    }

    /// Every `interval`: a consolidation when the utilization is below `below` and none runs.
    func watch(below: Double, every interval: Duration) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            do {
                let share = try await utilization()
                guard share < below, last?.phase != .running else { continue }
                let report = try await consolidate(
                    dryRun: true, cause: "utilization \(Int((share * 100).rounded())) % < \(Int(below * 100)) %")
                guard !report.movesPlanned.isEmpty || !report.emptied.isEmpty else { continue }
                _ = try await consolidate(dryRun: false, cause: report.cause)
            } catch {
                logger.warning("a periodic consolidation did not start: \(error)")
            }
        }
    }
}
