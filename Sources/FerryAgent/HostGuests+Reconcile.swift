import FerryHostModel
import FerryInventory
import FerryVMM
import Foundation
import Glibc
import Logging

/// Crash detection and reconciliation: the inventory against what runs (docs/agent.md,
/// "Reconciliation"). Nothing here kills a process or deletes a file: a guest is `crashed` only
/// when /proc proves its recorded process gone, and a process the inventory does not know is
/// registered, not killed.
extension HostGuests {
    /// A watch connection closed. The process still runs: watch again. It said it stops,
    /// suspends or leaves: an operation (or a migration) records that. Otherwise, gone: `crashed`.
    func connectionClosed(id: GuestID, name: GuestName, facts: ProcessFacts, lastState: String) {
        // A killed process closes its sockets as its last thread ends; /proc may lag a moment.
        _ = GuestProcess.waitUntilGone(facts, timeout: .seconds(2))
        guard tryClaim(name, Self.crashCheck) else { return }  // the operation in flight owns it
        defer { release(name) }
        guard let record = try? inventory.guest(id: id), record.state.hasProcess, record.process == facts else {
            return
        }
        if GuestProcess.isRunning(facts) {
            watches.open(record, owner: self)
            return
        }
        if let said = ["stopped": GuestState.stopped, "suspended": .suspended][lastState] {
            exitedAsItSaid(record, said, facts)
            return
        }
        guard lastState != "left" else { return }  // the migration removes the guest
        let cause =
            "process \(facts.pid) died: its control connection closed without a shutdown, suspend or migration"
            + " (its last state \(lastState)) and /proc shows it gone"
        do {
            _ = try inventory.transition(
                name, from: record.state, to: .crashed, cause: cause, generation: record.generation)
            logger.warning("guest crashed", metadata: ["guest.name": "\(name)", "guest.cause": "\(cause)"])
        } catch {
            logger.notice("crash not recorded", metadata: ["guest.name": "\(name)", "guest.error": "\(error)"])
        }
    }

    /// The process said it stopped or was suspended (a stop or suspend whose agent was killed,
    /// or one asked on the socket directly), then exited: the record follows, through allowed
    /// transitions.
    private func exitedAsItSaid(_ record: GuestRecord, _ said: GuestState, _ facts: ProcessFacts) {
        guard var chain = Reconciliation.path(from: record.state, to: said) else { return }
        var current = record
        let cause = "process \(facts.pid) reported \(said.rawValue) and exited"
        while !chain.isEmpty {
            let next = chain.removeFirst()
            guard let changed = try? transition(current, to: next, cause) else { return }
            current = changed
        }
        logger.info(
            "guest process exited as it said", metadata: ["guest.name": "\(record.name)", "guest.state": "\(said)"])
    }

    /// What runs on the host for these records: the control sockets that answer `hello` (every
    /// socket in `guests/` and every recorded one), the recorded PIDs in /proc, the disk files.
    func observe(_ records: [GuestRecord]) -> HostObservation {
        var sockets = Set(records.compactMap(\.process?.controlSocket))
        let names = (try? FileManager.default.contentsOfDirectory(atPath: files.guestsDirectory)) ?? []
        for name in names where name.hasSuffix(".sock") { sockets.insert(files.guestsDirectory + "/" + name) }
        let byID = Dictionary(records.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        var observation = HostObservation()
        for socket in sockets.sorted() {
            guard let hello = GuestProcess.hello(socket: socket), let status = GuestProcess.status(hello.state),
                let spec = hello.specification ?? byID[hello.id]?.specification
            else { continue }
            observation.answering.append(
                AnsweringProcess(id: hello.id, specification: spec, status: status, facts: hello.facts))
        }
        for record in records {
            if let pid = record.process?.pid { observation.pids[pid] = GuestProcess.observe(pid: pid) }
            let missing = files.missingDisks(record.specification)
            if !missing.isEmpty { observation.missingDisks[record.id] = missing }
        }
        return observation
    }

    /// What one reconciliation did, for the log and the tests.
    public struct ReconcileSummary: Sendable, CustomStringConvertible {
        public var guests = 0
        public var running = 0
        public var applied: [GuestName] = []
        public var registered: [GuestName] = []
        public var refused = 0
        public var leftAlone: [String] = []
        public var watching = 0

        public var description: String {
            "\(guests) guests (\(running) with a process, \(watching) watched); changed \(applied.count)"
                + "\(applied.isEmpty ? "" : " (\(applied.map(\.value).joined(separator: ", ")))"),"
                + " registered \(registered.count), refused \(refused), left alone \(leftAlone.count)"
        }
    }

    /// Observes, plans (`Reconciliation.plan`), applies, then opens watches on what runs. Guests
    /// with an operation in flight are left to it.
    @discardableResult
    public func reconcile() throws(AgentAPIError) -> ReconcileSummary {
        let busy = busyNames()
        let all = try list()
        let records = all.filter { !busy.contains($0.name) }
        let busyIDs = Set(all.filter { busy.contains($0.name) }.map(\.id))
        var observation = observe(records)
        observation.answering.removeAll { busyIDs.contains($0.id) || busy.contains($0.name) }
        let plan = Reconciliation.plan(records: records, observed: observation)
        let outcome = try Self.inventoryCall { () throws(InventoryError) in try inventory.apply(plan) }
        var summary = ReconcileSummary(
            applied: outcome.applied, registered: outcome.registered, refused: outcome.refused.count,
            leftAlone: plan.leftAlone.map(\.description))
        let after = try list()
        summary.guests = after.count
        for record in after where record.state.hasProcess && record.process != nil && !busy.contains(record.name) {
            summary.running += 1
            if let facts = record.process, GuestProcess.isRunning(facts) { watches.open(record, owner: self) }
        }
        summary.watching = watches.count
        return summary
    }

    /// Every few seconds, a reconciliation: it catches what a lost watch missed. On a thread of
    /// its own; ends with `stopPeriodicPass`.
    func startPeriodicPass(every interval: Duration, until stopped: @escaping @Sendable () -> Bool) {
        let thread = Thread { [weak self] in
            while let self, !stopped() {
                Thread.sleep(
                    forTimeInterval: Double(interval.components.seconds) + 1e-18
                        * Double(interval.components.attoseconds))
                if stopped() { return }
                do throws(AgentAPIError) {
                    let summary = try self.reconcile()
                    if !summary.applied.isEmpty || !summary.registered.isEmpty {
                        self.logger.notice("periodic reconciliation: \(summary)")
                    }
                } catch {
                    self.logger.error("periodic reconciliation failed: \(error.message)")
                }
            }
        }
        thread.name = "ferry-agent-reconcile"
        thread.start()
    }

    /// The guests-by-state gauge and the disks' bytes, for a scrape.
    func recordMetrics(_ metrics: AgentMetrics) throws(AgentAPIError) {
        let records = try list()
        var counts: [GuestState: Int] = [:]
        for state in GuestState.allCases { counts[state] = 0 }
        for record in records { counts[record.state, default: 0] += 1 }
        metrics.recordGuests(counts)
        let bytes = GuestFiles.diskBytes(records.map(\.specification))
        metrics.recordDisks(provisionedBytes: bytes.provisioned, allocatedBytes: bytes.allocated)
    }
}
