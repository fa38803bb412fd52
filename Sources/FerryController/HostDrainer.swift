import FerryAgent
import FerryControl
import FerryHostModel
import Foundation
import Logging
import Synchronization

/// Empties hosts for maintenance (`drain`) and gives them back (`undrain`). A drained host takes
/// no guests (its mode, in the store, so every controller and the scheduler see it); its running
/// guests leave by live migration through `GuestMover` (recorded moves: each guest is on one host
/// at every moment), several at once as `DrainPlan` chooses from the cost model, which the
/// migrations themselves calibrate as they end. A guest that cannot go (no host takes it, its
/// migration fails) stays, named with the reason; a guest that is not running stays too (a live
/// migration moves running guests). A controller that restarts resumes the drains it finds.
final class HostDrainer: Sendable {
    let store: any ControlStore
    let mover: GuestMover
    /// The source's link as configured; the migrations' measurements replace it.
    let linkBytesPerSecond: Double
    /// Migrations at once out of one host, at most.
    let maxConcurrency: Int
    /// The operator's concurrency (`--drain-concurrency N`) instead of the model's choice.
    let forcedConcurrency: Int?
    /// For the host views a drain's answers carry.
    let heartbeatTimeout: Duration
    /// When this controller started: a drain begun within a heartbeat timeout of it first lets
    /// the agents be heard (`awaitAgents`).
    let startedAt: Date
    let logger: Logger
    /// The drains this controller runs, by host.
    let drains = Mutex<[String: Drain]>([:])
    /// What the migrations out of each host measured (the newest 16 per host).
    let measured = Mutex<[String: [MigrationObservation]]>([:])
    /// The dirty rate each guest's last migration measured.
    let dirtyRates = Mutex<[GuestID: Double]>([:])

    struct Drain: Sendable {
        var report: DrainReport
        var task: Task<Void, Never>?
        /// When each moving guest's migration began.
        var movingSince: [String: ContinuousClock.Instant] = [:]
        /// The agents' options for its migrations (a bandwidth cap), as the drain was asked.
        var options: MigrationRequest.Options?
    }

    init(
        store: any ControlStore, mover: GuestMover, linkBytesPerSecond: Double, maxConcurrency: Int,
        heartbeatTimeout: Duration, forcedConcurrency: Int? = nil, logger: Logger
    ) {
        self.forcedConcurrency = forcedConcurrency
        self.startedAt = Date()
        self.heartbeatTimeout = heartbeatTimeout
        self.store = store
        self.mover = mover
        self.linkBytesPerSecond = linkBytesPerSecond
        self.maxConcurrency = max(1, maxConcurrency)
        self.logger = logger
    }

    /// Puts the host in `draining` and starts emptying it (a drain already running here goes on);
    /// answers how it stands.
    func drain(_ host: String, cause: String, options: MigrationRequest.Options? = nil) async throws(ControlError)
        -> DrainReport
    {
        _ = try await store.setHostMode(host, to: .draining, from: nil, cause: cause)
        start(host, cause: cause, options: options)
        return report(host) ?? Self.empty(host)
    }

    /// Gives the host back (`active`): no more of its guests start to move; the migrations under
    /// way end as they end.
    func undrain(_ host: String, cause: String) async throws(ControlError) -> HostRecord {
        let record = try await store.setHostMode(host, to: .active, from: nil, cause: cause)
        drains.withLock { drains in
            drains[host]?.task?.cancel()
            if drains[host]?.report.phase == .draining { drains[host]?.report.phase = .stopped }
        }
        return record
    }

    /// How the host's drain stands, if this controller ran one since it started.
    func report(_ host: String) -> DrainReport? {
        drains.withLock { drains in
            guard var report = drains[host]?.report else { return nil }
            let now = ContinuousClock.now
            for index in report.moving.indices {
                if let since = drains[host]?.movingSince[report.moving[index].id] {
                    report.moving[index].seconds = Self.seconds(now - since)
                }
            }
            if report.phase == .draining {
                report.etaSeconds = DrainPlan.remaining(
                    running: report.moving.map { (estimate: $0.estimateSeconds ?? 0, elapsed: $0.seconds ?? 0) },
                    waiting: report.waiting.map { $0.estimateSeconds ?? 0 }, concurrency: report.concurrency)
            }
            return report
        }
    }

    /// A host whose hardware is failing (quarantined) is emptied at once: a drain, whose cause
    /// names the signal and the deadline. A host drained already stays so.
    func evacuate(_ host: HostRecord) async {
        guard host.mode != .drained else { return }
        let deadline = host.evacuateBy.map { " by \(CloudViews.time($0))" } ?? ""
        do {
            _ = try await drain(host.id, cause: "quarantined: \(host.healthReason); evacuate\(deadline)")
        } catch {
            logger.error(
                "a failing host could not be drained: \(error)", metadata: ["host.id": "\(host.id)"])
        }
    }

    /// After a restart: the drains of hosts the store has `draining`, and of failing hosts not
    /// drained yet (their quarantine was seen before the restart).
    func resume() async throws(ControlError) {
        for host in try await store.hosts() {
            if host.mode == .draining {
                logger.notice("resuming the drain of a host", metadata: ["host.id": "\(host.id)"])
                start(host.id, cause: host.modeCause + " (resumed after a restart)")
            } else if host.quarantined, host.mode == .active {
                await evacuate(host)
            }
        }
    }

    /// Starts the host's drain task unless one runs.
    private func start(_ host: String, cause: String, options: MigrationRequest.Options? = nil) {
        drains.withLock { drains in
            if let running = drains[host], running.report.phase == .draining, running.task != nil { return }
            var drain = Drain(report: Self.empty(host), options: options)
            drain.report.linkBytesPerSecond = model(host).linkBytesPerSecond
            drain.report.cause = cause
            drain.task = Task { [self] in
                await self.awaitAgents()
                await self.run(host)
            }
            drains[host] = drain
        }
    }

    /// A controller that has just started (a restart resuming a drain, an evacuation found at
    /// start) has heard from no agent yet, and a host is silent past the heartbeat timeout when the
    /// controller was down longer than that: its drain would find its own source silent, or no host
    /// to move to, and fail every guest. So it waits until every host that is on (the draining or
    /// failing source among them) has been heard from since the start, at most until a heartbeat
    /// timeout after the start (a host still unheard then is really silent).
    func awaitAgents() async {
        let deadline = startedAt.addingTimeInterval(Self.seconds(heartbeatTimeout))
        while Date() < deadline {
            guard let hosts = try? await store.hosts() else { return }
            let unheard = hosts.filter { $0.power == .on && $0.lastHeartbeat < startedAt }
            if unheard.isEmpty { return }
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    static func empty(_ host: String) -> DrainReport {
        DrainReport(
            host: host, phase: .draining, startedAt: CloudViews.time(Date()), endedAt: nil, concurrency: 1,
            linkBytesPerSecond: 0,
            etaSeconds: 0, moved: [], moving: [], waiting: [], failed: [], stays: [])
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    /// The cost model for migrations out of `host`: the configured link, calibrated by what the
    /// migrations out of it measured.
    func model(_ host: String) -> MigrationCostModel {
        let observations = measured.withLock { $0[host] ?? [] }
        return MigrationCostModel(linkBytesPerSecond: linkBytesPerSecond).calibrated(by: observations)
    }
}
