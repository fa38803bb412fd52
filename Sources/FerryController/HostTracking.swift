import FerryControl
import FerryHostModel
import Foundation
import Logging

/// The controller's view of its hosts: each heartbeat registers or refreshes its host with the
/// health it reports and settles the host's unknown guests (`HostReportDecision`); a pass every
/// second finds hosts silent for longer than the timeout and makes their live guests unknown.
/// Nothing here deletes a guest or starts one elsewhere: a silent host's guests may still run.
///
/// A heartbeat that turns its host `failing` (its hardware's signals, `HostHeartbeat.signals`)
/// quarantines it: the store keeps when, and the deadline; the scheduler, moves and leases leave
/// it out (`HostRecord.takesGuests`); the quarantine is logged at warning with the reason and
/// the deadline, and `onQuarantine` is called once with the host (the evacuation starts there).
/// A later report that is not failing releases it (logged at notice).
final class HostTracking: Sendable {
    let store: any ControlStore
    let heartbeatTimeout: Duration
    let clock: @Sendable () -> Date
    /// When this controller began watching: hosts are not silent for the time it was down.
    let started: Date
    let logger: Logger

    /// Called after a heartbeat's telemetry was recorded (the scaler looks at once).
    let onTelemetry: @Sendable () -> Void
    /// Called once when a heartbeat turns its host failing (the store's transaction that records
    /// it saw the host not failing before), with the host as recorded: quarantined since now, its
    /// `evacuateBy` set.
    let onQuarantine: @Sendable (HostRecord) -> Void

    init(
        store: any ControlStore, heartbeatTimeout: Duration, clock: @escaping @Sendable () -> Date = { Date() },
        logger: Logger, onQuarantine: @escaping @Sendable (HostRecord) -> Void = { _ in },
        onTelemetry: @escaping @Sendable () -> Void = {}
    ) {
        self.onTelemetry = onTelemetry
        self.onQuarantine = onQuarantine
        self.store = store
        self.heartbeatTimeout = heartbeatTimeout
        self.clock = clock
        self.started = clock()
        self.logger = logger
    }

    /// One heartbeat: the host as it reports itself now, then its unknown guests settled.
    func receive(_ heartbeat: HostHeartbeat) async throws(ControlError) {
        let capacity = Resources(
            vcpus: heartbeat.vcpus, memoryBytes: heartbeat.memoryBytes, diskBytes: heartbeat.diskBytes)
        let change = try await store.reportHost(
            HostRegistration(
                id: heartbeat.hostID, address: heartbeat.agentURL, capacity: capacity, kvm: heartbeat.kvm,
                healthReport: Self.healthReport(heartbeat),
                power: heartbeat.power.map { $0 == .standby ? HostPower.standby : .on }))
        noteQuarantine(change)
        try await recordTelemetry(heartbeat)
        // A guest that is moving is settled by its move (GuestMover), not by one host's report.
        let unknown = try await store.guests(host: heartbeat.hostID, states: [.unknown]).filter { $0.movingTo == nil }
        guard !unknown.isEmpty else { return }
        for change in HostReportDecision.changes(
            host: heartbeat.hostID, controllerGuests: unknown, reported: heartbeat.guests)
        {
            _ = try await store.transition(
                change.id, from: change.from, to: change.to, cause: change.cause, errorReason: change.errorReason,
                generation: nil)
            logger.notice(
                "a guest of a host that was silent is \(change.to.rawValue)",
                metadata: ["guest.id": "\(change.id)", "guest.host": "\(heartbeat.hostID)"])
        }
    }

    /// The host's health as a heartbeat reports it: failing hardware first (quarantine), then the
    /// agent's own checks (degraded), then a hardware warning; each reason named, the others'
    /// added. A heartbeat without signals (no health directory, an older agent) has healthy
    /// hardware.
    static func healthReport(_ heartbeat: HostHeartbeat) -> HostHealthReport {
        let signals = heartbeat.signals ?? HostHeartbeat.Signals(state: .healthy, reason: "")
        let agent = heartbeat.healthy ? nil : "the agent's checks failed: \(heartbeat.healthDetail)"
        switch signals.state {
        case .failing:
            return HostHealthReport(
                .failing, reason: [signals.reason, agent].compactMap { $0 }.joined(separator: "; "),
                evacuateWithinSeconds: signals.evacuateWithinSeconds)
        case .warning:
            guard let agent else { return HostHealthReport(.warning, reason: signals.reason) }
            return HostHealthReport(.degraded, reason: "\(agent); \(signals.reason)")
        case .healthy:
            guard let agent else { return HostHealthReport(.healthy) }
            return HostHealthReport(.degraded, reason: agent)
        }
    }

