import FerryHostModel
import FerryMigration
import FerryProtocol
import FerrySystem
import Foundation
import Logging

/// The operations that end the guest here or move it: shutdown, suspend, migrate, cancel.
extension VirtualMachineMonitor {
    /// Graceful: the vCPUs stop (waiting at most `timeout_ms`, default 10 s) and the disk gets its
    /// clean-shutdown record (`RunningGuest.shutdown`), the memory image is flushed, `stopped`
    /// is told, the response written, and the process exits 0.
    func shutdown(_ request: ControlRequest) throws(ControlFailure) -> Outcome {
        let timeoutMs = try request.number("timeout_ms", in: 1...3_600_000, integer: true) ?? 10_000
        return try serialized { () throws(ControlFailure) -> Outcome in
            let guest = try runningGuest()
            try transition(from: [.running, .paused], to: .stopping, for: "shutdown")
            try stopGracefully(guest, timeoutMs: Int(timeoutMs))
            do throws(VMMError) { try guest.flushMemory() } catch {
                throw ControlFailure(.failed, "shutdown: flushing the guest's memory failed: \(error)")
            }
            enter(.stopped, reason: "shutdown")
            return (
                ["state": "stopped", "vcpu_steps": .array(guest.stepsPerVCPU.map { JSONValue($0) })], { self.exit(0) }
            )
        }
    }

    /// Runs the guest's graceful stop on a thread of its own and waits for it: `timeoutMs`, plus
    /// 2 s for a KVM program given `timeoutMs` to halt to be stopped and its disk synced.
    private func stopGracefully(_ guest: RunningGuest, timeoutMs: Int) throws(ControlFailure) {
        let stopped = MonotonicCondition()
        nonisolated(unsafe) var outcome: Result<String?, any Error>?
        let console = self.console
        let thread = Thread {
            let result = Result { try guest.shutdown(timeoutSeconds: Double(timeoutMs) / 1000) }
            if case .success(let note?) = result { console.append("ferry vmm: shutdown: \(note)") }
            stopped.withLock {
                outcome = result
                stopped.broadcast()
            }
        }
        thread.start()
        let deadline = MonotonicClock.deadline(afterMilliseconds: timeoutMs + (guest.kind == .kvm ? 2000 : 0))
        let finished = stopped.withLock {
            while outcome == nil { if !stopped.wait(untilNanoseconds: deadline) { return outcome } }
            return outcome
        }
        guard let finished else {
            throw ControlFailure(
                .failed, "the guest's vCPUs did not stop within \(timeoutMs) ms; wait and ask status, or send kill")
        }
        if case .failure(let error) = finished {
            throw ControlFailure(.failed, "shutdown: the guest's disk could not be shut down cleanly: \(error)")
        }
    }

    /// Pauses the guest, writes its state to `STATE_DIR/GUEST_ID.suspend` beside its flushed
    /// image, and exits 0; `ferry vmm --restore FILE` continues it.
    func suspend() throws(ControlFailure) -> Outcome {
        try serialized { () throws(ControlFailure) -> Outcome in
            let guest = try runningGuest()
            let wasRunning = condition.withLock { state == .running }
            try transition(from: [.running, .paused], to: .suspending, for: "suspend")
            if wasRunning { _ = guest.migratable.pause() }
            do throws(ControlFailure) {
                let record = try suspendRecord(guest)
                do throws(VMMError) { try guest.flushMemory() } catch {
                    throw ControlFailure(.failed, "suspend: flushing the guest's memory failed: \(error)")
                }
                do throws(VMMError) { try record.write(to: configuration.suspendPath) } catch {
                    throw ControlFailure(.failed, error.message)
                }
            } catch {
                if wasRunning { guest.migratable.resume() }
                enter(wasRunning ? .running : .paused, reason: "suspend failed: \(error.message)")
                throw error
            }
            let steps = guest.migratable.stopForHandover()
            enter(.suspended, reason: "saved to \(configuration.suspendPath)")
            return (
                [
                    "state": "suspended", "file": .string(configuration.suspendPath),
                    "vcpu_steps": .array(steps.map { JSONValue($0) }),
                ],
                { self.exit(0) }
            )
        }
    }

