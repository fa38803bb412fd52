import FerryHostModel
import Foundation
import Synchronization

/// The host's power as the agent stands for it (issue 18, consolidation): `on`, or `standby`
/// (`POST /v1/host/standby`), which stands for a host powered down. In this repository the agent
/// process stays up in standby, listening only so that it can be woken (`POST /v1/host/wake`),
/// as a BMC or Wake-on-LAN would wake a real machine: it holds no guest, refuses creates and
/// incoming migrations, and reports `power: standby` in its heartbeats. The state is kept in
/// `STATE/power` (written before it is answered), so a restarted agent is still in standby.
public final class HostPowerSwitch: Sendable {
    /// `STATE/power`: `standby`, or absent (on).
    let path: String
    private let state: Mutex<HostHeartbeat.Power>

    public init(stateDirectory: String) {
        path = stateDirectory + "/power"
        let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        let stored = HostHeartbeat.Power(rawValue: text.trimmingCharacters(in: .whitespacesAndNewlines))
        state = Mutex(stored ?? .on)
    }

    public var power: HostHeartbeat.Power { state.withLock { $0 } }

    /// Puts the host in standby unless `holding` (called with the switch already refusing new
    /// guests) names guests it holds: then it stays on and the refusal names them.
    func standby(holding: () throws(AgentAPIError) -> [String]) throws(AgentAPIError) {
        let before = state.withLock { state in
            defer { state = .standby }
            return state
        }
        guard before == .on else { return }
        do throws(AgentAPIError) {
            let held = try holding()
            guard held.isEmpty else {
                throw AgentAPIError(
                    .conflict, .conflict,
                    "this host holds \(held.count) guest(s) (\(held.sorted().joined(separator: ", "))): it goes to"
                        + " standby only empty; move, stop and delete them first")
            }
            try write(.standby)
        } catch {
            state.withLock { $0 = .on }
            throw error
        }
    }

    /// Back on (the state file first).
    func wake() throws(AgentAPIError) {
        try write(.on)
        state.withLock { $0 = .on }
    }

    /// Refuses `what` (a create, an incoming migration) while the host is in standby.
    func refuseInStandby(_ what: String) throws(AgentAPIError) {
        guard power == .standby else { return }
        throw AgentAPIError(
            .conflict, .conflict,
            "this host is in standby (it stands for a powered-down host): it takes no \(what); wake it first"
                + " (POST /v1/host/wake, or the controller's POST /v1/hosts/ID/wake)")
    }

    private func write(_ power: HostHeartbeat.Power) throws(AgentAPIError) {
        do {
            if power == .on {
                if FileManager.default.fileExists(atPath: path) { try FileManager.default.removeItem(atPath: path) }
            } else {
                try Data("standby\n".utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
            }
        } catch {
            throw AgentAPIError(
                .internalServerError, .internalError, "recording the host's power (\(path)) failed: \(error)")
        }
    }
}

/// The answer of `POST /v1/host/standby` and `POST /v1/host/wake`.
struct HostPowerView: Codable, Sendable {
    var power: String
}
