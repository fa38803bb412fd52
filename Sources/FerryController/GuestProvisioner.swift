import FerryAgent
import FerryControl
import FerryHostModel
import FerryTransport
import Foundation
import Logging

/// Carries out what the controller decided, on the guest's host, through its agent's API (signed
/// with the cluster key): build (define the guest with a disk copied from its image, boot it),
/// stop, start, delete. Each step is journaled in the store before and after the host is asked;
/// each is safe to repeat (the agent's create is idempotent for the same ID and specification),
/// so a controller that restarts finishes what it had begun (`resume`).
final class GuestProvisioner: Sendable {
    let store: any ControlStore
    let key: SharedKey
    let work: BlockingWork
    /// Seconds a build waits for the host to define and boot the guest (and, for a KVM guest,
    /// for its first console line) before the guest is `error`.
    let bootTimeout: Double
    /// Wakes a host in standby that the scheduler placed a guest on.
    let power: HostStandby
    let logger: Logger

    init(store: any ControlStore, key: SharedKey, work: BlockingWork, bootTimeout: Duration, logger: Logger) {
        power = HostStandby(store: store, key: key, work: work, logger: logger)
        self.store = store
        self.key = key
        self.work = work
        self.bootTimeout = Double(bootTimeout.components.seconds) + Double(bootTimeout.components.attoseconds) / 1e18
        self.logger = logger
    }

    /// The guest's name on its host: its ID, which no other guest has on any host.
    static func hostName(_ id: GuestID) -> GuestName {
        // "c-" and 32 hex digits: 34 characters of a-z, 0-9 and '-'.
        try! GuestName("c-\(id.hex)")
    }

    /// The KVM guest's workload: paced at the built-in guest's default rate (8 MB/s of pages,
    /// its journal about 100 step records a second). The VMM's default for the kind runs the
    /// program unpaced: a host core each, and thousands of journal records a second on its disk.
    static let kvmWorkload = "kvm:8MB/s"

    /// What the host is asked to define: the flavor's resources, one root disk from the image.
    static func specification(_ guest: CloudGuest) -> GuestSpecification {
        GuestSpecification(
            name: hostName(guest.id), kind: guest.imageKind, vcpus: guest.resources.vcpus,
            memoryBytes: guest.resources.memoryBytes,
            disks: [
                DiskSpecification(name: "root", sizeBytes: guest.resources.diskBytes, template: guest.diskTemplatePath)
            ], workload: guest.imageKind == .kvm ? kvmWorkload : nil)
    }

    /// pending (or building, after a restart) → building → running; any failure → error with
    /// the host's answer as the reason. A built-in guest is `running` when its host says so; a
    /// KVM guest when, besides, it printed its first console line (`FirstConsoleLine`). A guest
    /// `resuming` (or that its host holds suspended) is restored, not booted: it prints nothing new,
    /// so its host's `running` is enough.
    func build(_ guest: CloudGuest, resuming: Bool = false, cause: String? = nil) async {
        var guest = guest
        let started = Date()
        do {
            if guest.state == .pending {
                guard let taken = try await takeForBuilding(guest) else { return }
                guest = taken
            }
            try await wakeIfAsleep(guest)
            var reaching = try await agent(guest.host)
            // No single call to a host that does not answer outlasts the build's deadline.
            reaching.timeoutMs = min(reaching.timeoutMs, Int(bootTimeout * 1000))
            let client = reaching
            let spec = Self.specification(guest)
            let id = guest.id
            let timeout = bootTimeout
            let firstLine = try await work.run { () throws -> String? in
                let deadline = Date().addingTimeInterval(timeout)
                let restored = try Self.defineAndBoot(client, spec: spec, id: id, deadline: deadline)
                if restored || resuming { return "; restored from its suspend file" }
                guard spec.kind == .kvm else { return nil }
                let booted = ContinuousClock.now
                let line = try FirstConsoleLine.wait(client, name: spec.name.value, deadline: deadline)
                let waited = (ContinuousClock.now - booted) / .milliseconds(1)
                return "; its first console line, \(Int(waited.rounded())) ms after its VMM answered: \(line)"
            }
            let cause = (cause ?? "host \(guest.host): it runs") + (firstLine ?? "")
            _ = try await store.transition(
                guest.id, from: .building, to: .running, cause: cause, errorReason: nil, generation: guest.generation)
        } catch {
            let late = Date().timeIntervalSince(started) >= bootTimeout
            let said =
                late
                ? "host \(guest.host) did not boot it within the boot timeout (\(Self.seconds(bootTimeout))): \(error)"
                : "\(error)"
            await fail(guest, from: .building, said)
        }
    }

