import FerryAgent
import FerryTestSupport
import FerryTransport
import Foundation
import Glibc
import Synchronization
import Testing

/// A `ferry control` process on a SQLite file in a scratch directory (or on a PostgreSQL
/// database, `database`), and agents that report to
/// it (real `ferry agent` processes sharing its key), each offering room for a few tiny guests.
/// Catalogue: flavor `tiny` (1 vCPU, 16 MiB, 4 MiB of disk, 10 µ per second), image `builtin`
/// (the built-in guest, a 4 MiB template with 64 KiB of data at 3 MiB, past the disk's journal),
/// image `kvm` (the KVM guest program, an empty 4 MiB template: all holes, so the program finds
/// sector 0 zero and starts a fresh journal), project `alpha`.
final class ControlPlaneFixture {
    let scratch: Scratch
    let keyFile: String
    let database: String
    let template: String
    let kvmTemplate: String
    private(set) var controller: FerryProcess?
    private(set) var url = ""
    private(set) var agents: [GuestAgentFixture] = []
    let heartbeatTimeout: Double
    /// More `ferry control` options.
    let controllerExtra: [String]
    /// With `namespaced`: the hosts' network namespaces on one bridge, the controller's first
    /// (then one per agent), and their addresses.
    let network: (namespaces: NetworkNamespaces, addresses: [String])?

    /// `namespaced`: the controller and each agent in a network namespace of its own, joined by a
    /// bridge (10.93.0.0/24), as on separate hosts; the fixture's requests to the controller are
    /// made from inside the controller's namespace. `agentOptions`: more `ferry agent` options
    /// for agent N (from 1), such as `--no-kvm`. `ownStorage`: every agent after the first runs
    /// in a mount namespace of its own where the first's state directory is an empty tmpfs (its
    /// guests' disks are local to it: a live migration cannot reach them, a cold one copies them).
    init(
        _ name: String, agents count: Int = 3, heartbeatTimeout: Double = 1.5, database: String? = nil,
        offerVCPUs: Int = 16, namespaced: Bool = false, controllerExtra: [String] = [],
        agentOptions: [Int: [String]] = [:], ownStorage: Bool = false
    ) throws {
        self.controllerExtra = controllerExtra
        scratch = Scratch(name)
        keyFile = scratch.file("key")
        self.database = database ?? scratch.file("control.sqlite")
        template = scratch.file("template.raw")
        kvmTemplate = scratch.file("kvm-template.raw")
        self.heartbeatTimeout = heartbeatTimeout
        if namespaced {
            let id = "\(name)\(getpid() % 100_000)"
            let hosts = ["\(id)c"] + (1...count).map { "\(id)h\($0)" }
            network = try NetworkNamespaces.bridged(bridgeNamespace: "\(id)b", hosts: hosts, subnet: "10.93.0")
        } else {
            network = nil
        }
        try SharedKey.generate(path: keyFile)
        try Self.writeTemplate(template)
        try Self.writeTemplate(kvmTemplate, dataAt: [])
        try startController()
        for index in 1...count {
            let extra =
                [
                    "--controller", url, "--host-id", "h\(index)", "--offer-vcpus", String(offerVCPUs),
                    "--offer-memory-mib", "1024", "--offer-disk-gib", "1",
                ] + (agentOptions[index] ?? [])
            let host = network?.addresses[index] ?? "127.0.0.1"
            let hiding = ownStorage && index > 1 ? AgentPair.hiding(agents[0].stateDirectory) : []
            agents.append(
                try GuestAgentFixture(
                    "a\(index)", keyFile: keyFile, extra: extra, host: host, prefix: namespacePrefix(index) + hiding))
        }
        try seedCatalogue()
        try waitForHosts(count)
    }

    deinit {
        if let controller { kill(controller.process.processIdentifier, SIGKILL) }
        if let network {
            for agent in agents { agent.kill9() }
            network.namespaces.remove()
        }
    }

    /// `ip netns exec NS` for host `index` (0 the controller, then the agents), or nothing.
    func namespacePrefix(_ index: Int) -> [String] {
        guard let network else { return [] }
        return network.namespaces.exec(in: network.namespaces.names[index + 1])
    }

    /// The network namespace of host `index` (0 the controller), if the cloud runs in namespaces.
    func namespace(_ index: Int) -> String? { network.map { $0.namespaces.names[index + 1] } }

    func startController() throws {
        (controller, url) = try launchController(port: url.isEmpty ? "0" : String(url.split(separator: ":").last!))
    }

