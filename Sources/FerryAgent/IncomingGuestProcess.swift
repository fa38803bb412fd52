import FerrySystem
import FerryVMM
import Foundation
import Glibc

/// A `ferry vmm --incoming` the destination agent started (`IncomingGuestSpawner`): where it
/// listens, which process it is, and, once known, how the incoming migration ended. A thread of
/// its own watches the vmm until the guest runs there or the process exits.
public final class IncomingGuestProcess: @unchecked Sendable {
    public enum Outcome: Sendable, Equatable {
        /// The guest is in this process: running, or paused if it was started `--paused`.
        case running
        /// The process ended before the guest ran: its exit status (1 for a failed incoming;
        /// 128 + signal if killed; nil if it could not be read) and the vmm's last reason.
        case failed(exitStatus: Int32?, reason: String?)
    }

    public let pid: pid_t
    /// `/proc/PID/stat` field 22: with `pid`, the process's identity across agent restarts.
    public let processStartTicks: UInt64
    /// HOST:PORT the source's vmm migrates to.
    public let address: String
    public let socketPath: String
    public let logPath: String
    private let condition = MonotonicCondition()
    private var outcome: Outcome?
    private var lastReason: String?

    /// Called once with the outcome, on the process's watching thread: where the destination
    /// agent turns its `migrating-in` row into the guest's row, or removes it.
    private let onOutcome: (@Sendable (Outcome) -> Void)?

    init(
        pid: pid_t, processStartTicks: UInt64, address: String, socketPath: String, logPath: String,
        onOutcome: (@Sendable (Outcome) -> Void)?
    ) {
        self.onOutcome = onOutcome
        self.pid = pid
        self.processStartTicks = processStartTicks
        self.address = address
        self.socketPath = socketPath
        self.logPath = logPath
        let thread = Thread { [self] in follow() }
        thread.name = "ferry-agent-incoming"
        thread.start()
    }

    /// The bound port.
    public var port: UInt16 { address.split(separator: ":").last.flatMap { UInt16($0) } ?? 0 }

    /// How it ended, nil while the migration is awaited or under way.
    public var current: Outcome? { condition.withLock { outcome } }

    /// Waits (at most `timeoutSeconds`) for the outcome.
    public func waitForOutcome(timeoutSeconds: Double) -> Outcome? {
        let deadline = MonotonicClock.deadline(afterSeconds: timeoutSeconds)
        return condition.withLock {
            while outcome == nil { if !condition.wait(untilNanoseconds: deadline) { break } }
            return outcome
        }
    }

    /// Gives up on a migration that never arrived: kills the vmm if no source has sent it
    /// anything yet. Returns false (and leaves it alone) once bytes arrived or the guest runs:
    /// killing a destination mid-handoff could leave the guest nowhere.
    @discardableResult
    public func abandon() -> Abandon {
        guard current == nil else { return .sourceReached }
        // A vmm too busy to answer (a loaded host) is not one a source reached: ask again later.
        guard let status = try? VMMControlClient(path: socketPath, timeoutSeconds: 5).call("status") else {
            return .unanswered
        }
        guard status["state"]?.stringValue == "migrating-in", !Self.sourceReached(status) else {
            return .sourceReached
        }
        kill(pid, SIGKILL)
        return .abandoned
    }

    /// What `abandon()` did.
    public enum Abandon: Sendable {
        /// The vmm was killed before any source reached it.
        case abandoned
        /// A source reached the vmm (or the guest runs): nothing was done.
        case sourceReached
        /// The vmm did not answer `status`: nothing was done; it may be asked again.
        case unanswered
    }

    /// Whether the vmm's `status` says a source established its migration there (`established`:
    /// bytes of it arrived) or a round ended (`round`, from a vmm that predates the flag).
    static func sourceReached(_ status: JSONValue) -> Bool {
        status["incoming"]?["established"]?.boolValue == true || status["incoming"]?["round"] != nil
    }

    private func follow() {
        if let watch = try? VMMControlClient(path: socketPath, timeoutSeconds: 0),
            let state = try? watch.call("watch")["state"]?.stringValue
        {
            if state == "running" || state == "paused" { return record(.running) }
            while let event = try? watch.next() {
                guard event["event"]?.stringValue == "state" else { continue }
                if let reason = event["reason"]?.stringValue { condition.withLock { lastReason = reason } }
                if event["state"]?.stringValue == "running" || event["state"]?.stringValue == "paused" {
                    watch.close()
                    return record(.running)
                }
            }
        }
        // The connection ended without the guest running: the process is exiting (or gone).
        let code = IncomingGuestSpawner.waitForExit(pid, timeoutSeconds: 30)
        record(.failed(exitStatus: code, reason: condition.withLock { lastReason }))
    }

    private func record(_ value: Outcome) {
        let first = condition.withLock { () -> Bool in
            defer { condition.broadcast() }
            guard outcome == nil else { return false }
            outcome = value
            return true
        }
        if first { onOutcome?(value) }
    }
}
