import FerryHostModel
import FerryTestSupport
import Foundation
import Testing

@testable import FerryInventory

/// `Reconciliation.plan` over every combination of one record and what the agent may observe
/// about it (and of strangers' processes), checked against invariants that hold whatever the
/// plan's details: nothing deleted but a proven handoff, nothing killed, a guest whose process
/// answers is never `crashed`, every transition allowed, and a second pass plans nothing.
@Suite struct ReconciliationOracleTests {
    static let recorded = ProcessFacts(pid: 100, startTime: 5000, controlSocket: "/run/g.sock")
    static let other = ProcessFacts(pid: 200, startTime: 7000, controlSocket: "/run/g2.sock")

    enum Answers: CaseIterable, Hashable {
        case none, sameFacts, otherFacts, otherName, twice
    }

    struct Case: CustomStringConvertible {
        var record: GuestRecord
        var observation: HostObservation
        var description: String {
            "\(record.state.rawValue) facts=\(record.process.map { "\($0.pid)" } ?? "nil") missing=\(record.missingDisks)"
                + " pids=\(observation.pids) answers=\(observation.answering.map { "\($0.name)/\($0.status.rawValue)/\($0.facts.pid)" })"
                + " disks=\(observation.missingDisks.values.first ?? [])"
        }
    }

    /// Every state × recorded facts (none, PID 100) × marked disks × what /proc says of PID 100
    /// (not examined, absent, same start, other start) × who answers × which disks are missing.
    static func singleRecordCases() -> [Case] {
        let pidObservations: [PIDObservation?] = [nil, .absent, .started(at: 5000), .started(at: 6000)]
        var cases: [Case] = []
        for state in GuestState.allCases {
            for facts in [nil, recorded] {
                for marked in [[], ["root"]] {
                    let now = Date(timeIntervalSince1970: 1_800_000_000)
                    let record = GuestRecord(
                        id: .random(), specification: try! specification("g", disks: ["data", "root"]), state: state,
                        stateSince: now, generation: 3, process: facts, missingDisks: marked, createdAt: now,
                        updatedAt: now)
                    for pid in pidObservations {
                        for answers in Answers.allCases {
                            for status in answers == .none ? [.running] : ProcessStatus.allCases {
                                for missing in [[], ["root"], ["data", "root"]] {
                                    cases.append(
                                        Case(
                                            record: record,
                                            observation: HostObservation(
                                                answering: answering(record, answers, status),
                                                pids: pid.map { [100: $0] } ?? [:], missingDisks: [record.id: missing]))
                                    )
                                }
                            }
                        }
                    }
                }
            }
        }
        return cases
    }

    static func answering(_ record: GuestRecord, _ answers: Answers, _ status: ProcessStatus) -> [AnsweringProcess] {
        let same = AnsweringProcess(id: record.id, specification: record.specification, status: status, facts: recorded)
        switch answers {
        case .none: return []
        case .sameFacts: return [same]
        case .otherFacts:
            return [AnsweringProcess(id: record.id, specification: record.specification, status: status, facts: other)]
        case .otherName:
            return [
                AnsweringProcess(id: record.id, specification: try! specification("h"), status: status, facts: other)
            ]
        case .twice:
            return [
                same,
                AnsweringProcess(id: record.id, specification: record.specification, status: .running, facts: other),
            ]
        }
    }

    @Test func invariantsHoldForEveryRecordAndObservation() throws {
        let cases = Self.singleRecordCases()
        #expect(cases.count > 10_000)
        var failures = 0
        for item in cases where failures < 5 {
            let before = failures
            failures += Self.check(records: [item.record], item.observation)
            if failures > before { Issue.record("case: \(item)") }
        }
    }

    /// Processes with IDs the inventory lacks, alone, in pairs, with names that collide with a
    /// record's or with each other's, in every status.
    @Test func strangersAreRegisteredOrLeftAloneNeverLost() throws {
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let held = GuestRecord(
            id: .random(), specification: try specification("a"), state: .stopped, stateSince: now, generation: 1,
            createdAt: now, updatedAt: now)
        var failures = 0
        for firstName in ["a", "b"] {
            for secondName in [nil, "a", "b", "c"] {
                for status in ProcessStatus.allCases {
                    for sameID in [false, true] {
                        let first = AnsweringProcess(
                            id: .random(), specification: try specification(firstName), status: status,
                            facts: Self.other)
                        var answering = [first]
                        if let secondName {
                            answering.append(
                                AnsweringProcess(
                                    id: sameID ? first.id : .random(), specification: try specification(secondName),
                                    status: .running, facts: Self.recorded))
                        }
                        let before = failures
                        failures += Self.check(records: [held], HostObservation(answering: answering))
                        if failures > before { Issue.record("strangers: \(answering)") }
                    }
                }
            }
        }
    }

