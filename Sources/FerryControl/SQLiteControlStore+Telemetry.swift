import FerryHostModel
import GRDB

extension SQLiteControlStore {
    public func recordSamples(_ samples: [GuestSampleRow]) async throws(ControlError) {
        guard !samples.isEmpty else { return }
        try await writing("record \(samples.count) telemetry samples in") { db in
            let statement = try db.cachedStatement(
                sql: """
                    INSERT OR IGNORE INTO guest_samples (guest_id, time_ms, cpu_ns, vcpus, load_permille)
                    VALUES (?, ?, ?, ?, ?)
                    """)
            for row in samples {
                try statement.execute(arguments: [
                    row.guestID.hex, row.sample.timeMilliseconds, Int64(clamping: row.sample.cpuNanoseconds),
                    row.sample.vcpus, row.sample.loadPermille,
                ])
            }
        }
    }

    public func samples(guests: [GuestID], sinceMilliseconds: Int64) async throws(ControlError)
        -> [GuestID: [GuestSample]]
    {
        guard !guests.isEmpty else { return [:] }
        let path = self.path
        return try await reading("read telemetry samples from") { db in
            let marks = Array(repeating: "?", count: guests.count).joined(separator: ", ")
            var arguments = StatementArguments(guests.map(\.hex))
            arguments += [sinceMilliseconds]
            var result: [GuestID: [GuestSample]] = [:]
            for row in try Row.fetchAll(
                db,
                sql: """
                    SELECT guest_id, time_ms, cpu_ns, vcpus, load_permille FROM guest_samples
                    WHERE guest_id IN (\(marks)) AND time_ms >= ? ORDER BY guest_id, time_ms
                    """, arguments: arguments)
            {
                guard let id = try? GuestID(row["guest_id"] as String) else {
                    throw ControlError(
                        .unusableDatabase, "control store \(path): a telemetry sample has a bad guest ID")
                }
                let cpu: Int64 = row["cpu_ns"]
                result[id, default: []].append(
                    GuestSample(
                        timeMilliseconds: row["time_ms"], cpuNanoseconds: UInt64(max(0, cpu)), vcpus: row["vcpus"],
                        loadPermille: row["load_permille"]))
            }
            return result
        }
    }

    public func pruneSamples(beforeMilliseconds: Int64) async throws(ControlError) -> Int {
        try await writing("prune telemetry samples in") { db in
            try db.execute(sql: "DELETE FROM guest_samples WHERE time_ms < ?", arguments: [beforeMilliseconds])
            return db.changesCount
        }
    }
}