    /// Another `ferry control` on the same database and key, at a port of its own (the caller
    /// kills it): its process and URL.
    func launchController(port: String = "0") throws -> (FerryProcess, String) {
        let process = try FerryProcess(
            [
                "control", "--database", database, "--listen", "\(network?.addresses[0] ?? "127.0.0.1"):\(port)",
                "--key-file", keyFile, "--heartbeat-timeout", String(heartbeatTimeout),
            ] + controllerExtra, prefix: namespacePrefix(0))
        let line = try #require(
            process.waitForStderrLine(containing: "controller listening on", timeout: 60),
            "the controller did not start")
        let start = try #require(line.range(of: "http://")?.lowerBound)
        return (process, String(line[start...].prefix { $0 != "," }))
    }

    func killController() {
        guard let controller else { return }
        kill(controller.process.processIdentifier, SIGKILL)
        _ = controller.wait(timeout: 10)
        self.controller = nil
    }

    func client(_ at: String? = nil) throws -> AgentClient {
        try AgentClient(url: at ?? url, key: SharedKey.load(path: keyFile))
    }

    /// A signed request to the controller (or to the one at `at`) and its JSON answer.
    func json(_ method: String, _ target: String, _ body: [String: Any]? = nil, at: String? = nil) throws -> (
        Int, [String: Any]
    ) {
        let bytes = try body.map { Array(try JSONSerialization.data(withJSONObject: $0)) } ?? []
        let client = try client(at)
        let response =
            try namespace(0).map { namespace in
                try NetworkNamespaces.run(in: namespace) { try client.send(method, target, body: bytes) }
            } ?? client.send(method, target, body: bytes)
        let object = (try? JSONSerialization.jsonObject(with: Data(response.body))) as? [String: Any] ?? [:]
        return (response.status, object)
    }

    /// `count` requests to the controller at once, each on a thread of its own (joined to the
    /// controller's namespace when the cloud has one) released together once all are ready:
    /// each request's status and body, in the order of `request`'s index.
    func concurrently(
        _ count: Int, _ request: @escaping @Sendable (Int) -> (method: String, target: String, body: [UInt8])
    ) throws -> [(status: Int, body: [UInt8])] {
        let client = try client()
        let namespace = namespace(0)
        let answers = Mutex<[Int: Result<AgentResponse, any Error>]>([:])
        let ready = DispatchGroup()
        let gate = DispatchSemaphore(value: 0)
        let finished = DispatchGroup()
        for index in 0..<count {
            ready.enter()
            finished.enter()
            let thread = Thread {
                let send = { @Sendable () throws -> AgentResponse in
                    ready.leave()
                    gate.wait()
                    let (method, target, body) = request(index)
                    return try client.send(method, target, body: body)
                }
                let answer = Result { try namespace.map { try NetworkNamespaces.run(in: $0, send) } ?? send() }
                answers.withLock { $0[index] = answer }
                finished.leave()
            }
            thread.stackSize = 1 << 20
            thread.start()
        }
        ready.wait()
        for _ in 0..<count { gate.signal() }
        finished.wait()
        return try (0..<count).map { index in
            let response = try answers.withLock { $0[index]! }.get()
            return (response.status, response.body)
        }
    }

    /// The names of the guests the agents hold, each asked on its own host (namespace).
    func guestsOnHosts() throws -> [String] {
        try agents.indices.flatMap { index -> [String] in
            let client = try agents[index].client()
            let list = { @Sendable in
                try client.get("/v1/guests", as: GuestList.self).guests.map(\.specification.name.value)
            }
            return try namespace(index + 1).map { try NetworkNamespaces.run(in: $0, list) } ?? list()
        }
    }

    private func seedCatalogue() throws {
        let flavor: [String: Any] = [
            "name": "tiny", "price_per_second_micros": 10,
            "resources": ["vcpus": 1, "memory_bytes": 16 << 20, "disk_bytes": 4 << 20],
        ]
        let image: [String: Any] = ["name": "builtin", "kind": "builtin", "disk_template_path": template]
        let kvmImage: [String: Any] = ["name": "kvm", "kind": "kvm", "disk_template_path": kvmTemplate]
        let project: [String: Any] = [
            "name": "alpha",
            "quota": ["guests": 100, "resources": ["vcpus": 100, "memory_bytes": 4 << 30, "disk_bytes": 1 << 30]],
        ]
        for (target, body) in [
            ("/v1/flavors", flavor), ("/v1/images", image), ("/v1/images", kvmImage), ("/v1/projects", project),
        ] {
            let (status, answer) = try json("POST", target, body)
            #expect(status == 201, "\(target): \(answer)")
        }
    }

    func waitForHosts(_ count: Int, timeout: Double = 20) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let (_, answer) = try json("GET", "/v1/hosts")
            let hosts = answer["hosts"] as? [[String: Any]] ?? []
            if hosts.filter({ $0["takes_guests"] as? Bool == true }).count >= count { return }
            usleep(100_000)
        }
        Issue.record("fewer than \(count) hosts registered within \(timeout) s")
    }

    /// Polls the guest until `done` holds (at most `timeout` s); its last view.
    func waitForGuest(_ id: String, timeout: Double = 30, until done: (String) -> Bool) throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(timeout)
        var last: [String: Any] = [:]
        while Date() < deadline {
            last = try json("GET", "/v1/guests/\(id)").1
            if let state = last["state"] as? String, done(state) { return last }
            usleep(50_000)
        }
        return last
    }

    /// A 4 MiB raw file with 64 KiB of data at each of `dataAt` (3 MiB); the rest a hole (the
    /// guest formats its disk's journal, at the start, when it finds it empty).
    static func writeTemplate(_ path: String, dataAt: [Int] = [3 << 20]) throws {
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        let file = try #require(FileHandle(forWritingAtPath: path))
        defer { try? file.close() }
        try file.truncate(atOffset: 4 << 20)
        for offset in dataAt {
            try file.seek(toOffset: UInt64(offset))
            file.write(Data((0..<65536).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ offset >> 20) }))
        }
    }
}
