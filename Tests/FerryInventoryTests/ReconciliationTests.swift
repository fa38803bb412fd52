import FerryHostModel
import FerryTestSupport
import Foundation
import Testing

@testable import FerryInventory

/// Hand-written cases of `Reconciliation.plan`, each one a situation an agent meets on restart.
@Suite struct ReconciliationTests {
    static let facts = ProcessFacts(pid: 100, startTime: 5000, controlSocket: "/var/lib/ferry/run/web.sock")

    static func record(_ state: GuestState, name: String = "web", process: ProcessFacts? = facts) -> GuestRecord {
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        return GuestRecord(
            id: .random(), specification: try! specification(name), state: state, stateSince: now, generation: 7,
            process: state.hasProcess ? process : nil, createdAt: now, updatedAt: now)
    }

    static func answer(_ record: GuestRecord, _ status: ProcessStatus, facts: ProcessFacts = facts) -> AnsweringProcess
    {
        AnsweringProcess(id: record.id, specification: record.specification, status: status, facts: facts)
    }

    @Test func runningProcessThatAnswersIsAdoptedWithoutChange() {
        let web = Self.record(.running)
        let plan = Reconciliation.plan(
            records: [web], observed: HostObservation(answering: [Self.answer(web, .running)]))
        #expect(plan == ReconciliationPlan())
    }

    @Test func adoptionRecordsTheProcessFoundWhenItDiffers() {
        let web = Self.record(.starting, process: nil)
        let found = ProcessFacts(pid: 321, startTime: 9, controlSocket: "/run/web.sock")
        let plan = Reconciliation.plan(
            records: [web], observed: HostObservation(answering: [Self.answer(web, .running, facts: found)]))
        #expect(plan.changes.count == 1)
        #expect(plan.changes[0].generation == 7)
        guard case .transition(.starting, .running, let cause) = plan.changes[0].steps.first else {
            Issue.record("expected starting → running, got \(plan.changes[0].steps)")
            return
        }
        #expect(cause.contains("process 321 answers with the guest's ID"))
        #expect(plan.changes[0].steps.last == .recordProcess(found))
    }

