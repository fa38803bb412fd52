import FerryHostModel
import Foundation
import Testing

@testable import FerryControl

/// A group's back-off after members that failed to build: 2^k × 1 s after k failures in a row, at
/// most 5 min, from the newest failure; reset by a member that ran; and the plan that holds its
/// creates meanwhile.
@Suite struct BuildBackoffTests {
    @Test func theWaitDoublesFromTwoSecondsAndStopsAtFiveMinutes() {
        let waits = (0...12).map { BuildBackoff.wait(failures: $0) }
        #expect(
            waits == [
                0, 2000, 4000, 8000, 16_000, 32_000, 64_000, 128_000, 256_000, 300_000, 300_000, 300_000, 300_000,
            ])
        #expect(BuildBackoff.wait(failures: 1000) == 300_000, "no overflow")
        #expect(BuildBackoff.wait(failures: 3, baseMilliseconds: 50, capMilliseconds: 1000) == 400)
        // Against the definition for every count and a few bases.
        for base: Int64 in [1, 7, 1000, 60_000] {
            for k in 1...70 {
                let exact = k < 40 ? min(Double(300_000), Double(base) * pow(2, Double(k))) : 300_000
                #expect(Double(BuildBackoff.wait(failures: k, baseMilliseconds: base)) == exact, "base \(base), k \(k)")
            }
        }
    }

    @Test func failuresCountFromTheNewestMemberBackToOneThatRan() {
        let outcomes: [BuildBackoff.Outcome] = [
            .undecided, .failed(atMilliseconds: 9000), .undecided, .failed(atMilliseconds: 7000), .ran,
            .failed(atMilliseconds: 1000),
        ]
        let backoff = BuildBackoff(newestFirst: outcomes)
        #expect(backoff.failuresInARow == 2, "the failure before the member that ran does not count")
        #expect(backoff.lastFailureMilliseconds == 9000)
        #expect(backoff.nextAttemptMilliseconds == Int64(9000 + 4000))
        #expect(backoff.waits(now: 12_999) && !backoff.waits(now: 13_000))
    }

    @Test func aMemberThatRanResetsIt() {
        let reset = BuildBackoff(newestFirst: [.ran, .failed(atMilliseconds: 5), .failed(atMilliseconds: 4)])
        #expect(reset == .none && !reset.waits(now: 0))
        #expect(BuildBackoff(newestFirst: []) == .none)
        #expect(BuildBackoff(newestFirst: [.undecided, .undecided]) == .none)
    }

    @Test func aLongRunOfFailuresWaitsTheCap() {
        let many = (0..<100).map { BuildBackoff.Outcome.failed(atMilliseconds: Int64(1000 - $0)) }
        let backoff = BuildBackoff(newestFirst: many)
        #expect(backoff.failuresInARow == BuildBackoff.countedAtMost)
        #expect(backoff.nextAttemptMilliseconds == Int64(1000 + 300_000))
    }

    @Test func aJournalTellsTheOutcome() throws {
        let id = try GuestID(String(repeating: "a", count: 32))
        func entry(_ second: Double, _ to: CloudGuestState) -> CloudJournalEntry {
            CloudJournalEntry(
                sequence: Int64(second), guestID: id, time: Date(timeIntervalSince1970: second), from: nil, to: to,
                cause: "")
        }
        #expect(
            GroupPlan.outcome([entry(1, .pending), entry(2, .building), entry(3, .error)])
                == .failed(atMilliseconds: 3000))
        #expect(
            GroupPlan.outcome([entry(1, .pending), entry(2, .building), entry(3, .running), entry(9, .error)]) == .ran,
            "a member that ran and failed later is no failed build")
        #expect(GroupPlan.outcome([entry(1, .pending), entry(2, .deleted)]) == .undecided)
        #expect(GroupPlan.outcome([entry(1, .pending), entry(2, .building)]) == .undecided)
    }

    /// While the group waits it creates nothing (and says how many it holds); once the time has
    /// come it creates as before. Deleting the failed member and resuming warm ones go on.
    @Test func thePlanHoldsCreatesWhileTheGroupWaits() {
        let group = GroupPlanTests.group(desired: 2)
        let members = [GroupPlanTests.member(1, .running), GroupPlanTests.member(2, .error)]
        let backoff = BuildBackoff(newestFirst: [.failed(atMilliseconds: 10_000), .failed(atMilliseconds: 8000)])
        #expect(backoff.nextAttemptMilliseconds == 14_000)
        let waiting = GroupPlan.make(
            group: group, members: members, now: Date(timeIntervalSince1970: 13.9), backoff: backoff)
        #expect(waiting.create.isEmpty && waiting.held == 1)
        #expect(waiting.delete.map(\.name.value) == ["web-2"], "the failed member is still removed")
        #expect(waiting.backoff == backoff)
        let due = GroupPlan.make(group: group, members: members, now: Date(timeIntervalSince1970: 14), backoff: backoff)
        #expect(due.create.map(\.value) == ["web-3"] && due.held == 0)
        let none = GroupPlan.make(group: group, members: members, now: Date(timeIntervalSince1970: 13.9))
        #expect(none.create.map(\.value) == ["web-3"], "no back-off: a create every pass, as before")
    }
}
