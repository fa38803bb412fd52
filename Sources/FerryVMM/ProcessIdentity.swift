import Foundation
import Glibc

/// A process as an agent recognises it across its own restarts: its PID and its start time in
/// clock ticks since boot (`/proc/PID/stat` field 22). A PID that was reused has another start time.
public struct ProcessIdentity: Sendable, Equatable, Codable {
    public var pid: Int32
    public var startTicks: UInt64

    public init(pid: Int32, startTicks: UInt64) {
        self.pid = pid
        self.startTicks = startTicks
    }

    /// This process.
    public static var current: ProcessIdentity? { of(pid: getpid()) }

    /// Process `pid` as it is now, nil when there is none.
    public static func of(pid: Int32) -> ProcessIdentity? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = text.lastIndex(of: ")")
        else { return nil }
        // Fields after the command name (which may hold spaces): state is field 3, starttime 22.
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 19, let ticks = UInt64(fields[19]) else { return nil }
        return ProcessIdentity(pid: pid, startTicks: ticks)
    }

    /// Whether this very process still runs (same PID, same start time).
    public var isAlive: Bool { Self.of(pid: pid) == self }
}
