import FerryAgent
import FerryHostModel
import FerryInventory
import FerryTestSupport
import FerryTransport
import FerryVMM
import Foundation
import Glibc
import Testing

/// Two `ferry agent` processes on 127.0.0.1 (different state directories, one key) and a guest
/// migrating between them through the API (issue 14, items 6 to 8).
final class AgentPair {
    let source: GuestAgentFixture
    let destination: GuestAgentFixture
    /// A directory both agents reach: the guests' disks live there (shared storage).
    let shared: String

    /// `ownStorage`: the destination agent runs in a mount namespace of its own where the
    /// source's state directory is an empty tmpfs, as on another host: it cannot see the
    /// source's disks (the shared directory stays visible to both).
    init(_ name: String, destinationExtra: [String] = [], ownStorage: Bool = false) throws {
        source = try GuestAgentFixture(name + "s", extra: ["--migration-listen", "127.0.0.1:0"])
        let hide = ownStorage ? Self.hiding(source.stateDirectory) : []
        destination = try GuestAgentFixture(
            name + "d", keyFile: source.keyFile, extra: ["--migration-listen", "127.0.0.1:0"] + destinationExtra,
            prefix: hide)
        shared = source.scratch.file("shared")
        mkdir(shared, 0o755)
    }

    /// A prefix that runs an agent in a mount namespace of its own where `directory` (another
    /// agent's state) is an empty tmpfs, as on another host.
    static func hiding(_ directory: String) -> [String] {
        [
            "/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
            "mount -t tmpfs -o size=1M tmpfs \"$1\" && shift && exec \"$@\"", "sh", directory,
        ]
    }

    /// POST, asked again for up to 5 s while the agent answers 409 `busy`: another operation still
    /// holds the guest (a migration's end releases it just after recording the end a test saw
    /// settle), and a client asks again.
    static func postRetryingBusy(_ agent: GuestAgentFixture, _ target: String, body: [UInt8]) throws -> AgentResponse {
        var response = try agent.client().send("POST", target, body: body)
        let until = Date().addingTimeInterval(5)
        while response.status == 409, String(decoding: response.body, as: UTF8.self).contains("busy"), Date() < until {
            usleep(50_000)
            response = try agent.client().send("POST", target, body: body)
        }
        return response
    }

    /// An idle guest's first round (about 0.2 MB for 32 MiB) at 100 KB/s: about 2 s, then it converges.
    static var slow: [String: Any] { ["max_bandwidth_bytes_per_s": 100_000, "downtime_ms": 300] }

    /// Defines and starts a built-in guest with one disk on `agent`.
    @discardableResult
    func runGuest(
        _ name: String, on agent: GuestAgentFixture, memoryMiB: Int = 32, vcpus: Int = 1, workload: String? = nil
    ) throws -> GuestView {
        var body: [String: Any] = [
            "name": name, "kind": "builtin", "vcpus": vcpus, "memory_bytes": memoryMiB << 20, "seed": 7,
            "disks": [["name": "d", "size_bytes": 1 << 20, "path": "\(shared)/\(name).d.raw"]],
        ]
        if let workload { body["workload"] = workload }
        let client = try agent.client()
        let created = try client.send(
            "POST", "/v1/guests", body: Array(try JSONSerialization.data(withJSONObject: body)))
        try #require(created.status == 201, "create: \(String(decoding: created.body, as: UTF8.self))")
        let started = try client.send("POST", "/v1/guests/\(name)/start")
        try #require(started.status == 200, "start: \(String(decoding: started.body, as: UTF8.self))")
        return try agent.view(name)
    }

    /// `POST /v1/migrations` on the source; the status and the body.
    func startMigration(_ guest: String, options: [String: Any] = [:]) throws -> (
        status: Int, body: String, location: String?
    ) {
        var body: [String: Any] = ["guest": guest, "to": destination.url]
        if !options.isEmpty { body["options"] = options }
        let response = try source.client().send(
            "POST", "/v1/migrations", body: Array(try JSONSerialization.data(withJSONObject: body)))
        return (response.status, String(decoding: response.body, as: UTF8.self), response.header("location"))
    }