    /// Logs a quarantine (and calls `onQuarantine`) or a release.
    private func noteQuarantine(_ change: HostHealthChange) {
        let host = change.host
        if change.quarantined {
            let deadline = host.evacuateBy.map { CloudViews.time($0) } ?? "none"
            logger.warning(
                "host quarantined: \(host.healthReason); its guests should be gone by \(deadline)",
                metadata: [
                    "host.id": "\(host.id)", "host.health_reason": "\(host.healthReason)",
                    "host.evacuate_by": "\(deadline)",
                ])
            onQuarantine(host)
        } else if change.released {
            logger.notice(
                "host leaves quarantine: it reports \(host.health.rawValue)",
                metadata: ["host.id": "\(host.id)", "host.health_reason": "\(host.healthReason)"])
        }
    }

    /// How long telemetry samples are kept.
    static let sampleRetentionMilliseconds: Int64 = 15 * 60_000

    /// The counters the heartbeat brought for guests the controller has running or building on
    /// that host (a host reports counters of running guests only; the controller's row of a build
    /// the host has just finished may still say building, and an early heartbeat sent on the
    /// change must not be lost for it). Others, such as a guest being deleted, are not kept.
    private func recordTelemetry(_ heartbeat: HostHeartbeat) async throws(ControlError) {
        let measured = heartbeat.guests.filter { $0.telemetry != nil && $0.state == .running }
        guard !measured.isEmpty else { return }
        let running = Set(try await store.guests(host: heartbeat.hostID, states: [.running, .building]).map(\.id))
        let now = Billing.milliseconds(clock())
        let rows = measured.compactMap { guest -> GuestSampleRow? in
            guard running.contains(guest.id), let telemetry = guest.telemetry, telemetry.vcpus > 0 else { return nil }
            return GuestSampleRow(
                guestID: guest.id,
                sample: GuestSample(
                    timeMilliseconds: now, cpuNanoseconds: telemetry.cpuNanoseconds, vcpus: telemetry.vcpus,
                    loadPermille: telemetry.loadPermille.map { min(1000, max(0, $0)) }))
        }
        try await store.recordSamples(rows)
        if !rows.isEmpty { onTelemetry() }
    }

    /// Drops samples older than the retention.
    func pruneSamples() async throws(ControlError) {
        let now = Billing.milliseconds(clock())
        _ = try await store.pruneSamples(beforeMilliseconds: now - Self.sampleRetentionMilliseconds)
    }

    /// One pass: the live guests of every host silent for longer than the timeout (since this
    /// controller started, at least) become unknown.
    func markSilentHosts() async throws(ControlError) {
        let now = clock()
        for host in try await store.hosts() {
            guard let silent = host.silence(at: now, watchingSince: started, timeout: heartbeatTimeout) else {
                continue
            }
            for guest in try await store.guests(host: host.id, states: [.building, .running, .stopping]) {
                do {
                    _ = try await store.transition(
                        guest.id, from: guest.state, to: .unknown,
                        cause: "host \(host.id) silent for \(Int(silent)) s (no heartbeat)", errorReason: nil,
                        generation: guest.generation)
                    logger.warning(
                        "a guest's host is silent: the guest is unknown",
                        metadata: ["guest.id": "\(guest.id)", "guest.host": "\(host.id)"])
                } catch  where error.code == .stale {
                    continue  // changed meanwhile; the next pass looks again
                }
            }
        }
    }

    /// Passes every `interval` until the task is cancelled.
    func watch(every interval: Duration) async {
        var passes = 0
        while !Task.isCancelled {
            do { try await markSilentHosts() } catch {
                logger.error("looking for silent hosts failed: \(error)")
            }
            passes += 1
            if passes % 60 == 0 {
                do { try await pruneSamples() } catch { logger.error("pruning telemetry samples failed: \(error)") }
            }
            try? await Task.sleep(for: interval)
        }
    }
}