    private func suspendRecord(_ guest: RunningGuest) throws(ControlFailure) -> SuspendRecord {
        guard let spec = condition.withLock({ specification }) else {
            throw ControlFailure(.wrongState, "no guest specification is known yet")
        }
        let sections: [DeviceStateSection]
        do { sections = try guest.migratable.deviceState() } catch {
            throw ControlFailure(.failed, "suspend: the guest's state could not be read: \(error)")
        }
        let description = guest.migratable.configuration
        return SuspendRecord(
            guestID: configuration.id, specification: spec, image: guest.mapping?.path ?? configuration.imagePath,
            guestKind: guest.migratable.guestKind, cpuStateFormat: guest.migratable.cpuStateFormat,
            seed: description.seed, parameters: description.parameters, deviceState: SuspendRecord.encode(sections),
            vcpuSteps: guest.stepsPerVCPU, suspendedAt: ISO8601DateFormatter().string(from: Date()))
    }

    /// Starts a live migration to `to` on a thread of its own and answers at once.
    func migrate(_ request: ControlRequest) throws(ControlFailure) -> JSONValue {
        let wanted = try MigrationRequest(request)
        let security = try wanted.security()
        return try serialized { () throws(ControlFailure) -> JSONValue in
            let guest = try runningGuest()
            let paused = condition.withLock { state == .paused }
            try transition(from: [.running, .paused], to: .migratingOut, for: "migrate")
            let name = condition.withLock { specification?.name.value ?? "" }
            var options = SourceOptions(
                destination: wanted.destination, settings: wanted.settings, compression: wanted.compression,
                guestName: name, name: Self.hostName(), maxBandwidth: wanted.maxBandwidthBytesPerSecond,
                streams: wanted.streams)
            options.security = security
            options.imageHoles = guest.mapping?.holes
            if let timeout = wanted.handoffTimeout { options.handoffTimeout = timeout }
            let migration = OutgoingMigration(destination: wanted.destination, guest: guest, paused: paused)
            condition.withLock { self.migration = migration }
            let imagePath = guest.mapping?.path ?? configuration.imagePath
            let chosen = options
            let thread = Thread { [self] in
                let result = migration.run(options: chosen, imagePath: imagePath, logger: logger) {
                    [weak self] status in
                    self?.broadcast("progress", ["role": "source", "migration": status])
                }
                migrationEnded(result, migration)
            }
            thread.name = "ferry-vmm-migrate"
            thread.start()
            return ["state": "migrating-out", "destination": .string("\(wanted.destination)")]
        }
    }

    /// Where the guest is after the migration decides what this process does next.
    private func migrationEnded(_ result: Result<MigrationReport, MigrationError>, _ migration: OutgoingMigration) {
        broadcast("migration", ["migration": migration.status()])
        switch result {
        case .success:
            left("handed over to \(migration.destination)")
        case .failure(let error):
            switch error.guest {
            case .source:
                let what = error.code == .cancelled ? "was cancelled" : "failed"
                enter(migration.paused ? .paused : .running, reason: "the migration \(what): \(error.message)")
            case .destination:
                left("the guest runs on \(migration.destination): \(error.message)")
            case .handedOverUnconfirmed, .notHere:
                enter(.unresolved, reason: error.message)
            case .lost:
                // Post-copy (not offered through the VMM yet): the paused copy must never resume.
                left("the guest is lost: \(error.message)")
            }
        }
    }

    /// The guest runs elsewhere now: tell the watchers, let a received guest's session end, exit 0.
    func left(_ reason: String) {
        condition.withLock { migration }?.engineGuest.completeDeferredStop()
        enter(.left, reason: reason)
        capture?.release()
        exit(0)
    }

    func migrationStatus() -> JSONValue {
        let (state, migration) = condition.withLock { (self.state, self.migration) }
        let figures: JSONValue = migration?.status() ?? .null
        return ["state": .string(state.rawValue), "migration": figures]
    }

    /// `cancel-migration`: honoured up to the engine's last point of cancel before COMMIT;
    /// after it `too_late` (the handoff decides where the guest ends up).
    func cancelMigration() throws(ControlFailure) -> JSONValue {
        guard let migration = condition.withLock({ migration }) else {
            throw ControlFailure(.wrongState, "no migration is under way to cancel")
        }
        let tooLate = ControlFailure(
            .tooLate,
            "the migration to \(migration.destination) is past its last point of cancel: COMMIT is written, the"
                + " guest belongs to the destination; it completes (or its handoff is resolved)")
        if migration.cancellation.isPastCommit || migration.hasCompleted { throw tooLate }
        guard migration.isActive else { throw ControlFailure(.wrongState, "no migration is under way to cancel") }
        let accepted = migration.cancellation.cancel("cancelled through the control socket")
        // Refused: cancelled already (the answer says so), or the engine passed COMMIT meanwhile.
        if !accepted && migration.cancellation.isPastCommit { throw tooLate }
        return ["cancelling": .bool(accepted), "note": "the guest stays here: the migration ends without a handoff"]
    }
}
