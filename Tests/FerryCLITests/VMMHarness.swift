import FerryHostModel
import FerrySystem
import FerryTestSupport
import FerryVMM
import Foundation
import Glibc
import Testing

/// One `ferry vmm` guest under test: a short state directory (the socket path must fit 107
/// bytes), its specification, and the processes started for it, killed when the test ends.
final class VMMHarness {
    let scratch: Scratch
    let id: GuestID
    private var pids: [pid_t] = []
    /// Processes this test process spawned itself (`IncomingGuestSpawner`): killed and reaped.
    private var children: [pid_t] = []

    init(_ name: String, id: GuestID = .random()) {
        scratch = Scratch(name)
        self.id = id
    }

    deinit {
        for pid in pids + children { kill(pid, SIGKILL) }
        for pid in children {
            var status: Int32 = 0
            for _ in 0..<100 where waitpid(pid, &status, WNOHANG) == 0 { usleep(10_000) }
        }
    }

    /// Kills (and reaps) `pid`, a child of the test process, when the harness goes.
    func track(child pid: pid_t) { children.append(pid) }

    var stateDir: String { scratch.path }
    var socketPath: String { VMMConfiguration.socketPath(stateDirectory: stateDir, id: id) }

    /// Writes a specification file and returns its path. `disks`: the specification's disks
    /// (a disk without a path goes to `STATE_DIR/GUEST_ID.NAME.disk`).
    func specFile(
        kind: String = "builtin", vcpus: Int = 2, memoryMiB: Int = 64, workload: String? = nil, name: String = "g1",
        disks: [DiskSpecification] = []
    ) throws -> String {
        let path = scratch.file("spec.json")
        let diskJSON = String(decoding: try JSONEncoder().encode(disks), as: UTF8.self)
        var fields = [
            "\"name\":\"\(name)\"", "\"kind\":\"\(kind)\"", "\"vcpus\":\(vcpus)",
            "\"memory_bytes\":\(memoryMiB << 20)", "\"seed\":7", "\"disks\":\(diskJSON)",
        ]
        if let workload { fields.append("\"workload\":\"\(workload)\"") }
        try ("{" + fields.joined(separator: ",") + "}").write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// `ferry vmm ARGS --id ID --state-dir DIR --detach`: the launcher exits once the process
    /// answers; returns the detached process's PID (from the ready line) and the line.
    func detach(_ arguments: [String]) throws -> (pid: pid_t, ready: String) {
        let outcome = try FerryProcess.run(
            ["vmm"] + arguments + ["--id", id.hex, "--state-dir", stateDir, "--detach"], timeout: 60)
        try #require(outcome.status == 0, "ferry vmm --detach failed: \(outcome.stderr)")
        let ready = try #require(outcome.stdout.split(separator: "\n").first { $0.hasPrefix("ready ") })
        let pid = try #require(
            ready.split(separator: " ").first { $0.hasPrefix("pid=") }.flatMap { pid_t($0.dropFirst(4)) })
        pids.append(pid)
        return (pid, String(ready))
    }

    /// `ferry vmm ARGS` as a child of the test (its exit status is then the test's to read).
    func start(_ arguments: [String]) throws -> FerryProcess {
        let process = try FerryProcess(["vmm"] + arguments + ["--id", id.hex, "--state-dir", stateDir])
        pids.append(process.process.processIdentifier)
        try waitUntilAnswering()
        return process
    }

    /// Polls until the control socket answers `hello`.
    @discardableResult
    func waitUntilAnswering(timeout: Double = 30) throws -> JSONValue {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let hello = try? client().call("hello") { return hello }
            usleep(20_000)
        }
        throw VMMError(.stale, "no ferry vmm answered on \(socketPath) within \(timeout) s")
    }

    func client() throws(VMMError) -> VMMControlClient { try VMMControlClient(path: socketPath) }

    func steps(_ client: VMMControlClient) throws -> UInt64 {
        UInt64(try client.call("status")["total_steps"]?.doubleValue ?? -1)
    }

    /// Waits (at most `timeout` s) until `client`'s next event satisfies `done`; returns every event seen.
    static func watch(_ client: VMMControlClient, timeout: Double = 60, until done: (JSONValue) -> Bool) throws
        -> [JSONValue]
    {
        let deadline = Date().addingTimeInterval(timeout)
        var events: [JSONValue] = []
        while Date() < deadline {
            let event = try client.next()
            events.append(event)
            if done(event) { return events }
        }
        return events
    }
}

/// A `--incoming` destination for `source`'s guest (same ID, its own state directory).
final class VMMDestination {
    let harness: VMMHarness
    let pid: pid_t
    let address: String

    init(for source: VMMHarness) throws {
        harness = VMMHarness("vmm-dst", id: source.id)
        let started = try harness.detach(["--incoming", "127.0.0.1:0", "--name", "g1"])
        pid = started.pid
        address = try #require(
            started.ready.split(separator: " ").first { $0.hasPrefix("incoming=") }.map { String($0.dropFirst(9)) })
    }
}
