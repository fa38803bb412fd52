import FerryControl
import Testing

@Suite struct CloudGuestStateTests {
    /// Every state is reachable from `pending`, and from every state but `deleted` a guest can
    /// still be deleted: no state is a trap that keeps a guest (and its bill) forever.
    @Test func everyStateReachableAndEveryGuestDeletable() {
        var reached: Set<CloudGuestState> = [.pending]
        var frontier: [CloudGuestState] = [.pending]
        while let state = frontier.popLast() {
            for next in state.successors where reached.insert(next).inserted { frontier.append(next) }
        }
        #expect(reached == Set(CloudGuestState.allCases))
        for state in CloudGuestState.allCases {
            var seen: Set<CloudGuestState> = [state]
            var stack = [state]
            while let current = stack.popLast() {
                for next in current.successors where seen.insert(next).inserted { stack.append(next) }
            }
            #expect(seen.contains(.deleted), "\(state) can never be deleted")
        }
    }

    @Test func theIssuesLifeIsAllowedAndDeletedIsFinal() {
        let life: [CloudGuestState] = [.pending, .building, .running, .stopping, .stopped, .deleted]
        for (from, to) in zip(life, life.dropFirst()) { #expect(from.allows(to), "\(from) → \(to)") }
        #expect(CloudGuestState.deleted.successors.isEmpty)
        #expect(CloudGuestState.error.successors == [.deleted])
        for state in CloudGuestState.allCases { #expect(!state.allows(state)) }
        // A running guest is never deleted without being stopped (its host must be told).
        #expect(!CloudGuestState.running.allows(.deleted))
    }

    /// A silent host makes its live guests unknown, never deleted; the host's next report
    /// settles them, and nothing else can.
    @Test func aSilentHostsGuestsAreUnknownUntilTheHostReports() {
        for state in [CloudGuestState.building, .running, .stopping] { #expect(state.allows(.unknown)) }
        for state in [CloudGuestState.pending, .stopped, .suspended, .error, .deleted] {
            #expect(!state.allows(.unknown))
        }
        #expect(CloudGuestState.unknown.successors == [.running, .stopped, .suspended, .error])
        #expect(CloudGuestState.unknown.holdsCapacity)
    }

    /// Warm capacity: a running guest is suspended (its host keeps its place, it is not billed),
    /// then resumed as a start does (building → running) or deleted; never deleted while running.
    @Test func aSuspendedGuestIsResumedOrDeleted() {
        #expect(CloudGuestState.running.allows(.suspended))
        #expect(CloudGuestState.suspended.successors == [.building, .deleted])
        #expect(CloudGuestState.suspended.holdsCapacity)
        for state in [CloudGuestState.pending, .building, .stopping, .stopped, .error] {
            #expect(!state.allows(.suspended), "\(state) → suspended")
        }
    }

    @Test func onlyLiveGuestsHoldCapacity() {
        #expect(CloudGuestState.allCases.filter { !$0.holdsCapacity } == [.deleted, .error])
    }

    @Test func rawValuesAreTheAPIsSpelling() {
        #expect(
            CloudGuestState.allCases.map(\.rawValue) == [
                "pending", "building", "running", "stopping", "stopped", "suspended", "deleted", "error", "unknown",
            ])
    }
}
