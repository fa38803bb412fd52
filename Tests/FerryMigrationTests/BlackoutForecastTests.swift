import FerryMigration
import Testing

/// The blackout forecast part by part, and the misses a measured blackout is held to (issue 19,
/// item 4: the prediction covers everything the blackout contains, and the report names what
/// missed it).
@Suite struct BlackoutForecastTests {
    static let costs = BlackoutForecast.Costs(
        pauseSeconds: 0.001, harvestSeconds: 0.002, deviceStateReadSeconds: 0.0005, deviceStateBytes: 10_000,
        queuedBytes: 100_000, destinationVerifySeconds: 0.003, roundTripSeconds: 0.00025)

    /// 1 + 2 + 1200 pages at 10 000/s (120) + 0.5 + 10 KB at 40 MB/s (0.25) + 100 KB (2.5) + 3 + 0.5.
    static let forecast = BlackoutForecast(
        costs: costs, dirtyPages: 1000, stalePages: 200, pagesPerSecond: 10_000, bytesPerSecond: 40e6)

    @Test func everyPartAddsUp() {
        let f = Self.forecast
        #expect(f.finalPages == 1200 && f.stalePages == 200)
        #expect(abs(f.finalPagesMs - 120) < 1e-9)
        #expect(abs(f.deviceStateMs - 0.75) < 1e-9)
        #expect(abs(f.queuedMs - 2.5) < 1e-9)
        #expect(abs(f.roundTripsMs - 0.5) < 1e-9)
        #expect(abs(f.totalMs - 129.75) < 1e-9, "\(f.totalMs)")
        #expect(abs(Self.costs.fixedSeconds - 0.0070) < 1e-12)
    }

    @Test func pagesWithoutARateAreInfiniteAndNoPagesCostNothing() {
        let none = BlackoutForecast(
            costs: Self.costs, dirtyPages: 0, stalePages: 0, pagesPerSecond: 0, bytesPerSecond: 0)
        #expect(none.finalPagesMs == 0)
        #expect(!none.totalMs.isFinite, "100 KB queued at an unknown byte rate")
        let unknown = BlackoutForecast(
            costs: BlackoutForecast.Costs(pauseSeconds: 0.001), dirtyPages: 5, stalePages: 0, pagesPerSecond: 0,
            bytesPerSecond: 0)
        #expect(!unknown.totalMs.isFinite)
        let idle = BlackoutForecast(
            costs: BlackoutForecast.Costs(pauseSeconds: 0.001), dirtyPages: 0, stalePages: 0, pagesPerSecond: 0,
            bytesPerSecond: 0)
        #expect(idle.totalMs == 1)
    }

    /// The measured parts of a blackout that went as forecast.
    static var asForecast: DowntimeParts {
        var p = DowntimeParts()
        p.pauseVcpusMs = 1
        p.finalHarvestMs = 2
        p.finalSendMs = 110
        p.cpuStateMs = 0.7
        p.verifyMs = 16
        p.destinationVerifyMs = 3
        p.commitResumeMs = 0.4
        p.destinationResumeMs = 0.1
        return p
    }

    @Test func aBlackoutAsForecastMissesNothing() {
        #expect(Self.forecast.misses(Self.asForecast, downtimeMs: 129.5, finalPages: 1180).isEmpty)
    }

    @Test func aBurstAfterTheLastHarvestIsNamed() {
        var p = Self.asForecast
        p.finalSendMs = 480
        let misses = Self.forecast.misses(p, downtimeMs: 500, finalPages: 5000)
        #expect(misses.map(\.part) == ["total", "sending"], "\(misses)")
        #expect(misses[1].cause.contains("sent 5000 pages where 1200 were forecast"), "\(misses[1].cause)")
        #expect(misses[0].cause.contains("sending"))
        #expect(misses[1].predictedMs > 120 && misses[1].actualMs > 480)
    }

    @Test func aSlowLinkIsNamedWhenThePagesWereAsForecast() {
        var p = Self.asForecast
        p.verifyMs = 300
        let misses = Self.forecast.misses(p, downtimeMs: 420, finalPages: 1200)
        #expect(misses.map(\.part) == ["total", "sending"], "\(misses)")
        #expect(misses[1].cause.contains("took longer on the link"), "\(misses[1].cause)")
    }

    /// The handoff's round trip and the destination's resume are held apart: the resume is not
    /// forecast, so more than 1 ms of it is a miss of its own.
    @Test func theHandoffsRoundTripAndTheDestinationsResumeAreNamedApart() {
        var p = Self.asForecast
        p.commitResumeMs = 9
        p.destinationResumeMs = 8.5
        let resume = Self.forecast.misses(p, downtimeMs: 138, finalPages: 1200)
        #expect(resume.map(\.part) == ["destination_resume"], "\(resume)")
        #expect(resume[0].actualMs == 8.5 && resume[0].cause.contains("not forecast"), "\(resume)")
        p.destinationResumeMs = 0.5
        let trip = Self.forecast.misses(p, downtimeMs: 138, finalPages: 1200)
        #expect(trip.map(\.part) == ["commit_resume"] && trip[0].actualMs == 8.5, "\(trip)")
        #expect(trip[0].cause.contains("round trip"), "\(trip)")
    }

    /// A sub-millisecond part may double without being a miss: 1 ms of slack.
    @Test func smallPartsHaveSlack() {
        var p = Self.asForecast
        p.pauseVcpusMs = 1.9
        p.finalHarvestMs = 2.9
        #expect(Self.forecast.misses(p, downtimeMs: 131, finalPages: 1200).isEmpty)
        p.pauseVcpusMs = 2.1
        #expect(Self.forecast.misses(p, downtimeMs: 131, finalPages: 1200).map(\.part) == ["pause_vcpus"])
    }

    /// The policy's prediction is the forecast's total; pages the guest is expected to dirty
    /// after the harvest count even when the harvest found none (a quiet round of a guest that
    /// writes in bursts), and so does the device state at the measured byte rate.
    @Test func thePolicyPredictsTheForecastsTotal() throws {
        var policy = ConvergencePolicy(
            settings: ConvergenceSettings(downtimeTarget: .milliseconds(50)))
        let costs = BlackoutForecast.Costs(
            pauseSeconds: 0.001, harvestSeconds: 0.001, deviceStateBytes: 1_000_000, roundTripSeconds: 0.0005)
        // Round 0: 100 000 pages in 1 s, 200 MB on the wire.
        _ = policy.decide(
            RoundObservation(
                round: 0, pagesSent: 100_000, transferSeconds: 1, dirtyPages: 100, dirtySeconds: 1, elapsed: 1,
                costs: costs, throttlePercent: 0, wireBytes: 200_000_000))
        let quiet = policy.decide(
            RoundObservation(
                round: 1, pagesSent: 100, transferSeconds: 0.001, dirtyPages: 0, dirtySeconds: 0.01, elapsed: 1.1,
                costs: costs, throttlePercent: 0, dirtiedSinceHarvest: 4_000, wireBytes: 200_000))
        let forecast = try #require(quiet.forecast)
        #expect(forecast.stalePages == 4_000 && forecast.finalPages == 4_000)
        #expect(abs(forecast.finalPagesMs - 40) < 1e-6, "4 000 pages at the slowest rate, 100 000/s")
        #expect(abs(forecast.deviceStateMs - 5) < 1e-6, "1 MB at 200 MB/s")
        #expect(abs(quiet.predictedDowntime - forecast.totalSeconds) < 1e-12)
        #expect(quiet.action == .nextRound, "48 ms forecast exceeds 90% of 50 ms: \(quiet.reason)")
    }
}
