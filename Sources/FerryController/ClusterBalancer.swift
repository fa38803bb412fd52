import FerryControl
import FerryHostModel
import Foundation
import Logging

/// Load balancing between hosts (issue 18, part 2): every `BalanceSettings.interval` after the
/// previous pass ended (never, unless set), and whenever an admin asks (`POST /v1/balance`), a
/// pass reads the hosts that take guests and the guests with their load over the telemetry
/// window (`BalanceInputs`), the moves of the last hour and each guest's last move from the
/// store's journal (so a restart resets neither the hourly cap nor the cool-downs), plans with
/// `BalancePass.plan` and carries the moves out through `GuestMover` (journaled with the cause
/// `balance: host H at L > T`). One pass at a time: a pass asked for while one runs (its moves
/// included) is that one. The cost model is the drains' (`HostDrainer.clusterModel`), and the
/// pass's migrations calibrate it in turn.
///
/// The passes' reports are kept in memory (the last `BalancePassReport.kept`): a controller that
/// restarts shows the passes it ran since.
actor ClusterBalancer {
    let store: any ControlStore
    let mover: GuestMover
    /// The cost model and the guests' measured dirty rates (shared with the drains).
    let drainer: HostDrainer
    /// Its busy members (a stop or delete in flight) stay.
    let scaler: GroupScaler
    let settings: BalanceSettings
    let heartbeatTimeout: Duration
    let logger: Logger
    /// Newest first.
    private(set) var passes: [BalancePassReport] = []
    private var current: (number: Int, task: Task<BalancePassReport, Never>)?
    private var count = 0
    private var nextPassAt: Date?
    /// The last pass that moved guests and when it ended: the first pass to look a window later
    /// measures the spread its moves left.
    private var unmeasured: (number: Int, ended: Date)?

    init(
        store: any ControlStore, mover: GuestMover, drainer: HostDrainer, scaler: GroupScaler,
        settings: BalanceSettings, heartbeatTimeout: Duration, logger: Logger
    ) {
        self.store = store
        self.mover = mover
        self.drainer = drainer
        self.scaler = scaler
        self.settings = settings
        self.heartbeatTimeout = heartbeatTimeout
        self.logger = logger
    }

    /// A pass every `settings.interval` after the previous one ended, until the task is
    /// cancelled; returns at once when the periodic pass is off.
    func run() async {
        guard let interval = settings.interval else { return }
        while !Task.isCancelled {
            nextPassAt = Date().addingTimeInterval(HostDrainer.seconds(interval))
            try? await Task.sleep(for: interval)
            nextPassAt = nil
            guard !Task.isCancelled else { return }
            _ = await start(trigger: "periodic").task.value
        }
    }

    /// Starts a pass unless one runs: the number and task of the pass that runs.
    func start(trigger: String) -> (number: Int, task: Task<BalancePassReport, Never>) {
        if let current { return current }
        count += 1
        let number = count
        passes.insert(
            BalancePassReport(number: number, trigger: trigger, phase: .running, startedAt: CloudViews.time(Date())),
            at: 0)
        passes = Array(passes.prefix(BalancePassReport.kept))
        let task = Task { await self.runPass(number) }
        current = (number, task)
        return (number, task)
    }

    func pass(number: Int) -> BalancePassReport? { passes.first { $0.number == number } }

    /// The report of `GET /v1/balance`: the moves of the last hour are read from the journal.
    func report() async throws(ControlError) -> BalanceReport {
        let now = Date()
        let journal = try await store.moveJournal(since: now.addingTimeInterval(-3600))
        let interval = settings.interval.map { HostDrainer.seconds($0) }
        return BalanceReport(
            settings: BalanceReport.Settings(
                intervalSeconds: interval, threshold: settings.threshold, target: settings.target,
                margin: settings.margin, maxMovesPerHour: settings.maxMovesPerHour,
                coolDownSeconds: HostDrainer.seconds(settings.coolDown),
                windowSeconds: HostDrainer.seconds(settings.window)),
            movesLastHour: BalanceInputs.history(journal, now: now).movesInLastHour,
            running: current != nil,
            nextPassAt: nextPassAt.map { CloudViews.time($0) }, passes: passes)
    }

    /// One pass: look, plan, move; its report as it ended.
    private func runPass(_ number: Int) async -> BalancePassReport {
        let started = ContinuousClock.now
        do {
            let (plan, guests, loads) = try await look(number)
            if !plan.moves.isEmpty { await carryOut(number, plan, guests: guests, loads: loads) }
            update(number) { $0.phase = .done }
            if !plan.moves.isEmpty { unmeasured = (number, Date()) }
        } catch {
            logger.error("a balancing pass could not look at the cluster: \(error)")
            update(number) {
                $0.phase = .failed
                $0.error = "\(error)"
            }
        }
        update(number) {
            $0.endedAt = CloudViews.time(Date())
            $0.seconds = HostDrainer.seconds(ContinuousClock.now - started)
        }
        current = nil
        let report = pass(number: number)!
        logger.notice("balancing \(report.summary)", metadata: ["balance.pass": "\(number)"])
        return report
    }

    /// Reads the cluster and plans; the plan's report is filled in. The plan, the guests by ID and
    /// the hosts' loads before it.
    private func look(_ number: Int) async throws(ControlError) -> (
        BalancePlan, [String: CloudGuest], [String: Double]
    ) {
        let now = Date()
        let hosts = try await store.hosts()
        let guests = try await store.guests(states: Set(CloudGuestState.allCases.filter(\.holdsCapacity)))
        let running = guests.filter { $0.state == .running }.map(\.id)
        // From a little before the window, so its first interval has the sample it starts from.
        let since = Int64(now.timeIntervalSince1970 * 1000) - Int64(HostDrainer.seconds(settings.window) * 1000) - 5000
        let samples = running.isEmpty ? [:] : try await store.samples(guests: running, sinceMilliseconds: since)
        let coolDown = HostDrainer.seconds(settings.coolDown)
        let journal = try await store.moveJournal(since: now.addingTimeInterval(-max(3600, coolDown)))
        let (rates, median) = drainer.measuredDirtyRates()
        let inputs = BalanceInputs.make(
            hosts: hosts, guests: guests, samples: samples, moveJournal: journal, busy: scaler.busy.withLock { $0 },
            dirtyRates: rates, fallbackDirtyRate: median, now: now, window: settings.window,
            heartbeatTimeout: heartbeatTimeout)
        let parameters = BalanceInputs.parameters(
            threshold: settings.threshold, target: settings.target, margin: settings.margin,
            maxMovesPerHour: settings.maxMovesPerHour, movesInLastHour: inputs.movesInLastHour,
            coolDown: settings.coolDown, costModel: drainer.clusterModel())
        let plan = BalancePass.plan(hosts: inputs.hosts, guests: inputs.guests, parameters: parameters)
        let loads = BalancePass.loads(hosts: inputs.hosts, guests: inputs.guests)
        let idle =
            plan.moves.isEmpty
            ? BalancePass.idle(hosts: inputs.hosts, guests: inputs.guests, parameters: parameters) : nil
        update(number) { report in
            report.hosts = inputs.hosts.map { host in
                BalancePassReport.Host(
                    id: host.id, load: loads[host.id] ?? 0, vcpus: host.capacity.vcpus,
                    guests: inputs.guests.filter { $0.host == host.id && !$0.id.hasPrefix("moving:") }.count)
            }
            report.spreadBefore = plan.spreadBefore
            report.spreadPredicted = plan.spreadAfter
            report.movesInLastHour = inputs.movesInLastHour
            report.movesAllowed = parameters.movesAllowed
            report.moves = plan.moves.map(Self.entry)
            report.idle = idle?.kind
            report.reason = idle?.text
        }
        measure(plan.spreadBefore, at: now)
        return (plan, Dictionary(uniqueKeysWithValues: guests.map { ($0.id.description, $0) }), loads)
    }

    /// The spread now is what the last pass that moved guests left, once a whole window of
    /// telemetry came after its moves.
    private func measure(_ spread: Double, at now: Date) {
        guard let last = unmeasured, now.timeIntervalSince(last.ended) >= HostDrainer.seconds(settings.window) else {
            return
        }
        update(last.number) { $0.spreadMeasuredAfter = spread }
        unmeasured = nil
    }

    static func entry(_ move: BalanceMove) -> BalancePassReport.Move {
        BalancePassReport.Move(
            guest: move.guest, from: move.from, to: move.to, fromLoadAfter: move.fromLoadAfter,
            toLoadAfter: move.toLoadAfter, benefit: move.benefit, estimateSeconds: move.costSeconds, state: .waiting)
    }

    func update(_ number: Int, _ change: (inout BalancePassReport) -> Void) {
        guard let index = passes.firstIndex(where: { $0.number == number }) else { return }
        change(&passes[index])
    }
}
