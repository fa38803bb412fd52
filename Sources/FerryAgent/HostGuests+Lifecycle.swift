import FerryHostModel
import FerryInventory
import FerryVMM
import Foundation
import Glibc

/// Start, stop, suspend, resume and the console: each one operation of one guest, driving its
/// `ferry vmm` through the control socket and recording every change in the inventory.
extension HostGuests {
    public func start(_ name: GuestName) throws(AgentAPIError) -> GuestRecord {
        try exclusively(name, "start") { () throws(AgentAPIError) -> GuestRecord in
            let record = try require(name)
            guard [.defined, .stopped, .crashed].contains(record.state) else {
                let hint =
                    record.state == .suspended
                    ? "resume it (POST /v1/guests/\(name)/resume)" : "start takes a defined, stopped or crashed guest"
                throw AgentAPIError(.conflict, .conflict, "guest \(name) is \(record.state.rawValue): \(hint)")
            }
            if let answer = GuestProcess.hello(socket: files.socketPath(record.id)), answer.id == record.id {
                throw AgentAPIError(
                    .conflict, .conflict,
                    "guest \(name) is \(record.state.rawValue) but its process \(answer.facts.pid) still answers; the"
                        + " agent adopts it within seconds (GET /v1/guests/\(name))")
            }
            let starting = try transition(record, to: .starting, "start requested through the API")
            return try launch(starting, .boot)
        }
    }

    /// Boots (`.boot`) or restores (`.restore`) a guest its caller has claimed (a cold migration
    /// putting it back as it was): `stopped` or `suspended` → `starting` → `running`.
    func launchClaimed(_ record: GuestRecord, _ how: GuestProcess.Launch, _ cause: String) throws(AgentAPIError)
        -> GuestRecord
    {
        try launch(try transition(record, to: .starting, cause), how)
    }

    /// Starts the process of a guest in `starting` and records it `running`; a launch that fails
    /// leaves it `stopped` with the failure as the cause.
    private func launch(_ starting: GuestRecord, _ how: GuestProcess.Launch) throws(AgentAPIError) -> GuestRecord {
        let facts: ProcessFacts
        do {
            facts = try GuestProcess.launch(starting, how, files: files)
        } catch {
            if let answer = GuestProcess.hello(socket: files.socketPath(starting.id)), answer.id == starting.id {
                facts = answer.facts
            } else {
                _ = try? transition(starting, to: .stopped, "start failed: \(error.message)")
                throw error
            }
        }
        let recorded = try Self.inventoryCall { () throws(InventoryError) in
            try inventory.recordProcess(starting.name, facts, generation: starting.generation)
        }
        let running = try transition(
            recorded, to: .running, "ferry vmm process \(facts.pid) answers on \(facts.controlSocket)")
        watches.open(running, owner: self)
        return running
    }

    /// Stops gracefully (the vmm's `shutdown`: vCPUs stop, image and disks flushed) within
    /// `timeout`; then, with `force`, kills the process; without, the guest runs on and 409 says so.
    public func stop(_ name: GuestName, timeout: Duration, force: Bool) throws(AgentAPIError) -> GuestRecord {
        try exclusively(name, "stop") { () throws(AgentAPIError) -> GuestRecord in
            try stopClaimed(try require(name), timeout: timeout, force: force, why: "stop requested through the API")
        }
    }

    /// The stop of a guest its caller has claimed (the API's stop, a cold migration's shutdown).
    func stopClaimed(_ record: GuestRecord, timeout: Duration, force: Bool, why: String) throws(AgentAPIError)
        -> GuestRecord
    {
        let name = record.name
        guard [.running, .paused].contains(record.state), let facts = record.process else {
            throw AgentAPIError(
                .conflict, .conflict,
                "guest \(name) is \(record.state.rawValue): stop takes a running or paused guest")
        }
        let seconds = timeout.components.seconds
        let stopping = try transition(record, to: .stopping, "\(why) (timeout \(seconds) s, force \(force))")
        let failure = shutdown(facts, timeout: timeout)
        if failure == nil, GuestProcess.waitUntilGone(facts, timeout: .seconds(10)) {
            return try transition(
                stopping, to: .stopped,
                "graceful shutdown: vCPUs stopped, memory and disks flushed;"
                    + " process \(facts.pid) exited")
        }
        let why = failure ?? "process \(facts.pid) did not exit after its shutdown"
        if !GuestProcess.isRunning(facts) {
            return try transition(stopping, to: .stopped, "process \(facts.pid) ended during the stop (\(why))")
        }
        guard force else {
            _ = try transition(stopping, to: .running, "graceful stop failed: \(why); left running")
            throw AgentAPIError(
                .conflict, .conflict,
                "guest \(name) did not stop within \(seconds) s (\(why)); it runs on: stop it with force to kill it"
            )
        }
        kill(facts)
        guard GuestProcess.waitUntilGone(facts, timeout: .seconds(10)) else {
            throw GuestProcess.failed("guest \(name): process \(facts.pid) survived SIGKILL; it stays stopping")
        }
        return try transition(stopping, to: .stopped, "forced stop: \(why); process \(facts.pid) killed")
    }

