import FerrySystem
import FerryTestSupport
import Foundation
import Testing

@testable import FerryGuest

/// The built-in guest's own load figure (time working vs. time sleeping for pacing) and its
/// pace changed while it runs. Loose bounds: the machine is shared.
@Suite(.serialized) struct GuestLoadTests {
    /// Waits until every vCPU reported a load after `after` (a fresh interval), at most 5 s.
    static func freshLoads(_ guest: Guest, afterMs: Int) -> [Int] {
        sleepMs(afterMs)
        let deadline = MonotonicClock.now() + 5_000_000_000
        while MonotonicClock.now() < deadline {
            let loads = guest.loadPermillePerVCPU.compactMap { $0 }
            if loads.count == guest.configuration.vcpus { return loads }
            sleepMs(50)
        }
        return []
    }

    @Test func aPacedGuestReportsALowLoadAnUnpacedOneNear1000() throws {
        let memory = AnonymousMemory(size: 16 << 20)
        let config = GuestConfiguration(vcpus: 2, workload: try .parse("uniform:8MB/s"), seed: 3, pageSize: 4096)
        let guest = try Guest(memory: memory.base, size: memory.size, configuration: config, logger: quietLogger)
        #expect(guest.loadPermillePerVCPU == [nil, nil])
        guest.start()
        defer { _ = guest.stop() }
        let paced = Self.freshLoads(guest, afterMs: 1100)
        guest.pace = .unpaced
        // The interval that was running when the pace changed is mixed; the one after is not.
        let unpaced = Self.freshLoads(guest, afterMs: 2200)
        print("built-in guest load, uniform:8MB/s: \(paced) ‰; unpaced: \(unpaced) ‰")
        #expect(paced.count == 2 && paced.allSatisfy { $0 < 300 }, "paced: \(paced)")
        #expect(unpaced.count == 2 && unpaced.allSatisfy { $0 > 900 }, "unpaced: \(unpaced)")
    }

    @Test func aLowerPaceLowersTheStepRateAndTheLoadAtOnce() throws {
        let memory = AnonymousMemory(size: 16 << 20)
        let config = GuestConfiguration(vcpus: 1, workload: try .parse("uniform:1MB/s"), seed: 4, pageSize: 4096)
        let guest = try Guest(memory: memory.base, size: memory.size, configuration: config, logger: quietLogger)
        guest.pace = .unpaced
        guest.start()
        defer { _ = guest.stop() }
        let high = PacingTests.measuredPagesPerSecond(guest, ms: 300)
        let highLoad = Self.freshLoads(guest, afterMs: 900)
        guest.pace = .pagesPerSecond(500)
        sleepMs(20)
        let low = PacingTests.measuredPagesPerSecond(guest, ms: 400)
        let lowLoad = Self.freshLoads(guest, afterMs: 1700)
        print(
            "built-in guest: unpaced \(Int(high)) pages/s, load \(highLoad) ‰; at 500 pages/s: \(Int(low)), \(lowLoad) ‰"
        )
        #expect(low > 300 && low < 700, "\(low) pages/s after the pace fell to 500")
        #expect(high > low * 20, "unpaced \(high) pages/s")
        #expect((lowLoad.first ?? 1000) < 200 && (highLoad.first ?? 0) > 900, "\(highLoad) then \(lowLoad)")
        guest.pace = .configured
        #expect(guest.pace == .configured)
    }
}
