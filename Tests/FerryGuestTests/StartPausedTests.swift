import FerrySystem
import FerryTestSupport
import Foundation
import Testing

@testable import FerryGuest

/// A guest started paused (one that arrives by migration paused on its source) runs no step
/// until it is resumed: its vCPUs park before their first step.
@Suite struct StartPausedTests {
    @Test func aGuestStartedPausedRunsNoStepUntilResumed() throws {
        let memory = AnonymousMemory(size: 16 << 20)
        let config = GuestConfiguration(vcpus: 2, workload: try .parse("uniform:400MB/s"), seed: 5, pageSize: 4096)
        let guest = try Guest(memory: memory.base, size: memory.size, configuration: config, logger: quietLogger)
        guest.start(paused: true)
        defer { _ = guest.stop() }
        // `pause()` now waits until both vCPU threads have parked: from then on nothing runs.
        guest.pause()
        sleepMs(200)
        #expect(guest.totalSteps == 0, "a guest started paused ran \(guest.totalSteps) steps")
        guest.resume()
        let deadline = Date().addingTimeInterval(20)
        while guest.totalSteps == 0, Date() < deadline { sleepMs(10) }
        #expect(guest.totalSteps > 0, "the resumed guest does not run")
    }
}
