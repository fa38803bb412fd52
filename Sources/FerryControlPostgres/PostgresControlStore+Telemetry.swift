import FerryControl
import FerryHostModel
import PostgresNIO

extension PostgresControlStore {
    /// One statement (`unnest` of the columns as arrays), in its own implicit transaction, without
    /// the advisory lock that creates and transitions take.
    public func recordSamples(_ samples: [GuestSampleRow]) async throws(ControlError) {
        guard !samples.isEmpty else { return }
        let ids = samples.map(\.guestID.hex)
        let times = samples.map(\.sample.timeMilliseconds)
        let cpu = samples.map { Int64(clamping: $0.sample.cpuNanoseconds) }
        let vcpus = samples.map { Int64($0.sample.vcpus) }
        // No NULL inside a bound array here: -1 stands for "the guest published no load".
        let loads = samples.map { Int64($0.sample.loadPermille ?? -1) }
        _ = try await reading("record \(samples.count) telemetry samples in") { connection in
            try await connection.query(
                """
                INSERT INTO guest_samples (guest_id, time_ms, cpu_ns, vcpus, load_permille)
                SELECT g, t, c, v, NULLIF(l, -1) FROM unnest(\(ids)::text[], \(times)::bigint[], \(cpu)::bigint[],
                \(vcpus)::bigint[], \(loads)::bigint[]) AS u(g, t, c, v, l)
                ON CONFLICT DO NOTHING
                """, logger: logger)
        }
    }

    public func samples(guests: [GuestID], sinceMilliseconds: Int64) async throws(ControlError)
        -> [GuestID: [GuestSample]]
    {
        guard !guests.isEmpty else { return [:] }
        let ids = guests.map(\.hex)
        let url = self.url
        let rows = try await reading("read telemetry samples from") { connection in
            try await PostgresRows.all(
                connection,
                """
                SELECT guest_id, time_ms, cpu_ns, vcpus, load_permille FROM guest_samples
                WHERE guest_id = ANY(\(ids)::text[]) AND time_ms >= \(sinceMilliseconds) ORDER BY guest_id, time_ms
                """, logger: logger
            ) { row -> (GuestID, GuestSample) in
                guard let id = try? GuestID(try row["guest_id"].decode(String.self)) else {
                    throw ControlError(.unusableDatabase, "control store \(url): a telemetry sample has a bad guest ID")
                }
                let cpu = try row["cpu_ns"].decode(Int64.self)
                return (
                    id,
                    GuestSample(
                        timeMilliseconds: try row["time_ms"].decode(Int64.self), cpuNanoseconds: UInt64(max(0, cpu)),
                        vcpus: Int(try row["vcpus"].decode(Int64.self)),
                        loadPermille: try row["load_permille"].decode(Int64?.self).map(Int.init))
                )
            }
        }
        return Dictionary(grouping: rows, by: \.0).mapValues { $0.map(\.1) }
    }

    public func pruneSamples(beforeMilliseconds: Int64) async throws(ControlError) -> Int {
        try await reading("prune telemetry samples in") { connection in
            try await PostgresRows.all(
                connection,
                """
                WITH gone AS (DELETE FROM guest_samples WHERE time_ms < \(beforeMilliseconds) RETURNING 1)
                SELECT count(*) AS n FROM gone
                """, logger: logger
            ) { row in Int(try row["n"].decode(Int64.self)) }.first ?? 0
        }
    }
}
