import FerryHostModel
import FerryTestSupport
import Foundation
import Testing

@testable import FerryInventory

/// A restart's reconciliation applied to a real inventory file: plan from its records and an
/// observed host, apply, and check the records, the journal and the refusals.
@Suite struct ReconciliationApplyTests {
    /// Puts a new guest into `path` of states (each journaled), with process facts if given.
    func guest(
        _ inventory: SQLiteInventory, _ name: String, through states: [GuestState], process: ProcessFacts? = nil
    ) throws -> GuestRecord {
        _ = try inventory.create(try specification(name), id: .random(), cause: "create")
        var state = GuestState.defined
        for next in states {
            _ = try inventory.transition(guestName(name), from: state, to: next, cause: "test")
            state = next
        }
        if let process { _ = try inventory.recordProcess(guestName(name), process, generation: nil) }
        return try #require(try inventory.guest(named: guestName(name)))
    }

    @Test func restartAdoptsMarksCrashedRegistersAndHandsOff() throws {
        let scratch = Scratch()
        let inventory = try SQLiteInventory(path: scratch.file("inventory.sqlite"))
        let facts = { (pid: Int32) in
            ProcessFacts(pid: pid, startTime: UInt64(pid) * 10, controlSocket: "/run/\(pid).sock")
        }
        let adopted = try guest(inventory, "adopted", through: [.starting], process: facts(11))
        let vanished = try guest(inventory, "vanished", through: [.starting, .running], process: facts(12))
        let leaving = try guest(
            inventory, "leaving", through: [.starting, .running, .migratingOut], process: facts(13))
        let silent = try guest(inventory, "silent", through: [.starting, .running], process: facts(14))
        let stopped = try guest(inventory, "stopped", through: [.starting, .stopped])
        let stranger = AnsweringProcess(
            id: .random(), specification: try specification("stranger"), status: .paused, facts: facts(15))
        let observed = HostObservation(
            answering: [
                AnsweringProcess(
                    id: adopted.id, specification: adopted.specification, status: .running, facts: facts(11)),
                AnsweringProcess(
                    id: leaving.id, specification: leaving.specification, status: .handedOff, facts: facts(13)),
                stranger,
            ],
            pids: [12: .absent, 14: .started(at: 140)],
            missingDisks: [stopped.id: ["root"]])
        let plan = Reconciliation.plan(records: try inventory.guests(), observed: observed)
        let outcome = try inventory.apply(plan)
        #expect(outcome.refused.isEmpty)
        #expect(Set(outcome.applied.map(\.value)) == ["adopted", "vanished", "leaving", "stopped"])
        #expect(outcome.registered.map(\.value) == ["stranger"])

        let after = Dictionary(uniqueKeysWithValues: try inventory.guests().map { ($0.name.value, $0) })
        #expect(after["adopted"]?.state == .running && after["adopted"]?.process == facts(11))
        #expect(after["vanished"]?.state == .crashed && after["vanished"]?.process == nil)
        #expect(after["leaving"] == nil)
        #expect(after["silent"] == silent)
        #expect(after["stopped"]?.missingDisks == ["root"] && after["stopped"]?.state == .stopped)
        #expect(after["stranger"]?.state == .paused && after["stranger"]?.id == stranger.id)
        #expect(after["stranger"]?.process == facts(15))
        #expect(try inventory.journal(of: vanished.id, latest: 1).first?.cause.contains("process 12 is gone") == true)
        #expect(try inventory.journal(of: leaving.id, latest: 1).first?.to == nil)
        #expect(try inventory.journal(of: stranger.id, latest: 5).map(\.from) == [nil])
        try expectJournalAgreesWithState(inventory)

        // Reconciling again against the same host changes nothing.
        let again = Reconciliation.plan(records: try inventory.guests(), observed: observed)
        #expect(again.changes.isEmpty && again.registrations.isEmpty)
    }

    /// A plan made from records that changed before it was applied is refused for those
    /// guests (generation), applied for the others.
    @Test func staleChangesAreRefusedOthersApplied() throws {
        let scratch = Scratch()
        let inventory = try SQLiteInventory(path: scratch.file("inventory.sqlite"))
        let a = try guest(
            inventory, "a", through: [.starting, .running],
            process: ProcessFacts(pid: 1, startTime: 1, controlSocket: "/a"))
        _ = try guest(
            inventory, "b", through: [.starting, .running],
            process: ProcessFacts(pid: 2, startTime: 2, controlSocket: "/b"))
        let plan = Reconciliation.plan(
            records: try inventory.guests(), observed: HostObservation(pids: [1: .absent, 2: .absent]))
        #expect(plan.changes.count == 2)
        // Meanwhile guest a was paused by someone else.
        _ = try inventory.transition(
            guestName("a"), from: .running, to: .paused, cause: "api: pause", generation: a.generation)
        let outcome = try inventory.apply(plan)
        #expect(outcome.applied.map(\.value) == ["b"])
        #expect(outcome.refused.map(\.code) == [.stale])
        #expect(outcome.refused.first?.message.contains("guest a is at generation 5, the plan saw 4") == true)
        #expect(try inventory.guest(named: guestName("a"))?.state == .paused)
        #expect(try inventory.guest(named: guestName("b"))?.state == .crashed)
        try expectJournalAgreesWithState(inventory)
    }
}
