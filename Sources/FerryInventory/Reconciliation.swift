import FerryHostModel

/// Compares the inventory's records with what the agent observed on the host and plans the
/// changes. Pure: no I/O, no clock; the same input gives the same plan.
///
/// The rules (docs/design.md, "Inventory"):
/// - A process that answers with a record's ID is adopted: its facts are recorded and the
///   record follows the state it reports, through allowed transitions only (a `crashed` or
///   `stopped` record whose process answers goes `starting`, then `running`).
/// - `migrating-out` and a process reporting `running` or `paused`: the migration did not
///   complete, the guest stays here. A process reporting `handed-off`: the guest left; the
///   record is removed (the only removal). `migrating-in` and `running`: the migration completed.
/// - A record that should have a process, that nothing answers for, and whose recorded PID is
///   gone or now another process (start time differs): `crashed`. With no recorded PID: also
///   `crashed`. A recorded PID that is still the same process but does not answer: left alone.
/// - A process answering with an ID the inventory lacks is registered, never killed.
/// - Missing disk files are marked on the record, never deleted or recreated.
/// - Anything ambiguous (two processes with one ID, a name held by another ID, a handoff the
///   inventory never started, a PID not looked at) is left alone and reported.
public enum Reconciliation {
    public static func plan(records: [GuestRecord], observed: HostObservation) -> ReconciliationPlan {
        var plan = ReconciliationPlan()
        let answersByID = Dictionary(grouping: observed.answering, by: \.id)
        for record in records.sorted(by: { $0.name < $1.name }) {
            var steps = processSteps(record, answers: answersByID[record.id] ?? [], observed, &plan.leftAlone)
            if !steps.contains(where: Self.isRemoval) {
                let missing = (observed.missingDisks[record.id] ?? []).sorted()
                if missing != record.missingDisks.sorted() { steps.append(.markMissingDisks(missing)) }
            }
            if !steps.isEmpty {
                plan.changes.append(
                    GuestChange(id: record.id, name: record.name, generation: record.generation, steps: steps))
            }
        }
        registrations(records: records, answersByID: answersByID, into: &plan)
        return plan
    }

    /// The shortest chain of allowed transitions from one state to another (excluding `from`),
    /// passing only through states that `via` accepts; empty when they are equal, nil when `to`
    /// cannot be reached so.
    public static func path(
        from: GuestState, to: GuestState, via: (GuestState) -> Bool = { _ in true }
    ) -> [GuestState]? {
        if from == to { return [] }
        var previous: [GuestState: GuestState] = [from: from]
        var queue = [from]
        while !queue.isEmpty {
            let state = queue.removeFirst()
            if state != from && !via(state) { continue }
            for next in GuestState.allCases where state.allows(next) && previous[next] == nil {
                previous[next] = state
                if next == to {
                    var chain = [to]
                    while let before = previous[chain[0]], before != from { chain.insert(before, at: 0) }
                    return chain
                }
                queue.append(next)
            }
        }
        return nil
    }

    /// How a record follows what its answering process reports: through states with a process,
    /// never through a migration (a cold migration leads a `stopped` guest to `migrating-out`
    /// and on to `running` if it fails, which no process reporting `running` means).
    static func adoptionPath(from: GuestState, to: GuestState) -> [GuestState]? {
        path(from: from, to: to, via: { $0.hasProcess && $0 != .migratingOut && $0 != .migratingIn })
    }

    static func isRemoval(_ step: ReconciliationStep) -> Bool {
        if case .removeAfterHandoff = step { return true }
        return false
    }

    private static func processSteps(
        _ record: GuestRecord, answers: [AnsweringProcess], _ observed: HostObservation,
        _ leftAlone: inout [LeftAlone]
    ) -> [ReconciliationStep] {
        switch answers.count {
        case 0:
            return vanishedSteps(record, observed, &leftAlone)
        case 1:
            return adoptionSteps(record, answers[0], &leftAlone)
        default:
            let pids = answers.map { String($0.facts.pid) }.joined(separator: ", ")
            leftAlone.append(
                LeftAlone(
                    id: record.id, name: record.name,
                    reason: "processes \(pids) all answer with this guest's ID; left alone: stop the"
                        + " one that should not run by hand (ferry never kills a guest's process)"))
            return []
        }
    }

