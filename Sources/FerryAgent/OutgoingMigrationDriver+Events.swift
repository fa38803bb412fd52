import FerrySystem
import FerryVMM
import Foundation
import Logging

/// Following the vmm's events (docs/vmm-control.md, "Events") and turning them into the
/// resource's figures and the migration's own events.
extension OutgoingMigrationDriver {
    /// Reads the watch connection until the outcome is recorded. A read that times out (no event
    /// for a while) is not an end: the vmm is asked whether it still answers. A connection that
    /// ends while the vmm answers is replaced; a vmm that accepts but does not answer (stopped,
    /// busy) is waited for; only one whose socket nobody listens on any more (the process is
    /// gone) before it said how the migration ended makes the outcome `unresolved` (the
    /// destination may run the guest).
    func follow(_ first: VMMControlClient) {
        var watch = first
        while !hasEnded {
            let started = MonotonicClock.now()
            do {
                apply(try watch.next())
                continue
            } catch {
                let waitedSeconds = Double(MonotonicClock.now() - started) / 1e9
                let snapshot: JSONValue
                do {
                    snapshot = try VMMControlClient(path: socketPath, timeoutSeconds: 5).call("migration")
                } catch  where error.code == .stale {
                    vanished()  // nothing listens: the process is gone
                    break
                } catch {
                    continue  // alive (stopped, busy) but not answering yet: keep following
                }
                if let migration = snapshot["migration"], migration != .null { absorb(migration, emit: true) }
                if waitedSeconds < Self.watchTimeoutSeconds * 0.8 {
                    // The connection ended, the process answers: watch again.
                    guard let fresh = try? VMMControlClient(path: socketPath, timeoutSeconds: Self.watchTimeoutSeconds),
                        (try? fresh.call("watch")) != nil
                    else { continue }
                    watch.close()
                    watch = fresh
                    if let state = snapshot["state"]?.stringValue { applyState(state, reason: nil) }
                }
            }
        }
        watch.close()
    }

    func apply(_ event: JSONValue) {
        switch event["event"]?.stringValue {
        case "progress":
            guard event["role"]?.stringValue != "destination", let migration = event["migration"] else { return }
            absorb(migration, emit: true)
        case "migration":
            if let migration = event["migration"] { absorb(migration, emit: false) }
        case "state":
            if let state = event["state"]?.stringValue { applyState(state, reason: event["reason"]?.stringValue) }
        default:
            break
        }
    }

    func applyState(_ state: String, reason: String?) {
        switch state {
        case "migrating-out":
            condition.withLock { sawMigratingOut = true }
        case "left":
            finish(.completed, location: "destination", error: nil)
        case "running", "paused":
            let (seen, phase) = condition.withLock { (sawMigratingOut, resource.phase) }
            guard seen else { return }
            finish(phase == "cancelled" ? .cancelled : .failed, location: "source", error: reason)
        case "unresolved":
            finish(.unresolved, location: "unknown", error: reason)
        default:
            break
        }
    }

    /// The vmm's `migration` object into the resource; with `emit`, the `phase`, `round` or
    /// `progress` event it amounts to.
    func absorb(_ migration: JSONValue, emit: Bool) {
        condition.withLock {
            guard !resource.status.isFinal else { return }
            let before = (resource.status, resource.phase)
            Self.copyFigures(migration, into: &resource)
            if resource.status == .setup, ["precopy", "reconnecting"].contains(resource.phase) {
                resource.status = .active
            }
            guard emit else { return }
            if before != (resource.status, resource.phase) { appendPhase() }
            let name: MigrationEvent.Name = migration["progress"]?.stringValue == "round-ended" ? .round : .progress
            events.append(name, data: resource.json)
        }
    }