    /// The vmm's `shutdown`; nil when it answered stopped, else why not.
    private func shutdown(_ facts: ProcessFacts, timeout: Duration) -> String? {
        let milliseconds = Int(timeout.components.seconds) * 1000
        do throws(VMMError) {
            let client = try VMMControlClient(
                path: facts.controlSocket, timeoutSeconds: Double(timeout.components.seconds) + 3)
            defer { client.close() }
            try client.call("shutdown", ["timeout_ms": JSONValue(milliseconds)])
            return nil
        } catch {
            return error.message
        }
    }

    /// Kills the guest's process: `kill` on its socket, SIGKILL if it does not answer (only the
    /// process with the recorded PID and start time).
    private func kill(_ facts: ProcessFacts) {
        if let client = try? VMMControlClient(path: facts.controlSocket, timeoutSeconds: 2) {
            _ = try? client.call("kill")
            client.close()
        }
        if !GuestProcess.waitUntilGone(facts, timeout: .seconds(2)), GuestProcess.isRunning(facts) {
            Glibc.kill(facts.pid, SIGKILL)
        }
    }

    /// Saves memory and device state to `guests/ID.suspend` (the vmm's `suspend`); the process exits.
    public func suspend(_ name: GuestName) throws(AgentAPIError) -> GuestRecord {
        try exclusively(name, "suspend") { () throws(AgentAPIError) -> GuestRecord in
            let record = try require(name)
            guard [.running, .paused].contains(record.state), let facts = record.process else {
                throw AgentAPIError(
                    .conflict, .conflict,
                    "guest \(name) is \(record.state.rawValue): suspend takes a running or paused guest")
            }
            do throws(VMMError) {
                let client = try VMMControlClient(path: facts.controlSocket, timeoutSeconds: 300)
                defer { client.close() }
                try client.call("suspend")
            } catch {
                throw GuestProcess.failed(
                    "guest \(name) was not suspended: \(error.message); it is still \(record.state)")
            }
            _ = GuestProcess.waitUntilGone(facts, timeout: .seconds(10))
            return try transition(record, to: .suspended, "suspended to \(files.suspendPath(record.id))")
        }
    }

    /// Runs a suspended guest again (`ferry vmm --restore`) or a paused one (the vmm's `resume`).
    public func resume(_ name: GuestName) throws(AgentAPIError) -> GuestRecord {
        try exclusively(name, "resume") { () throws(AgentAPIError) -> GuestRecord in
            let record = try require(name)
            switch record.state {
            case .suspended:
                guard access(files.suspendPath(record.id), R_OK) == 0 else {
                    throw AgentAPIError(
                        .conflict, .conflict,
                        "guest \(name) is suspended but \(files.suspendPath(record.id)) is missing; it cannot be"
                            + " resumed: stop it, then start it afresh")
                }
                let starting = try transition(record, to: .starting, "resume requested: restoring the suspended guest")
                return try launch(starting, .restore)
            case .paused:
                guard let facts = record.process else { throw GuestProcess.failed("guest \(name) has no process") }
                do throws(VMMError) {
                    let client = try VMMControlClient(path: facts.controlSocket, timeoutSeconds: 30)
                    defer { client.close() }
                    try client.call("resume")
                } catch {
                    throw GuestProcess.failed("guest \(name) was not resumed: \(error.message)")
                }
                return try transition(record, to: .running, "resume requested through the API")
            default:
                throw AgentAPIError(
                    .conflict, .conflict,
                    "guest \(name) is \(record.state.rawValue): resume takes a suspended or paused guest")
            }
        }
    }

    /// The console's lines after `since` (the vmm's `console`): `lines`, `next`, `dropped`.
    public func console(_ name: GuestName, since: Int, limit: Int) throws(AgentAPIError) -> JSONValue {
        let record = try require(name)
        guard record.state.hasProcess, let facts = record.process else {
            throw AgentAPIError(
                .conflict, .conflict,
                "guest \(name) is \(record.state.rawValue): its console is there while its process runs; start it")
        }
        do throws(VMMError) {
            let client = try VMMControlClient(path: facts.controlSocket, timeoutSeconds: 10)
            defer { client.close() }
            return try client.call("console", ["since": JSONValue(since), "limit": JSONValue(limit)])
        } catch {
            throw GuestProcess.failed("guest \(name): the console could not be read: \(error.message)")
        }
    }

    /// A checked transition of `record` (at its generation), journaled with `cause`.
    func transition(_ record: GuestRecord, to next: GuestState, _ cause: String) throws(AgentAPIError)
        -> GuestRecord
    {
        try Self.inventoryCall { () throws(InventoryError) in
            try inventory.transition(
                record.name, from: record.state, to: next, cause: cause, generation: record.generation)
        }
    }
}
