import FerryDecisions
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
    /// How often the agent looks at its guests between heartbeats, and sends one at once when what
    /// the controller knows went stale (`PromptReport`: a guest changed state, its CPU use or its
    /// load moved); nil: only every `interval` (`ferry agent --watch-interval 0`).
    public var watchInterval: Duration?
    /// What counts as a change worth an early heartbeat.
    public var prompt: PromptReport

    public init(
        controllerURL: String, hostID: String, advertiseURL: String? = nil, offerVCPUs: Int? = nil,
        offerMemoryBytes: Int? = nil, offerDiskBytes: Int? = nil, offerKVM: Bool = true,
        interval: Duration = .seconds(1), watchInterval: Duration? = .milliseconds(200),
        prompt: PromptReport = PromptReport()
    ) {
        self.controllerURL = controllerURL
        self.hostID = hostID
        self.advertiseURL = advertiseURL
        self.offerVCPUs = offerVCPUs
        self.offerMemoryBytes = offerMemoryBytes
        self.offerDiskBytes = offerDiskBytes
        self.offerKVM = offerKVM
        self.interval = interval
        self.watchInterval = watchInterval
        self.prompt = prompt
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
    let health: HealthMonitor
    let power: HostPowerSwitch
    let logger: Logger
    private let lastFailure = Mutex<String?>(nil)

    init(
        configuration: ControllerLinkConfiguration, key: SharedKey, guests: HostGuests, probe: HostProbe,
        health: HealthMonitor, power: HostPowerSwitch, logger: Logger
    ) throws(AgentClientError) {
        self.power = power
        self.configuration = configuration
        client = try AgentClient(url: configuration.controllerURL, key: key, timeoutMs: 5_000)
        self.guests = guests
        self.probe = probe
        self.health = health
        self.logger = logger
    }

    /// Sends heartbeats until the task is cancelled, every `interval` and, between them, as soon
    /// as a look at the guests and the hardware's signals (every `watchInterval`) finds a change
    /// `PromptReport` reports at once (a guest's state or load, the host's health state);
    /// `agentURL` is the agent's own API address.
    func run(agentURL: String, work: BlockingWork) async {
        let clock = ContinuousClock()
        let origin = clock.now
        func milliseconds(_ instant: ContinuousClock.Instant) -> Int64 {
            Int64(((instant - origin) / .milliseconds(1)).rounded(.down))
        }
        var last: PromptReport.Sent?
        var previousLook: PromptReport.Sent?
        var lastAt = origin
        while !Task.isCancelled {
            let looked = clock.now
            let due = last == nil || looked >= lastAt + configuration.interval
            do {
                let (guests, verdict) = try await work.run { [self] in (try self.guestsNow(), self.health.look()) }
                let seen = Self.prompt(guests)
                let now = milliseconds(looked)
                // A change of power (standby, wake) is reported at once, as a change of health is.
                let state = verdict.state.rawValue + (power.power == .standby ? " (standby)" : "")
                let early = last.flatMap {
                    configuration.prompt.reason(
                        last: $0, previousLook: previousLook, now: now, guests: seen, health: state)
                }
                previousLook = PromptReport.Sent(timeMilliseconds: now, guests: seen, health: state)
                if due || early != nil {
                    if let early { logger.debug("an early heartbeat: \(early)") }
                    note(await sendReporting(agentURL: agentURL, guests: guests, verdict: verdict, work: work))
                    last = configuration.prompt.sent(after: last, now: now, guests: seen, health: state)
                    lastAt = looked
                }
            } catch {
                note("\(error)")
                lastAt = looked
                last = last ?? PromptReport.Sent(timeMilliseconds: milliseconds(looked), guests: [:])
            }
            var next = lastAt + configuration.interval
            if let watch = configuration.watchInterval { next = min(next, looked + watch) }
            try? await Task.sleep(until: next, clock: clock)
        }
    }

    /// One heartbeat with `guests` and the hardware's `verdict`; the failure, if any, as text.
    private func sendReporting(
        agentURL: String, guests: [HostHeartbeat.Guest], verdict: HealthVerdict, work: BlockingWork
    ) async -> String? {
        do {
            try await work.run { [self] in try self.send(agentURL: agentURL, guests: guests, verdict: verdict) }
            return nil
        } catch {
            return "\(error)"
        }
    }

    /// One heartbeat now.
    func send(agentURL: String, guests: [HostHeartbeat.Guest]? = nil, verdict: HealthVerdict? = nil) throws {
        let heartbeat = try heartbeat(
            agentURL: configuration.advertiseURL ?? agentURL, guests: guests, verdict: verdict)
        let body = Array(try JSONEncoder().encode(heartbeat))
        _ = try client.checked(try client.send("POST", "/v1/agents/heartbeat", body: body))
    }

    /// The heartbeat: the host's capacity and health now, `guests` (nil: looked at now) and the
    /// hardware's `verdict` (nil: the last look's).
    func heartbeat(
        agentURL: String, guests: [HostHeartbeat.Guest]? = nil, verdict: HealthVerdict? = nil
    ) throws -> HostHeartbeat {
        let vcpus = try configuration.offerVCPUs ?? HostProbe.vcpus()
        let memory = try configuration.offerMemoryBytes ?? Int(clamping: HostProbe.memory().total)
        let disk = try configuration.offerDiskBytes ?? Int(clamping: HostProbe.disk(probe.stateDirectory).total)
        let writable = HostProbe.writableCheck(probe.stateDirectory)
        let kvm = configuration.offerKVM && HostProbe.kvmCheck().ok
        return HostHeartbeat(
            hostID: configuration.hostID, agentURL: agentURL, vcpus: vcpus, memoryBytes: memory, diskBytes: disk,
            kvm: kvm, healthy: writable.ok, healthDetail: writable.detail,
            signals: health.signals(verdict ?? health.latest), power: power.power, guests: try guests ?? guestsNow())
    }

    /// The host's guests with the running ones' counters, as they are now.
    func guestsNow() throws -> [HostHeartbeat.Guest] {
        try guests.list().map { record in
            HostHeartbeat.Guest(
                id: record.id, name: record.specification.name, state: record.state,
                telemetry: record.state == .running ? telemetry(record) : nil)
        }
    }

    /// The guests as `PromptReport` compares them, by id.
    static func prompt(_ guests: [HostHeartbeat.Guest]) -> [String: PromptReport.Guest] {
        var seen: [String: PromptReport.Guest] = [:]
        for guest in guests {
            seen[guest.id.hex] = PromptReport.Guest(
                state: guest.state.rawValue, cpuNanoseconds: guest.telemetry?.cpuNanoseconds,
                vcpus: guest.telemetry?.vcpus ?? 0, loadPermille: guest.telemetry?.loadPermille)
        }
        return seen
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