    static func copyFigures(_ m: JSONValue, into r: inout MigrationResource) {
        if let phase = m["phase"]?.stringValue { r.phase = phase }
        if let value = m["round"]?.intValue { r.round = value }
        if let value = m["bytes_sent"]?.doubleValue { r.bytesTransferred = UInt64(value) }
        if let value = m["bytes_remaining"]?.doubleValue { r.bytesRemaining = UInt64(value) }
        if let value = m["dirty_bytes_per_s"]?.doubleValue { r.dirtyRateBytesPerSecond = value }
        if let value = m["send_bytes_per_s"]?.doubleValue { r.sendRateBytesPerSecond = value }
        r.expectedDowntimeMs = m["expected_downtime_ms"]?.doubleValue ?? r.expectedDowntimeMs
        if let value = m["throttle_percent"]?.doubleValue { r.throttlePercent = value }
        if let value = m["elapsed_s"]?.doubleValue { r.elapsedSeconds = value }
        r.etaSeconds = m["eta_s"]?.doubleValue
        if let value = m["error"]?.stringValue { r.error = value }
        if let value = m["rounds"]?.intValue { r.rounds = value }
        if let value = m["downtime_ms"]?.doubleValue { r.downtimeMs = value }
        if let value = m["total_ms"]?.doubleValue { r.totalTimeMs = value }
        if let value = m["setup_ms"]?.doubleValue { r.setupMs = value }
        if let value = m["guest_location"]?.stringValue { r.guestLocation = value }
        if let value = m["cpu_ms"]?.doubleValue { r.cpuMs = value }
        if let rounds = m["per_round"]?.arrayValue { r.perRound = rounds.compactMap(Self.round) }
    }

    /// One of the vmm's `per_round` entries; nil when a figure is missing.
    static func round(_ v: JSONValue) -> MigrationResource.Round? {
        guard let round = v["round"]?.intValue, let pages = v["pages"]?.intValue,
            let wire = v["wire_bytes"]?.doubleValue, let duration = v["duration_ms"]?.doubleValue,
            let sending = v["sending_ms"]?.doubleValue, let dirty = v["dirty_pages"]?.intValue
        else { return nil }
        return MigrationResource.Round(
            round: round, pages: pages, wireBytes: UInt64(wire), durationMs: duration, sendingMs: sending,
            dirtyPages: dirty, throttlePercent: v["throttle_percent"]?.intValue ?? 0,
            decision: v["decision"]?.stringValue ?? "")
    }

    /// The source vmm ended without saying how the migration ended.
    func vanished() {
        finish(
            .unresolved, location: "unknown",
            error:
                "the guest's ferry vmm at \(socketPath) vanished before it reported the migration's outcome; the guest runs on the destination only if the destination says so (ask it), else it is lost"
        )
    }

    /// Records the outcome once: the resource, a `phase` event and the `end` event.
    func finish(_ status: MigrationResource.Status, location: String, error: String?) {
        let ended = condition.withLock { () -> MigrationResource? in
            guard !resource.status.isFinal else { return nil }
            resource.status = status
            resource.endedAt = Date()
            resource.guestLocation = location
            if let error { resource.error = error }
            if ["starting", "precopy", "reconnecting"].contains(resource.phase) {
                resource.phase = status == .completed ? "completed" : status.rawValue
            }
            appendPhase()
            events.append(.end, data: resource.json)
            condition.broadcast()
            return resource
        }
        if let ended {
            onEnd?(ended)
            logger.info(
                "migration ended",
                metadata: [
                    "migration.id": "\(id)", "migration.status": "\(ended.status.rawValue)",
                    "migration.guest_location": "\(ended.guestLocation ?? "")",
                    "migration.error": "\(ended.error ?? "")",
                ])
        }
    }

    /// Under `condition`.
    func change(status: MigrationResource.Status) {
        resource.status = status
        appendPhase()
    }

    /// Under `condition`.
    func appendPhase() {
        let data = JSONValue.object(["status": .string(resource.status.rawValue), "phase": .string(resource.phase)])
        events.append(.phase, data: data.line)
    }
}
