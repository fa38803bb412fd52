import FerryMigration
import FerrySystem
import Foundation

extension VirtualMachineMonitor {
    /// SIGTERM (`systemctl stop`, an agent's or an operator's `kill`): end the guest gracefully,
    /// as `shutdown` with its default timeout does, never by losing it.
    /// - `running`, `paused`: `shutdown` (vCPUs stopped, memory and disks flushed, exit 0).
    /// - `migrating-out`: the migration is cancelled first; if the guest stays here it is shut
    ///   down, if the handoff was already committed it leaves (exit 0) as usual.
    /// - `migrating-in`: the incoming migration is cancelled as `ferry receive` cancels one
    ///   (a source that has not had VERIFIED keeps the guest; a guest handed over runs here).
    /// - `unresolved`: ignored (logged): only the destination's answer (`resolve`) may end it.
    /// - anything else is already ending.
    public func terminate(signal name: String = "SIGTERM") {
        let state = condition.withLock { self.state }
        console.append("ferry vmm: \(name) in state \(state.rawValue)")
        switch state {
        case .running, .paused:
            shutdownOnSignal(name)
        case .migratingOut:
            let migration = condition.withLock { self.migration }
            _ = migration?.cancellation.cancel("\(name): the vmm is stopping")
            let settled = condition.withLock {
                while self.state == .migratingOut { condition.wait() }
                return self.state
            }
            if settled == .running || settled == .paused { shutdownOnSignal(name) }
        case .migratingIn:
            _ = incomingCancellation.cancel("\(name): the vmm is stopping")
        case .unresolved:
            logger.warning(
                "\(name) ignored: the handoff is unresolved; ask the destination where the guest is and send resolve, or kill"
            )
        default:
            break
        }
    }

    private func shutdownOnSignal(_ name: String) {
        do {
            let outcome = try shutdown(try ControlRequest(line: #"{"op":"shutdown"}"#))
            outcome.after?()
        } catch {
            logger.error("\(name): the graceful shutdown failed: \(error.message); send kill to end the process")
        }
    }
}
