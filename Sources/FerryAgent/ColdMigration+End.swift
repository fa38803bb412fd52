import FerryHostModel
import FerryInventory
import FerrySystem
import FerryVMM
import Foundation
import Glibc

/// How a cold migration ends: the registration (the switch of owner), the power-on on the
/// destination, or the way back when it failed before the switch.
extension ColdMigration {
    /// Asks the destination to register the guest until it answers; never guesses. A refusal
    /// (a file it does not hold verified) fails the migration and the guest stays here.
    func register() {
        resource.withLock { $0.phase = Phase.registration.rawValue }
        save()
        let start = ContinuousClock.now
        var delay = 0.2
        while true {
            do {
                let answer = try client.registerIncoming(migrationID: id)
                guard answer.state == .arrived else {
                    fail(Failure(message: "the destination did not register the guest (\(answer.state.rawValue))"))
                    return
                }
                break
            } catch let error as AgentClientError where error.status != nil {
                fail(Failure(message: "the destination refused the registration: \(error.message)"))
                return
            } catch {
                host.logger.warning(
                    "cold migration registration unanswered; asking again",
                    metadata: ["migration.id": "\(id)", "error": "\(error)"])
                guard host.pause(delay) else { return }
                delay = min(delay * 2, 5)
            }
        }
        setPhaseTime(.registration, since: start)
        registered()
    }

    /// The destination owns the guest: this host's row goes, then its files (unless kept).
    func registered() {
        let files = offered.withLock { $0 }
        let placements = current.files ?? []
        for file in files { ExtendedAttribute.remove(path: file.sourcePath, name: HostMigrations.claimAttribute) }
        let cause = "cold-migrated to \(peer) (migration \(id))"
        do { _ = try host.guests.inventory.removeAfterHandoff(name, cause: cause, generation: nil) } catch {
            host.logger.error("handoff not recorded", metadata: ["guest.name": "\(name)", "guest.error": "\(error)"])
        }
        let moved = files.filter { file in placements.first { $0.name == file.name }?.shared != true }.map(\.sourcePath)
        let guestFiles = host.guests.files
        guestFiles.removeFiles(
            [guestFiles.socketPath(guestID), guestFiles.specPath(guestID), guestFiles.suspendPath(guestID)])
        if options.keepSource == true {
            resource.withLock { $0.retained = moved }
        } else {
            guestFiles.removeFiles(moved)
        }
        resource.withLock {
            $0.guestLocation = "destination"
            $0.phase = Phase.powerOn.rawValue
        }
        save()
        powerOn()
    }

    /// Starts the guest on the destination when it ran here (boots from its disk), resumes it when
    /// it was suspended; a stopped guest stays stopped unless `power_on`. Waits for the guest's
    /// first line from its disk (`disk: resumed …`) when it has a disk.
    func powerOn() {
        let start = ContinuousClock.now
        let action: String? =
            switch from {
            case .running, .paused: "start"
            case .suspended: "resume"
            default: options.powerOn == true ? "start" : nil
            }
        var problem: String?
        if let action {
            problem = startRemote(action)
            if problem == nil, !(current.files ?? []).isEmpty, from != .suspended {
                problem = waitForDiskLine()
            }
            setPhaseTime(.powerOn, since: start)
        }
        let interruption = interruptionStart.withLock { $0 }.map { Self.milliseconds(ContinuousClock.now - $0) }
        finish(status: .completed, error: problem.map { "the guest is the destination's; \($0)" }) {
            if action != nil, problem == nil { $0.interruptionMs = interruption }
        }
    }

    private func startRemote(_ action: String) -> String? {
        do {
            _ = try client.checked(try client.send("POST", "/v1/guests/\(name)/\(action)"))
            return nil
        } catch {
            return "its \(action) on the destination failed: \(error)"
        }
    }