    /// A guest placed on a host in standby (or waking: no host that was on had room) waits,
    /// building, until the host reports it is on (woken here), up to the boot timeout.
    private func wakeIfAsleep(_ guest: CloudGuest) async throws(ControlError) {
        guard let host = try await store.hosts().first(where: { $0.id == guest.host }), host.power != .on else {
            return
        }
        let started = ContinuousClock.now
        logger.notice(
            "a guest waits for its host to wake", metadata: ["guest.id": "\(guest.id)", "guest.host": "\(host.id)"])
        try await power.awake(
            host.id, cause: "guest \(guest.id) was placed on it", deadline: started + .seconds(bootTimeout))
        logger.notice(
            "a guest's host woke in \(ContinuousClock.now - started)",
            metadata: ["guest.id": "\(guest.id)", "guest.host": "\(host.id)"])
    }

    static func seconds(_ value: Double) -> String {
        value == value.rounded() ? "\(Int(value)) s" : "\(value) s"
    }

    /// pending → building, or nil when another change came first (another controller on the same
    /// database took the build, or the guest was deleted): that change stands, and this
    /// controller leaves the guest alone.
    private func takeForBuilding(_ guest: CloudGuest) async throws(ControlError) -> CloudGuest? {
        do {
            return try await store.transition(
                guest.id, from: .pending, to: .building, cause: "controller: host \(guest.host) builds it",
                errorReason: nil, generation: guest.generation)
        } catch {
            guard error.code == .stale else { throw error }
            logger.info("another change to the guest came first; leaving it", metadata: ["guest.id": "\(guest.id)"])
            return nil
        }
    }

    /// Defines the guest on its host (again: the same create answers with the guest it made)
    /// and boots it, until the host reports it running. A start the host is still doing (the
    /// agent answers `busy`, or the guest is `starting`: a controller before a restart asked for
    /// it) is waited for, not repeated. A guest the host holds suspended is resumed (restored
    /// from its suspend file): true.
    @discardableResult
    static func defineAndBoot(_ client: AgentClient, spec: GuestSpecification, id: GuestID, deadline: Date) throws
        -> Bool
    {
        var restored = false
        let create = Array(try JSONEncoder().encode(CreateOnHost(spec: spec, id: id)))
        var response = try client.send("POST", "/v1/guests", body: create)
        // 409 busy: an earlier controller's start of it still runs on the host.
        while Self.isBusy(response), Date() < deadline {
            usleep(50_000)
            response = try client.send("POST", "/v1/guests", body: create)
        }
        var view = try JSONDecoder().decode(HostGuestView.self, from: Data(client.checked(response).body))
        while view.state != GuestState.running.rawValue {
            guard Date() < deadline else {
                throw ControlError(
                    .database,
                    "the host did not report guest \(spec.name) running by the build's deadline (--boot-timeout;"
                        + " it is \(view.state))")
            }
            let suspended = view.state == GuestState.suspended.rawValue
            if suspended || [GuestState.defined, .stopped, .crashed].map(\.rawValue).contains(view.state) {
                restored = restored || suspended
                let response = try client.send("POST", "/v1/guests/\(spec.name)/\(suspended ? "resume" : "start")")
                // 409 busy: another start of it runs on the host; wait for its outcome.
                if !Self.isBusy(response) {
                    view = try JSONDecoder().decode(HostGuestView.self, from: Data(client.checked(response).body))
                    continue
                }
            }
            usleep(50_000)
            view = try client.get("/v1/guests/\(spec.name)", as: HostGuestView.self)
        }
        return restored
    }

    static func isBusy(_ response: AgentResponse) -> Bool {
        guard response.status == 409 else { return false }
        let body = try? JSONDecoder().decode([String: AgentErrorDetail].self, from: Data(response.body))
        return body?["error"]?.code == AgentAPIError.Code.busy.rawValue
    }