    func migration(_ id: String, on agent: GuestAgentFixture? = nil) throws -> MigrationResource {
        let response = try (agent ?? source).client().send("GET", "/v1/migrations/\(id)")
        return try MigrationResource.decode(String(decoding: response.body, as: UTF8.self))
    }

    /// The guest's state on each agent (nil: not listed there).
    func states(_ guest: String) throws -> (source: String?, destination: String?) {
        let here = try source.list().first { $0.specification.name.value == guest }?.state
        let there = try destination.list().first { $0.specification.name.value == guest }?.state
        return (here, there)
    }

    /// The ownership table of docs/agent.md: at least one agent lists the guest, and never both
    /// as theirs outside a migration; a reader that sees both reads the owner from the source.
    static func oneOwner(_ states: (source: String?, destination: String?)) -> Bool {
        let settled: Set<String?> = ["running", "paused"]
        switch states {
        case (nil, nil): return false
        case (let here?, let there?): return !(settled.contains(here) && settled.contains(there))
        default: return true
        }
    }

    /// Polls both inventories until the migration ends; every poll must show one owner.
    func followToEnd(_ id: String, guest: String, timeout: Double = 60) throws -> (MigrationResource, Int) {
        let deadline = Date().addingTimeInterval(timeout)
        var polls = 0
        while Date() < deadline {
            let seen = try states(guest)
            polls += 1
            #expect(
                Self.oneOwner(seen),
                "poll \(polls): source \(seen.source ?? "-"), destination \(seen.destination ?? "-")")
            let current = try migration(id)
            if current.status.isFinal { return (current, polls) }
            usleep(40_000)
        }
        Issue.record("migration \(id) did not end in \(timeout) s")
        return (try migration(id), polls)
    }

    /// Polls until neither agent lists the guest as migrating; the final states.
    func settled(_ guest: String, timeout: Double = 30) throws -> (source: String?, destination: String?) {
        let deadline = Date().addingTimeInterval(timeout)
        var seen = try states(guest)
        while Date() < deadline {
            seen = try states(guest)
            let moving = [seen.source, seen.destination].contains { $0?.hasPrefix("migrating") == true }
            if !moving { return seen }
            usleep(100_000)
        }
        return seen
    }

    /// The journal of `guest` in an agent's inventory file (read beside the running agent).
    static func journal(_ agent: GuestAgentFixture, _ guest: String) throws -> [JournalEntry] {
        let inventory = try SQLiteInventory(path: agent.stateDirectory + "/inventory.sqlite")
        defer { try? inventory.close() }
        return try inventory.journal(named: try GuestName(guest), latest: 20)
    }

    static func metric(_ agent: GuestAgentFixture, _ prefix: String) throws -> Double? {
        let text = String(decoding: try agent.client().send("GET", "/metrics").body, as: UTF8.self)
        return text.split(separator: "\n").first { $0.hasPrefix(prefix) }.flatMap {
            Double($0.split(separator: " ").last ?? "")
        }
    }
}

/// Events read from a stream on a thread of its own (the test's thread polls meanwhile).
final class EventCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [ServerSentEvent] = []
    private var error: String?
    private let done = DispatchSemaphore(value: 0)

    init(_ client: AgentClient, _ target: String, lastEventID: UInt64? = nil) {
        let thread = Thread { [self] in
            do {
                try client.events(target, lastEventID: lastEventID) { event in
                    self.lock.withLock { self.items.append(event) }
                    return true
                }
            } catch {
                self.lock.withLock { self.error = "\(error)" }
            }
            self.done.signal()
        }
        thread.start()
    }

    /// Waits for the stream's end; the events (nil if it did not end in time).
    func wait(timeout: Double) -> (events: [ServerSentEvent], error: String?)? {
        guard done.wait(timeout: .now() + timeout) == .success else { return nil }
        return lock.withLock { (items, error) }
    }
}
