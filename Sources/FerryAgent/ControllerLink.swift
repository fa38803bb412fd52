import FerryHostModel
import FerryInventory
import FerrySystem
import FerryTransport
import Foundation
import Logging
import Synchronization

/// Where an agent reports to its controller (`ferry agent --controller URL`), and what it offers.
public struct ControllerLinkConfiguration: Sendable {
    /// The controller's API, `http://HOST:PORT`.
    public var controllerURL: String
    /// The host's name in the cluster.
    public var hostID: String
    /// The agent's API as the controller reaches it; nil: the address the agent is bound to.
    public var advertiseURL: String?
    /// What the host offers the cloud; nil fields: what the machine has (an operator overcommits
    /// vCPUs, as Nova's allocation ratios do, by offering more than the machine has).
    public var offerVCPUs: Int?
    public var offerMemoryBytes: Int?
    public var offerDiskBytes: Int?
    /// Whether the host offers KVM guests when its /dev/kvm is usable; false: the heartbeat says
    /// it has no KVM whatever the probe finds (`ferry agent --no-kvm`).
    public var offerKVM: Bool
    /// Between two heartbeats.
    public var interval: Duration

    public init(
        controllerURL: String, hostID: String, advertiseURL: String? = nil, offerVCPUs: Int? = nil,
        offerMemoryBytes: Int? = nil, offerDiskBytes: Int? = nil, offerKVM: Bool = true,
        interval: Duration = .seconds(1)
    ) {
        self.controllerURL = controllerURL
        self.hostID = hostID
        self.advertiseURL = advertiseURL
        self.offerVCPUs = offerVCPUs
        self.offerMemoryBytes = offerMemoryBytes
        self.offerDiskBytes = offerDiskBytes
        self.offerKVM = offerKVM
        self.interval = interval
    }
}

/// The agent's side of the control plane: a heartbeat every `interval` with the host's capacity,
/// whether it runs KVM guests, health and guests (`HostHeartbeat`), signed with the shared key like every API request. The
/// first one registers the host. A controller that cannot be reached is logged when that starts
/// and when it ends, not every second; the guests are never touched for it.
final class ControllerLink: Sendable {
    let configuration: ControllerLinkConfiguration
    let client: AgentClient
    let guests: HostGuests
    let probe: HostProbe
    let logger: Logger
    private let lastFailure = Mutex<String?>(nil)

    init(
        configuration: ControllerLinkConfiguration, key: SharedKey, guests: HostGuests, probe: HostProbe,
        logger: Logger
    ) throws(AgentClientError) {
        self.configuration = configuration
        client = try AgentClient(url: configuration.controllerURL, key: key, timeoutMs: 5_000)
        self.guests = guests
        self.probe = probe
        self.logger = logger
    }

    /// Sends heartbeats until the task is cancelled; `agentURL` is the agent's own API address.
    func run(agentURL: String, work: BlockingWork) async {
        while !Task.isCancelled {
            let started = ContinuousClock.now
            let outcome: String?
            do {
                try await work.run { [self] in try self.send(agentURL: agentURL) }
                outcome = nil
            } catch {
                outcome = "\(error)"
            }
            note(outcome)
            try? await Task.sleep(until: started + configuration.interval)
        }
    }

    /// One heartbeat now.
    func send(agentURL: String) throws {
        let heartbeat = try heartbeat(agentURL: configuration.advertiseURL ?? agentURL)
        let body = Array(try JSONEncoder().encode(heartbeat))
        _ = try client.checked(try client.send("POST", "/v1/agents/heartbeat", body: body))
    }

    func heartbeat(agentURL: String) throws -> HostHeartbeat {
        let vcpus = try configuration.offerVCPUs ?? HostProbe.vcpus()
        let memory = try configuration.offerMemoryBytes ?? Int(clamping: HostProbe.memory().total)
        let disk = try configuration.offerDiskBytes ?? Int(clamping: HostProbe.disk(probe.stateDirectory).total)
        let writable = HostProbe.writableCheck(probe.stateDirectory)
        let kvm = configuration.offerKVM && HostProbe.kvmCheck().ok
        let records = try guests.list()
        return HostHeartbeat(
            hostID: configuration.hostID, agentURL: agentURL, vcpus: vcpus, memoryBytes: memory, diskBytes: disk,
            kvm: kvm, healthy: writable.ok, healthDetail: writable.detail,
            guests: records.map { record in
                HostHeartbeat.Guest(
                    id: record.id, name: record.specification.name, state: record.state,
                    telemetry: record.state == .running ? telemetry(record) : nil)
            })
    }

    /// A running guest's counters from its vmm's `status` (`HostGuests.usage`), nil if it does
    /// not answer within 200 ms (a busy vmm delays no heartbeat for long; the next one asks again).
    func telemetry(_ record: GuestRecord) -> HostHeartbeat.Telemetry? {
        guests.usage(record, timeoutSeconds: 0.2).map { usage in
            HostHeartbeat.Telemetry(
                cpuNanoseconds: usage.cpuNanoseconds, vcpus: record.specification.vcpus,
                loadPermille: usage.loadPermille)
        }
    }

    private func note(_ failure: String?) {
        let previous = lastFailure.withLock { last in
            defer { last = failure }
            return last
        }
        let metadata: Logger.Metadata = [
            "agent.host_id": "\(configuration.hostID)", "agent.controller": "\(configuration.controllerURL)",
        ]
        switch (previous, failure) {
        case (nil, let failure?):
            logger.warning("the controller does not take heartbeats: \(failure)", metadata: metadata)
        case (_?, nil):
            logger.notice("the controller takes heartbeats again", metadata: metadata)
        default: break
        }
    }
}
