import Logging
import Synchronization

/// The guest's console: lines it printed through its console register, kept for callers and tests,
/// forwarded to a callback and logged at debug level. The kept lines are guarded by a `Mutex`.
final class KVMConsole: Sendable {
    /// Kept lines beyond this are dropped oldest first (a long run prints one line per interval).
    static let keptLines = 100_000
    private let lines = Mutex<[KVMConsoleLine]>([])
    private let onLine: (@Sendable (KVMConsoleLine) -> Void)?
    private let logger: Logger

    init(onLine: (@Sendable (KVMConsoleLine) -> Void)?, logger: Logger) {
        self.onLine = onLine
        self.logger = logger
    }

    func append(_ line: KVMConsoleLine) {
        lines.withLock { lines in
            if lines.count >= Self.keptLines { lines.removeFirst(lines.count / 2) }
            lines.append(line)
        }
        logger.debug("guest console", metadata: ["kvm.vcpu": "\(line.vcpu)", "kvm.line": "\(line.text)"])
        onLine?(line)
    }

    var snapshot: [KVMConsoleLine] { lines.withLock { $0 } }
}
