import FerryGuest
import FerryGuestMigration
import FerryKVMMigration
import FerrySystem
import FerryTestSupport
import Testing

@testable import FerryMigration

@Suite(.serialized, .tags(.slow), .skippable(.slow)) struct AutoConvergeTests {
    /// A guest that dirties memory several times faster than a bandwidth-limited link can carry it
    /// never converges by itself; auto-converge slows its vCPUs step by step until it does, and the
    /// result is still verified and transparent.
    @Test func throttlingMakesAnOutpacingGuestConverge() throws {
        let scratch = Scratch()
        var migration = LoopbackMigration()
        migration.size = 8 << 20
        migration.workload = "uniform:20MB/s"
        migration.maxBandwidth = 4e6
        migration.settings = ConvergenceSettings(
            downtimeTarget: .seconds(0.030), maxRounds: 40, timeout: .seconds(60),
            throttleInitial: 40, throttleStep: 20)
        migration.runFor = 0
        let outcome = try migration.run(in: scratch)
        let report = try outcome.source.get()
        #expect(report.verified)
        #expect(
            report.maxThrottlePercent >= 40, "the guest should have been throttled: \(report.perRound.map(\.decision))")
        #expect(report.perRound.contains { $0.decision.hasPrefix("throttle vCPUs by") })
        #expect(report.perRound.contains { $0.throttlePercent > 0 })
        #expect(
            try Transparency.difference(between: scratch.file("destination.img"), and: scratch.file("source.img"))
                == nil)

        // The limit held: pre-copy put no more than the limit (plus one 10 ms burst per round) on the wire.
        let precopy = report.perRound.dropLast()
        let seconds = precopy.map(\.durationMs).reduce(0, +) / 1000
        let bytes = Double(precopy.map(\.wireBytes).reduce(0, +))
        let allowance = 4e6 * (seconds + Double(precopy.count) * BandwidthLimiter.burstSeconds) + Double(2 << 20)
        #expect(bytes <= allowance, "sent \(bytes) bytes in \(seconds) s with a 4 MB/s limit")
    }

    @Test func limiterHoldsTheRate() {
        var limiter = BandwidthLimiter(bytesPerSecond: 50e6)
        let start = MonotonicClock.now()
        for _ in 0..<20 { limiter.consumed(1 << 20) }  // 20 MiB at 50 MB/s: ≥ 0.41 s less one burst
        let seconds = MonotonicClock.seconds(since: start)
        #expect(seconds >= Double(20 << 20) / 50e6 - BandwidthLimiter.burstSeconds - 0.001)
    }
}