    @Test func vanishedProcessIsMarkedCrashed() {
        let web = Self.record(.running)
        let plan = Reconciliation.plan(records: [web], observed: HostObservation(pids: [100: .absent]))
        #expect(
            plan.changes.map(\.steps) == [
                [
                    .transition(
                        from: .running, to: .crashed,
                        cause: "reconcile: process 100 is gone and nothing answers with the guest's ID")
                ]
            ])
    }

    @Test func recycledPIDIsNotMistakenForTheGuest() {
        let web = Self.record(.paused)
        let plan = Reconciliation.plan(records: [web], observed: HostObservation(pids: [100: .started(at: 77)]))
        guard case .transition(.paused, .crashed, let cause) = plan.changes.first?.steps.first else {
            Issue.record("expected paused → crashed, got \(plan)")
            return
        }
        #expect(cause.contains("PID 100 now belongs to another process (started at tick 77, the guest's at 5000)"))
    }

    @Test func silentButLiveProcessIsLeftRunning() {
        let web = Self.record(.running)
        let plan = Reconciliation.plan(records: [web], observed: HostObservation(pids: [100: .started(at: 5000)]))
        #expect(plan.changes.isEmpty)
        #expect(
            plan.leftAlone.map(\.reason) == [
                "process 100 still runs but does not answer on \(Self.facts.controlSocket); left running (not crashed, not killed)"
            ])
    }

    @Test func unexaminedPIDIsLeftAlone() {
        let plan = Reconciliation.plan(records: [Self.record(.running)], observed: HostObservation())
        #expect(plan.changes.isEmpty && plan.leftAlone.count == 1)
    }

    @Test func crashedRecordWhoseProcessAnswersComesBackThroughAllowedStates() {
        let web = Self.record(.crashed)
        let plan = Reconciliation.plan(
            records: [web], observed: HostObservation(answering: [Self.answer(web, .paused)]))
        let states = plan.changes[0].steps.compactMap { step -> GuestState? in
            if case .transition(_, let to, _) = step { return to }
            return nil
        }
        #expect(states == [.starting, .running, .paused])
        #expect(plan.changes[0].steps.last == .recordProcess(Self.facts))
    }

    @Test func migratingOutThatDidNotCompleteGoesBackToRunning() {
        let web = Self.record(.migratingOut)
        let plan = Reconciliation.plan(
            records: [web], observed: HostObservation(answering: [Self.answer(web, .running)]))
        guard case .transition(.migratingOut, .running, let cause) = plan.changes.first?.steps.first else {
            Issue.record("expected migrating-out → running, got \(plan)")
            return
        }
        #expect(cause.contains("the outgoing migration did not complete"))
    }

    @Test func migratingOutThatHandedOffLeavesTheInventory() {
        let web = Self.record(.migratingOut)
        let plan = Reconciliation.plan(
            records: [web], observed: HostObservation(answering: [Self.answer(web, .handedOff)]))
        #expect(
            plan.changes.map(\.steps) == [
                [.removeAfterHandoff(cause: "reconcile: process 100 reports the guest handed off to its destination")]
            ])
    }

    @Test func handoffThatTheInventoryNeverStartedIsLeftAlone() {
        let web = Self.record(.running)
        let plan = Reconciliation.plan(
            records: [web], observed: HostObservation(answering: [Self.answer(web, .handedOff)]))
        #expect(plan.changes.isEmpty)
        #expect(plan.leftAlone.first?.reason.contains("reports a handoff but the inventory says running") == true)
    }

    @Test func migratingInThatCompletedBecomesRunning() {
        let web = Self.record(.migratingIn)
        let plan = Reconciliation.plan(
            records: [web], observed: HostObservation(answering: [Self.answer(web, .running)]))
        guard case .transition(.migratingIn, .running, let cause) = plan.changes.first?.steps.first else {
            Issue.record("expected migrating-in → running, got \(plan)")
            return
        }
        #expect(cause.contains("the incoming migration completed"))
    }

    @Test func migratingOutWhoseProcessVanishedSaysTheOutcomeIsUnknown() {
        let web = Self.record(.migratingOut)
        let plan = Reconciliation.plan(records: [web], observed: HostObservation(pids: [100: .absent]))
        guard case .transition(.migratingOut, .crashed, let cause) = plan.changes.first?.steps.first else {
            Issue.record("expected migrating-out → crashed, got \(plan)")
            return
        }
        #expect(cause.contains("ask the destination before starting it here"))
    }

    @Test func unknownAnsweringProcessIsRegisteredNeverKilled() {
        let stranger = AnsweringProcess(
            id: .random(), specification: try! specification("stranger"), status: .running,
            facts: ProcessFacts(pid: 555, startTime: 1, controlSocket: "/run/stranger.sock"))
        let plan = Reconciliation.plan(
            records: [Self.record(.stopped)], observed: HostObservation(answering: [stranger]))
        #expect(plan.changes.isEmpty)
        #expect(plan.registrations.map(\.process) == [stranger])
        #expect(plan.registrations.map(\.state) == [.running])
    }

    @Test func unknownProcessWithATakenNameIsLeftAlone() {
        let web = Self.record(.stopped)
        let impostor = AnsweringProcess(
            id: .random(), specification: web.specification, status: .running, facts: Self.facts)
        let plan = Reconciliation.plan(records: [web], observed: HostObservation(answering: [impostor]))
        #expect(plan.registrations.isEmpty && plan.changes.isEmpty)
        #expect(plan.leftAlone.first?.reason.contains("left running, not registered") == true)
    }

    @Test func missingDisksAreMarkedAndUnmarked() {
        var web = Self.record(.stopped)
        let marked = Reconciliation.plan(records: [web], observed: HostObservation(missingDisks: [web.id: ["root"]]))
        #expect(marked.changes.map(\.steps) == [[.markMissingDisks(["root"])]])
        web.missingDisks = ["root"]
        let back = Reconciliation.plan(records: [web], observed: HostObservation())
        #expect(back.changes.map(\.steps) == [[.markMissingDisks([])]])
    }

    @Test func contradictoryReportIsLeftAlone() {
        let web = Self.record(.running)
        let plan = Reconciliation.plan(
            records: [web], observed: HostObservation(answering: [Self.answer(web, .migratingIn)]))
        #expect(plan.changes.isEmpty)
        #expect(plan.leftAlone.first?.reason.contains("reports migrating-in but the inventory says running") == true)
    }

    /// A process that reports `starting` for a running record: no chain through states with a
    /// process leads there (it would journal a stop that never happened), so it is left alone.
    @Test func adoptionNeverInventsAStop() {
        let web = Self.record(.running)
        let plan = Reconciliation.plan(
            records: [web], observed: HostObservation(answering: [Self.answer(web, .starting)]))
        #expect(plan.changes.isEmpty)
        #expect(Reconciliation.path(from: .running, to: .starting) == [.suspended, .starting])
        #expect(Reconciliation.adoptionPath(from: .running, to: .starting) == nil)
        #expect(Reconciliation.adoptionPath(from: .stopped, to: .paused) == [.starting, .running, .paused])
    }

    /// Every state reaches every state with a process, except `migrating-in`: only a `defined`
    /// guest (created for an incoming migration) becomes one.
    @Test func everyStateReachesEveryStateWithAProcess() {
        for from in GuestState.allCases {
            #expect(
                (Reconciliation.path(from: from, to: .migratingIn) != nil) == (from == .defined || from == .migratingIn)
            )
            for to in GuestState.allCases where to.hasProcess && to != .migratingIn {
                let chain = Reconciliation.path(from: from, to: to)
                #expect(chain != nil, "\(from) cannot reach \(to)")
                var state = from
                for next in chain ?? [] {
                    #expect(state.allows(next))
                    state = next
                }
            }
        }
    }
}