    /// running → stopping → stopped (the host stops it gracefully, then by force after 30 s).
    func stop(_ guest: CloudGuest, cause: String = "user: stop") async throws(ControlError) -> CloudGuest {
        let stopping = try await store.transition(
            guest.id, from: .running, to: .stopping, cause: cause, errorReason: nil,
            generation: guest.generation)
        do {
            let client = try await agent(guest.host)
            let name = Self.hostName(guest.id)
            try await work.run {
                let body = Array(#"{"timeout_seconds": 30, "force": true}"#.utf8)
                _ = try client.checked(client.send("POST", "/v1/guests/\(name)/stop", body: body))
            }
            return try await store.transition(
                guest.id, from: .stopping, to: .stopped, cause: "host \(guest.host): stopped", errorReason: nil,
                generation: stopping.generation)
        } catch {
            await fail(stopping, from: .stopping, "\(error)")
            throw ControlError(.database, "stopping guest \(guest.id) on host \(guest.host) failed: \(error)")
        }
    }

    /// stopped → building → running: the host boots it again from its disk.
    func start(_ guest: CloudGuest) async throws(ControlError) -> CloudGuest {
        let building = try await store.transition(
            guest.id, from: .stopped, to: .building, cause: "user: start", errorReason: nil,
            generation: guest.generation)
        Task { await self.build(building) }
        return building
    }

    /// running → suspended: its host saves its memory and devices to a file and its VMM exits; it
    /// keeps its place there and is not billed. A host that fails leaves it running (the agent
    /// suspends it or not); the error is thrown and nothing is recorded.
    func suspend(_ guest: CloudGuest, cause: String = "user: suspend") async throws(ControlError) -> CloudGuest {
        guard guest.state == .running else {
            throw ControlError(
                .transitionRefused, "guest \(guest.id) is \(guest.state.rawValue): suspend takes a running guest")
        }
        do {
            let client = try await agent(guest.host)
            let name = Self.hostName(guest.id)
            try await work.run { _ = try client.checked(client.send("POST", "/v1/guests/\(name)/suspend")) }
        } catch {
            throw ControlError(.database, "host \(guest.host) did not suspend guest \(guest.id): \(error)")
        }
        return try await store.transition(
            guest.id, from: .running, to: .suspended, cause: "\(cause); host \(guest.host): suspended",
            errorReason: nil, generation: guest.generation)
    }

    /// suspended → building → running: its host restores it from its suspend file (`build`, which
    /// does not wait for a KVM guest's first console line: a restored guest prints nothing new).
    func resumeSuspended(_ guest: CloudGuest, cause: String = "user: resume") async throws(ControlError) -> CloudGuest {
        let building = try await store.transition(
            guest.id, from: .suspended, to: .building, cause: cause, errorReason: nil, generation: guest.generation)
        Task { await self.build(building, resuming: true, cause: "\(cause); host \(guest.host): it runs") }
        return building
    }

    /// Removes the guest and its disk from its host, then records it deleted (a pending guest,
    /// never sent to its host, is deleted at once; a guest in error is removed where it may be).
    func delete(_ guest: CloudGuest, cause: String = "user: delete") async throws(ControlError) -> CloudGuest {
        if [.stopped, .suspended, .error].contains(guest.state) {
            do {
                let client = try await agent(guest.host)
                let name = Self.hostName(guest.id)
                try await work.run {
                    let response = try client.send("DELETE", "/v1/guests/\(name)?remove_disks=true")
                    if response.status != 404 { _ = try client.checked(response) }
                }
            } catch {
                throw ControlError(
                    .database,
                    "host \(guest.host) did not remove guest \(guest.id) (\(error)); the guest stays \(guest.state.rawValue):"
                        + " retry the delete once the host answers")
            }
        }
        return try await store.transition(
            guest.id, from: guest.state, to: .deleted, cause: cause, errorReason: nil,
            generation: guest.generation)
    }

    /// After a restart: finishes the builds that were under way (a guest that came to `building`
    /// from `suspended` is a resume: its host may have restored it already, so the build does not
    /// wait for a KVM guest's first console line).
    func resume() async throws(ControlError) {
        for guest in try await store.guests(states: [.pending, .building]) {
            logger.notice(
                "resuming the build of a guest", metadata: ["guest.id": "\(guest.id)", "guest.host": "\(guest.host)"])
            var resuming = false
            if guest.state == .building { resuming = try await store.journal(of: guest.id).last?.from == .suspended }
            Task { await self.build(guest, resuming: resuming) }
        }
    }

    private func fail(_ guest: CloudGuest, from state: CloudGuestState, _ reason: String) async {
        logger.warning(
            "a host did not do what was asked",
            metadata: ["guest.id": "\(guest.id)", "guest.host": "\(guest.host)", "guest.error": "\(reason)"])
        do {
            _ = try await store.transition(
                guest.id, from: state, to: .error, cause: "host \(guest.host) failed", errorReason: reason,
                generation: nil)
        } catch {
            // Another change came first (the host fell silent: unknown); that one stands.
            logger.notice("the failure was not recorded: \(error)", metadata: ["guest.id": "\(guest.id)"])
        }
    }

    /// A client for the host's agent, at the address of its last heartbeat.
    func agent(_ host: String) async throws -> AgentClient {
        guard let record = try await store.hosts().first(where: { $0.id == host }) else {
            throw ControlError(.notFound, "host \(host) is not registered")
        }
        return try AgentClient(url: record.address, key: key, timeoutMs: 60_000)
    }
}

/// The agent's create body: the specification and the ID the controller gave the guest.
struct CreateOnHost: Encodable {
    var spec: GuestSpecification
    var id: GuestID

    func encode(to encoder: any Encoder) throws {
        try spec.encode(to: encoder)
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(id, forKey: .id)
    }

    enum Keys: String, CodingKey { case id }
}

/// The part of the agent's guest view the controller reads.
struct HostGuestView: Decodable {
    var id: String
    var state: String
}

/// The `error` object of an agent's answer.
struct AgentErrorDetail: Decodable {
    var code: String
}