    /// Polls the destination's console for the line that shows the guest read its disk.
    private func waitForDiskLine() -> String? {
        let deadline = ContinuousClock.now + .seconds(20)
        var since = 0
        while ContinuousClock.now < deadline {
            if let page = try? client.get("/v1/guests/\(name)/console?since=\(since)", as: ConsolePage.self) {
                if let line = page.lines.first(where: { $0.text.hasPrefix("disk: ") }) {
                    resource.withLock { $0.resumedLine = line.text }
                    return nil
                }
                since = page.next
            }
            usleep(5_000)
        }
        return "no line from its disk on the destination's console within 20 s"
    }

    /// Before the registration: the destination forgets the guest (best effort, on a thread),
    /// this host's row goes back to what it was, and a guest that ran is started again here.
    func fail(_ failure: Failure) {
        let files = offered.withLock { $0 }
        for file in files { ExtendedAttribute.remove(path: file.sourcePath, name: HostMigrations.claimAttribute) }
        abandonRemote()
        var error = failure.message
        if let problem = restoreHere() { error += "; \(problem)" }
        if !error.contains("stays here") { error += "; the guest stays on this host" }
        finish(status: failure.cancelled ? .cancelled : .failed, error: error) {
            $0.guestLocation = "source"
        }
    }

    private func abandonRemote() {
        let thread = Thread { [self] in
            for _ in 0..<20 {
                do {
                    try client.abandonIncoming(migrationID: id)
                    return
                } catch let error as AgentClientError where error.status == 404 {
                    return
                } catch {
                    usleep(500_000)
                }
            }
        }
        thread.name = "ferry-agent-abandon"
        thread.start()
    }

    /// The row back to `stopped` or `suspended`; a guest that ran boots again. What went wrong, if anything.
    private func restoreHere() -> String? {
        guard let record = try? host.guests.inventory.guest(named: name) else { return "its row is gone" }
        let back: GuestState = from == .suspended ? .suspended : .stopped
        do {
            var restored = record
            if record.state == .stopping {
                // The agent died in the shutdown: the vmm finishes it (flushed, exits) by itself.
                if let facts = record.process, !GuestProcess.waitUntilGone(facts, timeout: .seconds(15)) {
                    return "its vmm \(facts.pid) is still stopping"
                }
                restored = try host.guests.transition(
                    record, to: .stopped, "cold migration \(id): the shutdown ended while the agent was down")
            }
            if record.state == .migratingOut {
                restored = try host.guests.transition(record, to: back, "cold migration \(id) failed: back as it was")
            }
            if restored.state == .stopped, from == .running || from == .paused {
                _ = try host.guests.launchClaimed(
                    restored, .boot, "cold migration \(id) failed: the guest is started again here")
            }
            return nil
        } catch {
            return "putting it back failed: \(error.message)"
        }
    }

    /// Records the end once, releases the guest and tells the metrics.
    func finish(
        status: MigrationResource.Status, error: String?, _ change: (inout MigrationResource) -> Void = { _ in }
    ) {
        let final = resource.withLock { resource -> MigrationResource in
            resource.status = status
            resource.phase = status.rawValue
            resource.endedAt = Date()
            resource.totalTimeMs = resource.endedAt!.timeIntervalSince(resource.startedAt) * 1000
            resource.error = error
            change(&resource)
            return resource
        }
        save()
        let record = MigrationRecords.Outgoing(
            resource: final, guestID: guestID, coldFrom: from, coldFiles: offered.withLock { $0 }, coldOptions: options)
        host.state.withLock { $0.outgoing[id] = record }
        host.guests.release(name)
        host.recordFinished(final, direction: .outgoing)
        host.logger.notice(
            "cold migration ended",
            metadata: ["migration.id": "\(id)", "migration.status": "\(status.rawValue)", "error": "\(error ?? "")"])
    }

    private func setPhaseTime(_ phase: Phase, since start: ContinuousClock.Instant) {
        resource.withLock { $0.phasesMs?[phase.rawValue] = Self.milliseconds(ContinuousClock.now - start) }
    }
}