    private static func adoptionSteps(
        _ record: GuestRecord, _ answer: AnsweringProcess, _ leftAlone: inout [LeftAlone]
    ) -> [ReconciliationStep] {
        let pid = answer.facts.pid
        guard answer.name == record.name else {
            leftAlone.append(
                LeftAlone(
                    id: record.id, name: record.name,
                    reason: "process \(pid) answers with this guest's ID but the name \(answer.name); left alone"))
            return []
        }
        guard let target = answer.status.state else {
            guard record.state == .migratingOut else {
                leftAlone.append(
                    LeftAlone(
                        id: record.id, name: record.name,
                        reason: "process \(pid) reports a handoff but the inventory says \(record.state.rawValue),"
                            + " not migrating-out; left alone: ask the destination which host runs the guest"))
                return []
            }
            return [
                .removeAfterHandoff(cause: "reconcile: process \(pid) reports the guest handed off to its destination")
            ]
        }
        // The process ran all along: the chain passes only through states with a process (a
        // `running` record never goes `stopped` to match a process that reports `starting`).
        // So after the chain the recorded facts are still the record's.
        guard let chain = adoptionPath(from: record.state, to: target) else {
            leftAlone.append(
                LeftAlone(
                    id: record.id, name: record.name,
                    reason: "process \(pid) reports \(answer.status.rawValue) but the inventory says"
                        + " \(record.state.rawValue), which cannot lead there; left alone"))
            return []
        }
        var steps: [ReconciliationStep] = []
        var from = record.state
        for next in chain {
            steps.append(.transition(from: from, to: next, cause: adoptionCause(record.state, answer)))
            from = next
        }
        if record.process != answer.facts { steps.append(.recordProcess(answer.facts)) }
        return steps
    }

    private static func adoptionCause(_ recorded: GuestState, _ answer: AnsweringProcess) -> String {
        let reports = "process \(answer.facts.pid) answers with the guest's ID and reports \(answer.status.rawValue)"
        switch (recorded, answer.status) {
        case (.migratingOut, .running), (.migratingOut, .paused):
            return "reconcile: the outgoing migration did not complete; \(reports)"
        case (.migratingIn, .running):
            return "reconcile: the incoming migration completed; \(reports)"
        default:
            return "reconcile: \(reports)"
        }
    }

    private static func vanishedSteps(
        _ record: GuestRecord, _ observed: HostObservation, _ leftAlone: inout [LeftAlone]
    ) -> [ReconciliationStep] {
        guard record.state.hasProcess else { return [] }
        var cause: String
        if let facts = record.process {
            switch observed.pids[facts.pid] {
            case nil:
                leftAlone.append(
                    LeftAlone(
                        id: record.id, name: record.name,
                        reason: "nothing answers with the guest's ID and PID \(facts.pid) was not examined; left alone")
                )
                return []
            case .started(let tick) where tick == facts.startTime:
                leftAlone.append(
                    LeftAlone(
                        id: record.id, name: record.name,
                        reason: "process \(facts.pid) still runs but does not answer on \(facts.controlSocket);"
                            + " left running (not crashed, not killed)"))
                return []
            case .started(let tick):
                cause =
                    "reconcile: PID \(facts.pid) now belongs to another process (started at tick \(tick),"
                    + " the guest's at \(facts.startTime)) and nothing answers with the guest's ID"
            case .absent:
                cause = "reconcile: process \(facts.pid) is gone and nothing answers with the guest's ID"
            }
        } else {
            cause = "reconcile: no process was recorded and nothing answers with the guest's ID"
        }
        if record.state == .migratingOut {
            cause += "; the outgoing migration's outcome is unknown: ask the destination before starting it here"
        }
        return [.transition(from: record.state, to: .crashed, cause: cause)]
    }

    private static func registrations(
        records: [GuestRecord], answersByID: [GuestID: [AnsweringProcess]], into plan: inout ReconciliationPlan
    ) {
        let known = Set(records.map(\.id))
        let recordByName = Dictionary(records.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        var candidates: [AnsweringProcess] = []
        for (id, answers) in answersByID where !known.contains(id) {
            let pids = answers.map { String($0.facts.pid) }.joined(separator: ", ")
            if answers.count > 1 {
                plan.leftAlone.append(
                    LeftAlone(
                        id: id, name: answers[0].name,
                        reason: "processes \(pids) all answer with this unknown ID; left alone"))
            } else if answers[0].status == .handedOff {
                plan.leftAlone.append(
                    LeftAlone(
                        id: id, name: answers[0].name,
                        reason: "process \(pids) reports its guest handed off; nothing to register"))
            } else if let holder = recordByName[answers[0].name] {
                plan.leftAlone.append(
                    LeftAlone(
                        id: id, name: answers[0].name,
                        reason:
                            "process \(pids) runs a guest of this name, but the inventory's guest of that name has ID"
                            + " \(holder.id); left running, not registered"))
            } else {
                candidates.append(answers[0])
            }
        }
        for (name, same) in Dictionary(grouping: candidates, by: \.name).sorted(by: { $0.key < $1.key }) {
            guard same.count == 1, let process = same.first, let state = process.status.state else {
                let pids = same.map { String($0.facts.pid) }.joined(separator: ", ")
                plan.leftAlone.append(
                    LeftAlone(
                        id: nil, name: name,
                        reason: "processes \(pids) run guests of this name with different IDs; left alone"))
                continue
            }
            plan.registrations.append(
                Registration(
                    process: process, state: state,
                    cause: "reconcile: process \(process.facts.pid) answers with an ID the inventory lacked and reports"
                        + " \(process.status.rawValue); registered"))
        }
    }
}
