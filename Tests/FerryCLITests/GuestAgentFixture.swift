import FerryAgent
import FerryTestSupport
import FerryTransport
import FerryVMM
import Foundation
import Glibc
import Testing

/// A `ferry agent` on one state directory that a test may kill and start again (same key, same
/// directory, a new port each time). When it goes away it kills every process whose command
/// line names its state directory (the agents and the guests' `ferry vmm`s), pass or fail.
final class GuestAgentFixture {
    let scratch: Scratch
    let keyFile: String
    let stateDirectory: String
    private(set) var process: FerryProcess?
    private(set) var port: UInt16 = 0
    private(set) var startLine = ""
    /// Given to every start (a second agent of a migration test shares the first's key).
    let extra: [String]
    /// The address the API listens on (a host in a network namespace: its address and `prefix`).
    let host: String
    /// What every start runs the agent under, like `ip netns exec NS`.
    let prefix: [String]

    /// `name` is short: the guests' sockets live under the state directory (sun_path is 107 bytes).
    /// `keyFile`: another fixture's key (agents that migrate to each other share it).
    init(
        _ name: String, keyFile shared: String? = nil, extra: [String] = [], host: String = "127.0.0.1",
        prefix: [String] = []
    ) throws {
        scratch = Scratch(name)
        keyFile = shared ?? scratch.file("k")
        stateDirectory = scratch.file("s")
        self.extra = extra
        self.host = host
        self.prefix = prefix
        if shared == nil { try SharedKey.generate(path: keyFile) }
        try start()
    }

    deinit {
        for pid in Self.processes(naming: stateDirectory) { kill(pid, SIGKILL) }
        if let process { _ = process.wait(timeout: 5) }
    }

    /// Starts the agent; returns once it listens (reconciliation done).
    /// `port` 0 takes a free port; an agent's peers that must find it again after a restart
    /// (a source asking a destination) need the same one.
    func start(extra: [String] = [], prefix: [String] = [], port requested: UInt16 = 0) throws {
        let process = try FerryProcess(
            ["agent", "--state-dir", stateDirectory, "--listen", "\(host):\(requested)", "--key-file", keyFile]
                + self.extra
                + extra,
            prefix: prefix.isEmpty ? self.prefix : prefix)
        self.process = process
        let line = try #require(
            process.waitForStderrLine(containing: "agent listening on", timeout: 60), "the agent did not start")
        let after = try #require(line.range(of: "\(host):")?.upperBound)
        port = try #require(UInt16(line[after...].prefix { $0.isNumber }))
        startLine = line
    }

    var url: String { "http://\(host):\(port)" }
    var pid: Int32 { process?.process.processIdentifier ?? 0 }
    var guestsDirectory: String { stateDirectory + "/guests" }

    /// SIGKILL, and waits for it (its stderr is returned).
    @discardableResult
    func kill9() -> String {
        guard let process else { return "" }
        kill(process.process.processIdentifier, SIGKILL)
        self.process = nil
        return process.wait(timeout: 10).stderr
    }

    /// SIGTERM and the outcome.
    func terminate() -> FerryProcess.Outcome? {
        guard let process else { return nil }
        kill(process.process.processIdentifier, SIGTERM)
        self.process = nil
        return process.wait(timeout: 30)
    }

    func client() throws -> AgentClient {
        try AgentClient(url: url, key: SharedKey.load(path: keyFile), timeoutMs: 60_000)
    }

    /// `ferry guest ARGS --agent URL --key-file K`.
    func guest(_ arguments: [String]) throws -> FerryProcess.Outcome {
        try FerryProcess.run(["guest"] + arguments + ["--agent", url, "--key-file", keyFile], timeout: 120)
    }

    func view(_ name: String) throws -> GuestView {
        try client().get("/v1/guests/\(name)", as: GuestView.self)
    }

    func list() throws -> [GuestView] {
        try client().get("/v1/guests", as: GuestList.self).guests
    }

    /// Polls (at most `timeout` s) until the guest's state is `state`; the last view.
    func waitFor(_ name: String, state: String, timeout: Double = 10) throws -> GuestView {
        let deadline = Date().addingTimeInterval(timeout)
        var last = try view(name)
        while last.state != state && Date() < deadline {
            usleep(50_000)
            last = try view(name)
        }
        return last
    }

    /// Live (not zombie) processes whose command line contains `text`, this test process excluded.
    static func processes(naming text: String) -> [pid_t] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { entry -> pid_t? in
            guard let pid = pid_t(entry), pid != getpid(),
                let raw = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"), !raw.isEmpty
            else { return nil }
            let command = String(decoding: raw.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
            return command.contains(text) ? pid : nil
        }
    }

    /// The live `ferry vmm` processes of guest ID `id` (by the `--id` on their command lines).
    static func vmmProcesses(id: String) -> [pid_t] {
        processes(naming: "--id \(id)").filter { pid in
            guard let command = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
            return String(decoding: command, as: UTF8.self).contains("vmm") && !isZombie(pid)
        }
    }

    static func isZombie(_ pid: pid_t) -> Bool {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = text.lastIndex(of: ")")
        else { return true }
        let state = text[text.index(after: close)...].split(separator: " ").first
        return state == "Z" || state == "X"
    }

    /// The guest's total vCPU steps, asked on its control socket.
    static func steps(socket: String) throws -> Double {
        let client = try VMMControlClient(path: socket, timeoutSeconds: 10)
        defer { client.close() }
        return try client.call("status")["total_steps"]?.doubleValue ?? -1
    }

    /// Resident set size of `pid` in bytes (VmRSS of /proc/PID/status).
    static func residentBytes(_ pid: pid_t) -> Int {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
            let kib = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
        else { return 0 }
        return kib * 1024
    }
}
