import FerryDecisions
import FerryHostModel
import Foundation
import Logging
import Synchronization

/// The agent's judgement of its host's hardware: each `look` reads the health directory
/// (`HealthDirectory`) and judges it (`HealthTracker`: rates against older readings, deadlines
/// that only come closer). The heartbeat loop looks every watch interval, and `GET /v1/host`
/// looks when asked. Without a directory the host is healthy and nothing is read.
public final class HealthMonitor: Sendable {
    /// The directory (`ferry agent --health-dir`); nil: no signals.
    public let directory: String?
    private let logger: Logger
    private let origin = ContinuousClock.now
    private struct State: Sendable {
        var tracker: HealthTracker
        var lastGood = HealthDirectory.LastGood()
        var latest = HealthVerdict.healthy
        var unreadable: [String] = []
    }
    private let state: Mutex<State>

    public init(directory: String?, thresholds: HealthThresholds = HealthThresholds(), logger: Logger) {
        self.directory = directory
        self.logger = logger
        state = Mutex(State(tracker: HealthTracker(thresholds: thresholds)))
    }

    /// Reads the directory now and judges it (blocking: file reads); logs a change of state and
    /// of the files that cannot be read.
    @discardableResult
    public func look() -> HealthVerdict {
        guard let directory else { return .healthy }
        let now = (ContinuousClock.now - origin) / .seconds(1)
        let wall = Int64(Date().timeIntervalSince1970)
        let (verdict, before, newlyUnreadable) = state.withLock { state in
            let reading = HealthDirectory(path: directory).read(&state.lastGood)
            let verdict = state.tracker.observe(reading, at: now, wallClockSeconds: wall)
            let before = state.latest
            let newlyUnreadable = reading.unreadable.filter { !state.unreadable.contains($0) }
            state.latest = verdict
            state.unreadable = reading.unreadable
            return (verdict, before, newlyUnreadable)
        }
        for file in newlyUnreadable {
            logger.warning("a health signal cannot be read: \(file)", metadata: ["agent.health_dir": "\(directory)"])
        }
        if verdict.state != before.state { log(verdict, was: before.state) }
        return verdict
    }

    /// The last look's verdict.
    public var latest: HealthVerdict { state.withLock { $0.latest } }

    /// What the heartbeat carries: nil without a directory (as an agent older than the field).
    func signals(_ verdict: HealthVerdict) -> HostHeartbeat.Signals? {
        guard directory != nil else { return nil }
        let state = HostHeartbeat.Signals.State(rawValue: verdict.state.rawValue) ?? .warning
        return HostHeartbeat.Signals(
            state: state, reason: verdict.reason, evacuateWithinSeconds: verdict.deadlineSeconds)
    }

    /// What `GET /v1/host` shows: nil without a directory.
    func report(_ verdict: HealthVerdict) -> HostReport.Signals? {
        guard let directory else { return nil }
        return HostReport.Signals(
            directory: directory, state: verdict.state.rawValue, reason: verdict.reason,
            evacuateWithinSeconds: verdict.deadlineSeconds, detail: verdict.detail)
    }

    private func log(_ verdict: HealthVerdict, was: HealthState) {
        let metadata: Logger.Metadata = [
            "agent.health": "\(verdict.state.rawValue)", "agent.health_reason": "\(verdict.reason)",
        ]
        switch verdict.state {
        case .failing:
            let deadline = Int64((verdict.deadlineSeconds ?? 0).rounded())
            logger.warning(
                "the host's hardware is failing: \(verdict.reason); the host should be empty within \(deadline) s",
                metadata: metadata)
        case .warning:
            logger.warning("a hardware signal warns: \(verdict.reason)", metadata: metadata)
        case .healthy:
            logger.notice("the host's hardware signals are healthy again (was \(was.rawValue))", metadata: metadata)
        }
    }
}
