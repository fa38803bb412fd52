import FerryAgent
import FerryControl
import FerryHostModel
import Foundation

/// The cost model learns from the migrations a drain makes: each one's send rate (times the
/// migrations that shared the link), setup, wire ratio, and the guest's dirty rate.
extension HostDrainer {
    /// What the source's record of a completed migration says, in the model's terms. The rounds
    /// give the rates where they are recorded: bytes on the wire over the rounds' time (harvests and
    /// waits included: what one migration carries alone),
    /// pages dirtied over the time of the rounds. The fixed cost is everything of the move's
    /// `wallSeconds` outside the rounds: the agents' calls, the destination's preparation, the
    /// handoff and resume, the store's records (the engine's own `setup_ms` is a small part).
    static func observation(_ migration: MigrationResource, sharing: Int, wallSeconds: Double)
        -> MigrationObservation
    {
        let pageSize = 4096.0
        let rounds = migration.perRound ?? []
        let wire = rounds.reduce(UInt64(0)) { $0 + $1.wireBytes }
        let pages = rounds.reduce(0) { $0 + $1.pages }
        let dirtied = rounds.reduce(0) { $0 + $1.dirtyPages }
        let during = rounds.reduce(0.0) { $0 + $1.durationMs } / 1000
        let send = during > 0.001 && wire > 0 ? Double(wire) / during : migration.sendRateBytesPerSecond
        let dirty = during > 0.001 ? Double(dirtied) * pageSize / during : migration.dirtyRateBytesPerSecond
        return MigrationObservation(
            dirtyBytesPerSecond: dirty, sendBytesPerSecond: send, sharing: sharing,
            setupSeconds: rounds.isEmpty ? migration.setupMs.map { $0 / 1000 } : max(0, wallSeconds - during),
            memorySentBytes: pages > 0 ? Int64(Double(pages) * pageSize) : nil,
            wireBytes: wire > 0 ? Int64(wire) : nil, downtimeSeconds: migration.downtimeMs.map { $0 / 1000 })
    }

    /// A live move of `guest` out of `host` through the mover (to `destination`, or where the
    /// scheduler places it), whose completed migration is recorded for the cost model as one of
    /// `sharing` out of the host at once. The drain, the balancing pass and consolidation all move
    /// this way, so the cluster learns one model. Gives the guest where it went and its blackout
    /// (nil when the source kept no record of the migration); throws the mover's error.
    func moveMeasured(
        _ guest: GuestID, from host: String, to destination: String?, cause: String,
        options: MigrationRequest.Options? = nil, sharing: Int
    ) async throws(ControlError) -> (guest: CloudGuest, downtimeMs: Double?) {
        let started = ContinuousClock.now
        let moved = try await mover.move(guest, to: destination, cause: cause, options: options)
        guard let migration = mover.takeMeasurement(guest) else { return (moved, nil) }
        let wall = Self.seconds(ContinuousClock.now - started)
        record(Self.observation(migration, sharing: sharing, wallSeconds: wall), guest: guest, host: host)
        return (moved, migration.downtimeMs)
    }

    /// The drain's bound on migrations at once from the downtimes measured out of `host`
    /// (`DrainPlan.downtimeBound`, at the model's downtime target).
    func downtimeBound(_ host: String, model: MigrationCostModel) -> Int {
        let observations = measured.withLock { $0[host] ?? [] }.compactMap { observation in
            observation.downtimeSeconds.map { (sharing: observation.sharing, downtimeSeconds: $0) }
        }
        return DrainPlan.downtimeBound(observations, target: model.downtimeTarget, limit: maxConcurrency)
    }

    /// Keeps the observation for the host's model and the guest's dirty rate.
    func record(_ observation: MigrationObservation, guest: GuestID, host: String) {
        measured.withLock { measured in
            var list = measured[host] ?? []
            list.append(observation)
            measured[host] = Array(list.suffix(16))
        }
        if let dirty = observation.dirtyBytesPerSecond {
            dirtyRates.withLock { rates in
                if rates.count >= 4096 { rates.removeAll() }
                rates[guest] = dirty
            }
        }
    }
}

/// What the balancing pass takes from the drains' measurements (and gives back: its moves are
/// recorded here too, `record`), so the cluster learns one cost model.
extension HostDrainer {
    /// The configured link, calibrated by the migrations out of every host.
    func clusterModel() -> MigrationCostModel {
        let observations = measured.withLock { $0.values.flatMap { $0 } }
        return MigrationCostModel(linkBytesPerSecond: linkBytesPerSecond).calibrated(by: observations)
    }

    /// The dirty rate each guest's last migration measured, and their median (what a guest never
    /// measured counts at; nil before any).
    func measuredDirtyRates() -> (rates: [GuestID: Double], median: Double?) {
        let rates = dirtyRates.withLock { $0 }
        return (rates, MigrationCostModel.median(Array(rates.values)))
    }
}
