import FerryHostModel
import FerryMigration
import Foundation
import Glibc

/// The control protocol's operations (docs/vmm-control.md), one method each. Lifecycle changes
/// (pause, resume, shutdown, suspend, migrate, cancel) run one at a time (`operations`).
extension VirtualMachineMonitor {
    typealias Outcome = (result: JSONValue, after: (() -> Void)?)

    static let operationNames = [
        "hello", "status", "pause", "resume", "shutdown", "kill", "console", "suspend", "migrate", "migration",
        "cancel-migration", "watch", "resolve", "set-pace",
    ]

    func handle(_ line: String, from connection: UnixLineConnection) -> ControlAnswer {
        let request: ControlRequest
        do { request = try ControlRequest(line: line) } catch {
            return ControlAnswer(line: error.response(id: .null))
        }
        do {
            let outcome = try perform(request, from: connection)
            return ControlAnswer(line: successLine(id: request.id, outcome.result), after: outcome.after)
        } catch {
            return ControlAnswer(line: error.response(id: request.id))
        }
    }

    private func perform(_ request: ControlRequest, from connection: UnixLineConnection) throws(ControlFailure)
        -> Outcome
    {
        switch request.op {
        case "hello": return (hello(), nil)
        case "status": return (status(), nil)
        case "pause": return (try pause(), nil)
        case "resume": return (try resume(), nil)
        case "shutdown": return try shutdown(request)
        case "kill": return kill()
        case "console": return (try consoleLines(request), nil)
        case "suspend": return try suspend()
        case "migrate": return (try migrate(request), nil)
        case "migration": return (migrationStatus(), nil)
        case "cancel-migration": return (try cancelMigration(), nil)
        case "resolve": return try resolve(request)
        case "set-pace": return (try setPace(request), nil)
        case "watch":
            addWatcher(connection)
            return (["state": .string(condition.withLock { state.rawValue })], nil)
        default:
            throw ControlFailure(
                .badRequest, field: "op",
                "unknown operation \"\(request.op)\"; one of \(Self.operationNames.joined(separator: ", "))")
        }
    }

    /// Moves from one of `allowed` to `next` (told to the watchers), or explains why not.
    func transition(from allowed: Set<VMMState>, to next: VMMState, for op: String) throws(ControlFailure) {
        let current = condition.withLock { state }
        guard allowed.contains(current) else {
            throw ControlFailure(
                .wrongState,
                "\(op) needs the guest \(allowed.map(\.rawValue).sorted().joined(separator: " or ")); it is \(current.rawValue)"
            )
        }
        enter(next)
    }

    /// Runs `body` while no other lifecycle operation runs.
    func serialized<T>(_ body: () throws(ControlFailure) -> T) throws(ControlFailure) -> T {
        let result: Result<T, ControlFailure> = operations.withLock {
            do throws(ControlFailure) { return .success(try body()) } catch { return .failure(error) }
        }
        return try result.get()
    }

    func runningGuest() throws(ControlFailure) -> RunningGuest {
        guard let guest = condition.withLock({ guest }) else {
            throw ControlFailure(.wrongState, "no guest runs here yet (it is \(condition.withLock { state.rawValue }))")
        }
        return guest
    }

    func hello() -> JSONValue {
        condition.withLock {
            var fields: [String: JSONValue] = [:]
            fields["protocol"] = JSONValue(ControlProtocol.version)
            fields["guest_id"] = .string(configuration.id.hex)
            fields["name"] = JSONValue(specification?.name.value)
            fields["kind"] = JSONValue(specification?.kind.rawValue)
            fields["pid"] = JSONValue(Int(identity.pid))
            fields["process_start_ticks"] = JSONValue(identity.startTicks)
            fields["started_at"] = .string(ISO8601DateFormatter().string(from: startedAt))
            fields["state"] = .string(state.rawValue)
            fields["incoming"] = JSONValue(incomingAddress)
            // The whole specification, so that an agent that lost its inventory can register it.
            fields["specification"] =
                specification.flatMap { spec in
                    (try? JSONEncoder().encode(spec)).flatMap { try? JSONDecoder().decode(JSONValue.self, from: $0) }
                } ?? .null
            return .object(fields)
        }
    }

    func status() -> JSONValue {
        let (state, guest, spec, migration) = condition.withLock {
            (self.state, self.guest, self.specification, self.migration)
        }
        let steps = guest?.stepsPerVCPU ?? []
        var fields: [String: JSONValue] = [:]
        fields["state"] = .string(state.rawValue)
        fields["guest_id"] = .string(configuration.id.hex)
        fields["kind"] = JSONValue(spec?.kind.rawValue)
        fields["vcpus"] = spec.map { JSONValue($0.vcpus) } ?? .null
        fields["memory_bytes"] = spec.map { JSONValue($0.memoryBytes) } ?? .null
        fields["vcpu_steps"] = .array(steps.map { JSONValue($0) })
        fields["total_steps"] = JSONValue(steps.reduce(0, +))
        let cpu = guest?.cpuNanosecondsPerVCPU ?? []
        fields["vcpu_cpu_ns"] = .array(cpu.map { JSONValue($0) })
        fields["cpu_ns"] = JSONValue(cpu.reduce(0, +))
        fields.merge(Self.loadFields(guest?.loadPermillePerVCPU ?? [])) { $1 }
        fields["uptime_s"] = .number(Date().timeIntervalSince(startedAt))
        fields["migration"] = migration?.status() ?? .null
        fields["incoming"] = state == .migratingIn ? incomingStatus() : .null
        fields["failure"] = JSONValue(guest?.failure)
        fields["disk"] = guest?.diskStatus ?? .null
        return .object(fields)
    }

    func pause() throws(ControlFailure) -> JSONValue {
        try serialized { () throws(ControlFailure) -> JSONValue in
            let guest = try runningGuest()
            try transition(from: [.running], to: .paused, for: "pause")
            let nanoseconds = guest.migratable.pause()
            return ["state": "paused", "pause_ms": .number(Double(nanoseconds) / 1e6)]
        }
    }

    func resume() throws(ControlFailure) -> JSONValue {
        try serialized { () throws(ControlFailure) -> JSONValue in
            let guest = try runningGuest()
            try transition(from: [.paused], to: .running, for: "resume")
            guest.migratable.resume()
            return ["state": "running"]
        }
    }

    func consoleLines(_ request: ControlRequest) throws(ControlFailure) -> JSONValue {
        let since = Int(try request.number("since", in: 0...1e15, integer: true) ?? 0)
        let limit = Int(try request.number("limit", in: 1...10_000, integer: true) ?? 1000)
        let (lines, next, dropped) = console.since(since, limit: limit)
        let encoded: [JSONValue] = lines.map { line in
            var fields: [String: JSONValue] = ["seq": JSONValue(line.sequence), "text": .string(line.text)]
            fields["vcpu"] = line.vcpu.map { JSONValue($0) } ?? .null
            return .object(fields)
        }
        return ["lines": .array(encoded), "next": JSONValue(next), "dropped": JSONValue(dropped)]
    }

    func kill() -> Outcome {
        let path = configuration.socketPath
        return (
            ["state": "killed"],
            {
                unlink(path)
                Glibc.kill(getpid(), SIGKILL)
            }
        )
    }
}
