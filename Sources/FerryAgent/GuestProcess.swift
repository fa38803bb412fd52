import FerryHostModel
import FerryInventory
import FerrySystem
import FerryVMM
import Foundation
import Glibc

/// A guest's `ferry vmm` process as the agent deals with it: started detached from the agent's
/// own executable, recognised by PID and start time, asked `hello`. Every call blocks: run it
/// on `BlockingWork`.
enum GuestProcess {
    /// The agent's own executable (`/proc/self/exe`), which is also `ferry vmm`.
    static var executable: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    /// How the process starts: a fresh boot from the specification, or a suspended guest restored.
    enum Launch {
        case boot
        case restore
    }

    /// Runs `ferry vmm … --detach` (its own session; killing the agent does not touch it), waits
    /// until the launcher exits, and returns the facts of the process that answers on the socket.
    static func launch(_ record: GuestRecord, _ launch: Launch, files: GuestFiles) throws(AgentAPIError)
        -> ProcessFacts
    {
        let id = record.id
        var arguments = ["vmm", "--id", id.hex, "--state-dir", files.guestsDirectory, "--detach"]
        switch launch {
        case .boot:
            do {
                let data = try JSONEncoder().encode(record.specification)
                try data.write(to: URL(fileURLWithPath: files.specPath(id)))
            } catch {
                throw failed("cannot write \(files.specPath(id)) (\(error)); check the state directory")
            }
            arguments += ["--spec", files.specPath(id)]
        case .restore:
            arguments += ["--restore", files.suspendPath(id)]
        }
        let launcher: pid_t
        do {
            launcher = try DetachedProcess.spawn(
                executable: executable, arguments: arguments, logPath: files.launchLogPath(id))
        } catch {
            throw failed("cannot start ferry vmm for guest \(record.name): \(error)")
        }
        let deadline = ContinuousClock.now + .seconds(40)
        var code: Int32? = nil
        while code == nil && ContinuousClock.now < deadline {
            code = DetachedProcess.reap(launcher)
            if code == nil { usleep(5_000) }
        }
        guard code == 0 else {
            if code == nil { kill(launcher, SIGKILL) }
            let said = lastLine(files.launchLogPath(id)) ?? "no output"
            throw failed(
                "ferry vmm for guest \(record.name) did not start (\(code.map { "exit \($0)" } ?? "no answer in 40 s")):"
                    + " \(said); see \(files.launchLogPath(id)) and \(files.logPath(id))")
        }
        guard let answer = hello(socket: files.socketPath(id)), answer.id == id else {
            throw failed("ferry vmm for guest \(record.name) started but does not answer on \(files.socketPath(id))")
        }
        return answer.facts
    }

    static func failed(_ message: String) -> AgentAPIError {
        AgentAPIError(.internalServerError, .internalError, message)
    }

    private static func lastLine(_ path: String) -> String? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        return text.split(separator: "\n").last.map(String.init)
    }

    /// What a process answers to `hello`, checked against /proc (its PID runs, with that start time).
    struct Hello {
        var id: GuestID
        var name: String?
        var state: String
        var specification: GuestSpecification?
        var facts: ProcessFacts
    }

    /// `hello` on `socket`; nil when nothing answers (or the answer does not match /proc).
    static func hello(socket: String, timeoutSeconds: Double = 3) -> Hello? {
        guard let client = try? VMMControlClient(path: socket, timeoutSeconds: timeoutSeconds) else { return nil }
        defer { client.close() }
        guard let answer = try? client.call("hello"), let idText = answer["guest_id"]?.stringValue,
            let id = try? GuestID(idText), let pid = answer["pid"]?.intValue,
            let ticks = answer["process_start_ticks"]?.doubleValue, let state = answer["state"]?.stringValue
        else { return nil }
        let identity = ProcessIdentity(pid: Int32(pid), startTicks: UInt64(ticks))
        guard isRunning(identity) else { return nil }
        var specification: GuestSpecification?
        if let spec = answer["specification"], spec != .null, let data = try? JSONEncoder().encode(spec) {
            specification = try? JSONDecoder().decode(GuestSpecification.self, from: data)
        }
        return Hello(
            id: id, name: answer["name"]?.stringValue, state: state, specification: specification,
            facts: ProcessFacts(pid: identity.pid, startTime: identity.startTicks, controlSocket: socket))
    }

    /// Whether this very process runs (same PID and start time, and not a zombie waiting to be
    /// collected: a killed guest whose parent is gone may stay one).
    static func isRunning(_ identity: ProcessIdentity) -> Bool {
        guard identity.isAlive else { return false }
        return !isZombie(identity.pid)
    }

    static func isRunning(_ facts: ProcessFacts) -> Bool {
        isRunning(ProcessIdentity(pid: facts.pid, startTicks: facts.startTime))
    }

    /// /proc/PID/stat's state field is `Z` (or `X`): the process ended and only its entry remains.
    static func isZombie(_ pid: Int32) -> Bool {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = text.lastIndex(of: ")")
        else { return false }
        let state = text[text.index(after: close)...].split(separator: " ").first
        return state == "Z" || state == "X"
    }

    /// What reconciliation needs about a recorded PID: gone (or a zombie), or started at a tick.
    static func observe(pid: Int32) -> PIDObservation {
        if isZombie(pid) { return .absent }
        return ProcessStartTime.observe(pid: pid)
    }

    /// The inventory's name for what the process reports; nil for states it has no name for
    /// (`failed`: the process is about to exit).
    static func status(_ vmmState: String) -> ProcessStatus? {
        switch VMMState(rawValue: vmmState) {
        case .running: .running
        case .paused: .paused
        case .migratingOut, .unresolved: .migratingOut
        case .migratingIn: .migratingIn
        case .stopping, .stopped, .suspending, .suspended: .stopping
        case .left: .handedOff
        case .failed, nil: nil
        }
    }

    /// Waits (at most `timeout`) until the process is gone; whether it is.
    static func waitUntilGone(_ facts: ProcessFacts, timeout: Duration) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while isRunning(facts) {
            if ContinuousClock.now >= deadline { return false }
            usleep(10_000)
        }
        return true
    }
}