    /// Checks one plan; returns how many invariants failed (each recorded as an issue).
    static func check(records: [GuestRecord], _ observation: HostObservation) -> Int {
        var failures = 0
        func expect(_ condition: Bool, _ message: @autoclosure () -> String) {
            if !condition {
                failures += 1
                Issue.record(Comment(rawValue: message()))
            }
        }
        let plan = Reconciliation.plan(records: records, observed: observation)
        let after = simulate(plan, on: records, expect: expect)
        let answersByID = Dictionary(grouping: observation.answering, by: \.id)
        for record in records {
            let answers = answersByID[record.id] ?? []
            guard let final = after[record.id] else {
                // Nothing deleted: only a proven handoff removes a record.
                expect(
                    record.state == .migratingOut && answers.count == 1 && answers[0].status == .handedOff
                        && answers[0].name == record.name, "\(record.name) removed without a proven handoff")
                continue
            }
            // A guest whose process answers is never marked crashed; a crashed one whose process
            // answers leaves `crashed` unless the report contradicts it (then left alone, reported).
            if !answers.isEmpty && final.state == .crashed {
                expect(record.state == .crashed, "\(record.name): its process answers, yet marked crashed")
                expect(
                    plan.leftAlone.contains { $0.id == record.id }, "\(record.name): answers, stays crashed silently")
            }
            if final.state == .crashed && record.state != .crashed {
                let gone: Bool
                switch record.process.flatMap({ observation.pids[$0.pid] }) {
                case .absent: gone = true
                case .started(let tick): gone = tick != record.process!.startTime
                case nil: gone = record.process == nil
                }
                expect(
                    answers.isEmpty && record.state.hasProcess && gone, "\(record.name) marked crashed without proof")
            }
            let unchanged = final.state == record.state && final.process == record.process
            if answers.count == 1, answers[0].name == record.name, let reported = answers[0].status.state {
                if Reconciliation.adoptionPath(from: record.state, to: reported) != nil {
                    expect(
                        final.state == reported,
                        "\(record.name): adopted but \(final.state), the process reports \(reported)")
                    expect(final.process == answers[0].facts, "\(record.name): adopted without its process facts")
                } else {
                    expect(
                        unchanged && plan.leftAlone.contains { $0.id == record.id },
                        "\(record.name): contradiction not left alone")
                }
            }
            if !answers.isEmpty && (answers.count > 1 || answers[0].name != record.name) {
                expect(
                    unchanged && plan.leftAlone.contains { $0.id == record.id },
                    "\(record.name): an ambiguous answer changed the record")
            }
            expect(
                final.missingDisks == (observation.missingDisks[record.id] ?? []).sorted(),
                "\(record.name): missing disks \(final.missingDisks)")
        }
        // Every answering process ends up held by the inventory, or was reported as left alone.
        for (id, answers) in answersByID where after[id] == nil && answers.allSatisfy({ $0.status != .handedOff }) {
            expect(
                plan.leftAlone.contains { $0.id == id || $0.name == answers[0].name },
                "process of \(id) neither registered nor reported")
        }
        expect(Set(after.values.map(\.name)).count == after.count, "two records with one name")
        // Reconciling again against the same host plans no change.
        let again = Reconciliation.plan(records: Array(after.values), observed: observation)
        expect(again.changes.isEmpty && again.registrations.isEmpty, "a second pass changes more: \(again)")
        return failures
    }

    /// Applies a plan to records in memory, checking each step as the store does.
    static func simulate(
        _ plan: ReconciliationPlan, on records: [GuestRecord], expect: (Bool, @autoclosure () -> String) -> Void
    ) -> [GuestID: GuestRecord] {
        var byID = Dictionary(uniqueKeysWithValues: records.map { ($0.id, $0) })
        for change in plan.changes {
            guard var record = byID[change.id] else {
                expect(false, "a change for an unknown guest")
                continue
            }
            expect(change.generation == record.generation, "plan's generation differs")
            for step in change.steps {
                switch step {
                case .transition(let from, let to, _):
                    expect(
                        record.state == from && from.allows(to), "step \(from) → \(to) from \(record.state) not allowed"
                    )
                    record.state = to
                    if !to.hasProcess { record.process = nil }
                case .recordProcess(let facts):
                    record.process = facts
                case .markMissingDisks(let disks):
                    record.missingDisks = disks
                case .removeAfterHandoff:
                    expect(record.state == .migratingOut, "removal from \(record.state)")
                }
                record.generation += 1
            }
            byID[change.id] = change.steps.contains(where: Reconciliation.isRemoval) ? nil : record
        }
        for registration in plan.registrations {
            let process = registration.process
            expect(byID[process.id] == nil, "registration of a known ID")
            expect(registration.state == process.status.state, "registered in another state than reported")
            byID[process.id] = GuestRecord(
                id: process.id, specification: process.specification, state: registration.state,
                stateSince: Date(timeIntervalSince1970: 0), generation: 1, process: process.facts,
                createdAt: Date(timeIntervalSince1970: 0), updatedAt: Date(timeIntervalSince1970: 0))
        }
        return byID
    }

    /// A clock jump destroys nothing: with every time the inventory recorded a year ahead of the
    /// clock, or ten years behind it (a clock set back or forward since), every case plans exactly
    /// what it plans with the times as they were. Reconciliation reads PIDs, start ticks and IDs,
    /// never wall-clock times.
    @Test(arguments: [365.0 * 86_400, -3_650.0 * 86_400])
    func recordedTimesDoNotChangeAnyPlan(shift: TimeInterval) {
        var differing = 0
        for item in Self.singleRecordCases() {
            var jumped = item.record
            jumped.stateSince += shift
            jumped.createdAt += shift
            jumped.updatedAt += shift
            let plan = Reconciliation.plan(records: [item.record], observed: item.observation)
            let planAfterJump = Reconciliation.plan(records: [jumped], observed: item.observation)
            if plan != planAfterJump {
                differing += 1
                if differing <= 3 { Issue.record("\(item): \(plan) became \(planAfterJump)") }
            }
        }
        #expect(differing == 0)
    }
}
