import FerryHostModel
import Testing

@Suite struct GuestStateTests {
    /// Every state is reachable from `defined` (the walk a guest's life can take), and from every
    /// state a guest can get back to `running` or leave the host: no state is a trap.
    @Test func everyStateReachableAndNoTrap() {
        var reached: Set<GuestState> = [.defined]
        var frontier: [GuestState] = [.defined]
        while let state = frontier.popLast() {
            for next in state.successors where reached.insert(next).inserted { frontier.append(next) }
        }
        #expect(reached == Set(GuestState.allCases))
        for state in GuestState.allCases {
            var seen: Set<GuestState> = [state]
            var stack = [state]
            while let current = stack.popLast() {
                for next in current.successors where seen.insert(next).inserted { stack.append(next) }
            }
            #expect(seen.contains(.running), "\(state) can never run again")
            #expect(seen.contains { $0.removable }, "\(state) can never leave the host")
        }
    }

    @Test func noStateMovesToItself() {
        for state in GuestState.allCases { #expect(!state.allows(state)) }
    }

    /// A guest with a process can crash; one without cannot (nothing to lose).
    @Test func crashedOnlyFromStatesWithAProcess() {
        for state in GuestState.allCases where state != .crashed {
            #expect(state.allows(.crashed) == state.hasProcess, "\(state)")
        }
    }

    @Test func removableOnlyWithoutAProcess() {
        #expect(!GuestState.running.removable)
        #expect(!GuestState.migratingOut.removable)
        #expect(GuestState.stopped.removable)
        #expect(GuestState.crashed.removable)
    }

    @Test func rawValuesAreTheAPIsSpelling() {
        #expect(GuestState.migratingOut.rawValue == "migrating-out")
        #expect(GuestState(rawValue: "migrating-in") == .migratingIn)
    }
}
