import FerrySystem
import FerryTestSupport
import Foundation
import Testing

@testable import FerryGuest

/// Timing: write rates, throttling, pause latency. Loose bounds: the machine is shared.
@Suite(.serialized) struct PacingTests {
    /// Pages per second measured over `ms` milliseconds of running.
    static func measuredPagesPerSecond(_ guest: Guest, ms: Int) -> Double {
        let s0 = guest.totalSteps
        let t0 = Int64(MonotonicClock.now())
        sleepMs(ms)
        let s1 = guest.totalSteps
        let t1 = Int64(MonotonicClock.now())
        return Double(s1 - s0) * 1e9 / Double(t1 - t0)
    }

    @Test(arguments: [1, 4])
    func uniformRateIsHonouredAndThrottleHalvesIt(vcpus: Int) throws {
        let memory = AnonymousMemory(size: 16 << 20)
        let config = GuestConfiguration(vcpus: vcpus, workload: try .parse("uniform:40MB/s"), seed: 2, pageSize: 4096)
        let guest = try Guest(memory: memory.base, size: memory.size, configuration: config, logger: quietLogger)
        guest.start()
        defer { _ = guest.stop() }
        let wanted = 40e6 / 4096
        sleepMs(50)
        let full = Self.measuredPagesPerSecond(guest, ms: 500)
        guest.throttlePercent = 50
        sleepMs(30)
        let half = Self.measuredPagesPerSecond(guest, ms: 400)
        print(
            "uniform:40MB/s, \(vcpus) vCPU(s): \(Int(full * 4096 / 1e6)) MB/s, throttled 50%: \(Int(half * 4096 / 1e6)) MB/s"
        )
        #expect(abs(full / wanted - 1) < 0.3, "\(full) pages/s measured, \(wanted) wanted")
        #expect(abs(half / (wanted / 2) - 1) < 0.3, "\(half) pages/s measured at throttle 50%, \(wanted / 2) wanted")
        let steps = guest.stepsPerVCPU
        #expect(steps.count == vcpus)
        // Each vCPU gets rate/vcpus.
        for s in steps { #expect(Double(s) > Double(steps.max()!) * 0.8, "unequal vCPU progress \(steps)") }
    }

    @Test func noCatchUpBurstAfterAPause() throws {
        let memory = AnonymousMemory(size: 16 << 20)
        let config = GuestConfiguration(vcpus: 2, workload: try .parse("sweep:40MB/s"), seed: 2, pageSize: 4096)
        let guest = try Guest(memory: memory.base, size: memory.size, configuration: config, logger: quietLogger)
        guest.start()
        defer { _ = guest.stop() }
        sleepMs(100)
        guest.pause()
        let atPause = guest.totalSteps
        sleepMs(300)
        #expect(guest.totalSteps == atPause, "vCPUs wrote while paused")
        guest.resume()
        let after = Self.measuredPagesPerSecond(guest, ms: 150)
        let wanted = 40e6 / 4096
        print("rate in the 150 ms after a 300 ms pause: \(Int(after)) pages/s (\(Int(wanted)) wanted)")
        #expect(after < wanted * 1.35, "burst after pause: \(after) pages/s")
        #expect(after > wanted * 0.6)
    }

    @Test(arguments: ["uniform:40pages/s", "uniform:2000pages/s", "uniform:400MB/s", "trace:/gap"])
    func pauseLatencyIsSmallWhileVCPUsPace(workload: String) throws {
        let memory = AnonymousMemory(size: 16 << 20)
        let trace =
            workload.hasPrefix("trace") ? try DirtyTrace.parse("1 1 2 3 4\n10000 5 6 7 8\n", pageCount: 4096) : nil
        let config = GuestConfiguration(vcpus: 4, workload: try .parse(workload), trace: trace, seed: 3, pageSize: 4096)
        let guest = try Guest(memory: memory.base, size: memory.size, configuration: config, logger: quietLogger)
        guest.start()
        defer { _ = guest.stop() }
        var latencies: [UInt64] = []
        var rng: UInt64 = 17
        for _ in 0..<20 {
            sleepMs(2 + Int(Mixing.next(&rng) % 15))
            latencies.append(guest.pause())
            let steps = guest.totalSteps
            usleep(500)
            #expect(guest.totalSteps == steps)
            guest.resume()
        }
        latencies.sort()
        let us = latencies.map { $0 / 1000 }
        print("pause latency \(workload), 4 vCPUs: median \(us[10]) µs, p90 \(us[18]) µs, max \(us[19]) µs")
        #expect(latencies.last! < 50_000_000)
    }

    @Test func rateWithFewPagesPerSecondStillWritesAndPausesFast() throws {
        // A slow guest: 5 pages/s over 2 vCPUs; each vCPU sleeps 400 ms between writes.
        let memory = AnonymousMemory(size: 1 << 20)
        let config = GuestConfiguration(vcpus: 2, workload: try .parse("uniform:5pages/s"), seed: 3, pageSize: 4096)
        let guest = try Guest(memory: memory.base, size: memory.size, configuration: config, logger: quietLogger)
        guest.start()
        sleepMs(500)
        let took = guest.pause()
        let steps = guest.totalSteps
        _ = guest.stop()
        #expect(took < 50_000_000)
        #expect((1...4).contains(steps), "\(steps) steps in 0.5 s at 5 pages/s")
    }
}

@Suite struct TraceTimingTests {
    /// Lines are written when the replay clock (running time only) reaches their t_ms; the trace
    /// then starts over, offset by its duration. Checked against the clock register at each
    /// pause, so the test does not depend on how long its own sleeps really take.
    @Test func traceLinesFollowTheRunningClockNotPausedTime() throws {
        let memory = AnonymousMemory(size: 64 * 4096)
        let config = try GuestConfiguration.make(
            vcpus: 1, workload: "trace:/inline", traceText: "# one page every 300 ms\n300 5\n",
            seed: 4, pageSize: 4096, pageCount: 64)
        let guest = try Guest(memory: memory.base, size: memory.size, configuration: config, logger: quietLogger)
        let lineNs: Int64 = 300_000_000
        var clock: Int64 = 0
        var resumedAt = Int64(MonotonicClock.now())
        guest.start()
        defer { _ = guest.stop() }
        for (runMs, pauseMs) in [(150, 0), (250, 400), (100, 0), (450, 0)] {
            sleepMs(runMs)
            guest.pause()
            let ran = Int64(MonotonicClock.now()) - resumedAt
            let state = guest.states()[0]
            // The clock advanced by the running time: never more (paused time does not count) ...
            #expect(
                state.creditNs - clock <= ran + 2_000_000,
                "clock advanced \(state.creditNs - clock) ns in \(ran) ns of running")
            // ... and not much less (the time up to the pause request counts).
            #expect(state.creditNs - clock >= Int64(runMs) * 1_000_000 / 2)
            clock = state.creditNs
            // Exactly the lines due by the clock are written; each pass is offset by 300 ms.
            #expect(Int64(state.step) == clock / lineNs, "\(state.step) steps at clock \(clock) ns")
            #expect(state.traceEpochMs == 300 * state.step)
            sleepMs(pauseMs)
            resumedAt = Int64(MonotonicClock.now())
            guest.resume()
        }
        #expect(clock > 800_000_000)
        #expect(memory.base.load(fromByteOffset: 5 * 4096 + 8, as: UInt64.self) == Mixing.hash(4, 0, 0).littleEndian)
    }
}
