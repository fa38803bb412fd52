import FerryAgent
import FerryControl
import FerryTransport
import Foundation
import Logging

/// Puts hosts in standby and wakes them, through the store (their power, which the scheduler
/// reads) and their agents (`POST /v1/host/standby`, `POST /v1/host/wake`, signed with the
/// cluster key). The store goes first both ways: a host is recorded in standby only while no
/// guest holds capacity on it, checked in the transaction, so no create lands on it afterwards;
/// then its agent is told (and refuses if it holds a guest the store does not know of: then the
/// host is put back on). A wake records `waking`, asks the agent, and the agent's next heartbeat
/// (sent at once) records it `on`.
final class HostStandby: Sendable {
    let store: any ControlStore
    let key: SharedKey
    let work: BlockingWork
    let logger: Logger

    init(store: any ControlStore, key: SharedKey, work: BlockingWork, logger: Logger) {
        self.store = store
        self.key = key
        self.work = work
        self.logger = logger
    }

    /// Standby for an empty host that is on; throws (the host on) with the reason otherwise.
    func standby(_ host: String, cause: String) async throws(ControlError) -> HostRecord {
        let record = try await store.setHostPower(host, to: .standby, from: [.on, .standby], cause: cause)
        do throws(ControlError) {
            try await tell(record, "/v1/host/standby")
        } catch {
            _ = try? await store.setHostPower(host, to: .on, from: [.standby], cause: "its agent refused standby")
            throw ControlError(.transitionRefused, "host \(host) stays on: its agent refused standby: \(error.message)")
        }
        return record
    }

    /// Asks a host in standby (or waking) to wake: `waking` until its agent reports it on. A host
    /// that is on is answered as it is.
    func wake(_ host: String, cause: String) async throws(ControlError) -> HostRecord {
        guard let now = try await store.hosts().first(where: { $0.id == host }) else {
            throw ControlError(.notFound, "no host \(host) is registered")
        }
        if now.power == .on { return now }
        let record = try await store.setHostPower(host, to: .waking, from: [.standby, .waking], cause: cause)
        try await tell(record, "/v1/host/wake")
        return record
    }

    /// Waits until the host is on (its agent reported so), asking it to wake again every 2 s,
    /// up to `deadline`.
    func awake(_ host: String, cause: String, deadline: ContinuousClock.Instant) async throws(ControlError) {
        var asked: ContinuousClock.Instant?
        while true {
            guard let record = try await store.hosts().first(where: { $0.id == host }) else {
                throw ControlError(.notFound, "host \(host) is not registered")
            }
            if record.power == .on { return }
            guard ContinuousClock.now < deadline else {
                throw ControlError(
                    .insufficientCapacity,
                    "host \(host) did not wake in time (it is \(record.power.rawValue)): check its agent")
            }
            if asked.map({ ContinuousClock.now - $0 > .seconds(2) }) ?? true {
                do { _ = try await wake(host, cause: cause) } catch {
                    logger.notice("a host did not take a wake yet: \(error)", metadata: ["host.id": "\(host)"])
                }
                asked = .now
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    /// A signed POST to the host's agent; its refusal as the error's message.
    private func tell(_ host: HostRecord, _ target: String) async throws(ControlError) {
        let key = key
        do {
            try await work.run {
                let client = try AgentClient(url: host.address, key: key, timeoutMs: 10_000)
                _ = try client.checked(try client.send("POST", target))
            }
        } catch {
            throw ControlError(.database, "host \(host.id)'s agent: \(error)")
        }
    }
}
