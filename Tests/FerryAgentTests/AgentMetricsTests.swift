import FerryTestSupport
import Testing

@testable import FerryAgent

/// The guest and migration series appear only once recorded, with the labels documented.
struct AgentMetricsTests {
    @Test func seriesAppearWhenRecorded() throws {
        let metrics = AgentMetrics()
        #expect(metrics.text().isEmpty)
        metrics.recordGuests([.running: 2, .stopped: 1])
        metrics.recordMigrationsInFlight(1, direction: .outgoing)
        metrics.recordMigrationFinished(
            direction: .outgoing, outcome: "completed", downtime: .milliseconds(3), totalTime: .seconds(2),
            bytesSent: 1000)
        metrics.recordDisks(provisionedBytes: 4096, allocatedBytes: 512)
        let samples = try PrometheusText.parse(metrics.text())
        #expect(samples[AgentMetrics.Name.guests, ["state": "running"]] == 2)
        #expect(samples[AgentMetrics.Name.guests, ["state": "crashed"]] == 0)
        #expect(samples[AgentMetrics.Name.migrationsInFlight, ["direction": "out"]] == 1)
        #expect(samples[AgentMetrics.Name.migrationsFinished, ["direction": "out", "outcome": "completed"]] == 1)
        #expect(samples[AgentMetrics.Name.migrationBytesSent, [:]] == 1000)
        #expect(samples[AgentMetrics.Name.migrationDowntime + "_count", [:]] == 1)
        #expect(samples[AgentMetrics.Name.migrationDowntime + "_sum", [:]] == 0.003)
        #expect(samples[AgentMetrics.Name.migrationTotalTime + "_bucket", ["le": "2.5"]] == 1)
        #expect(samples[AgentMetrics.Name.diskBytes, ["kind": "allocated"]] == 512)
    }
}
