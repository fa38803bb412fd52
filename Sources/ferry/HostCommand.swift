import ArgumentParser
import FerryAgent
import FerryTransport
import Foundation

/// Options of the commands that talk to an agent's API.
struct AgentClientOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "The agent, http://HOST:PORT (default: $FERRY_AGENT, else http://127.0.0.1:7460).", valueName: "url"))
    var agent: String?

    @Option(
        name: .customLong("key-file"),
        help: ArgumentHelp("The agent's shared key (default: $FERRY_KEY_FILE).", valueName: "path"))
    var keyFile: String?

    var agentURL: String {
        agent ?? ProcessInfo.processInfo.environment["FERRY_AGENT"] ?? "http://\(AgentConfiguration.defaultListen)"
    }

    func makeClient() throws -> AgentClient {
        guard let path = keyFile ?? ProcessInfo.processInfo.environment["FERRY_KEY_FILE"] else {
            throw CommandError.configuration(
                "the agent's API needs its shared key: pass --key-file K or set FERRY_KEY_FILE (the file the agent was started with)"
            )
        }
        let key: SharedKey
        do throws(TransportError) { key = try SharedKey.load(path: path) } catch {
            throw CommandError.configuration(error.message)
        }
        do throws(AgentClientError) {
            return try AgentClient(url: agentURL, key: key)
        } catch {
            throw CommandError.configuration(error.message)
        }
    }
}

/// The exit code for a failed API call: 5 no connection, 3 refused credentials, 7 a broken
/// answer, 1 any other refusal.
func agentExitCode(for error: AgentClientError) -> Int32 {
    switch error.code {
    case .address: return 9
    case .connect: return 5
    case .unauthenticated: return 3
    case .protocolViolation: return 7
    case .refused: return 1
    }
}

struct HostCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "host", abstract: "Ask an agent about its host.", subcommands: [HostShowCommand.self])
}

struct HostShowCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Print the host's capacity, use and health (GET /v1/host).")

    @OptionGroup var client: AgentClientOptions

    @Flag(help: "Print the agent's JSON as it is.")
    var json = false

    func run() throws {
        runReportingErrors {
            let agent = try client.makeClient()
            let body: [UInt8]
            do throws(AgentClientError) {
                body = try agent.checked(agent.send("GET", "/v1/host")).body
            } catch {
                throw CommandError(description: error.message, exitCode: agentExitCode(for: error))
            }
            if json {
                FileHandle.standardOutput.write(Data(body))
                return
            }
            guard let report = try? JSONDecoder().decode(HostReport.self, from: Data(body)) else {
                throw CommandError(
                    description:
                        "the agent at \(client.agentURL) answered GET /v1/host with JSON this ferry cannot read (another version?)",
                    exitCode: 7)
            }
            HumanOutput.print(Self.text(report))
        }
    }

    static func text(_ report: HostReport) -> String {
        let gib = { (bytes: UInt64) in String(format: "%.1f GiB", Double(bytes) / Double(1 << 30)) }
        let agent = report.agent
        let health = report.health
        return """
            host \(agent.hostname): ferry \(agent.version) (migration protocol \(agent.migrationProtocol)), agent PID \(agent.pid) on \(agent.listen)
            capacity: \(report.capacity.vcpus) vCPUs, \(gib(report.capacity.memoryBytes)) memory, \(gib(report.capacity.diskBytes)) disk
            usage: \(gib(report.usage.memoryAvailableBytes)) memory available, \(gib(report.usage.diskAvailableBytes)) disk available, load \(String(format: "%.2f", report.usage.loadAverage1m))
            health: \(health.ok ? "ok" : "NOT OK"); state directory: \(health.stateDirectoryWritable.detail); KVM: \(health.kvm.ok ? "usable" : "not usable: \(health.kvm.detail)")
            """ + (health.signals.map { "\n" + hardware($0) } ?? "")
    }

    /// `hardware: failing: REASON; empty within 842 s` (from --health-dir), and the files that
    /// cannot be read.
    static func hardware(_ signals: HostReport.Signals) -> String {
        var line = "hardware: \(signals.state)"
        if !signals.reason.isEmpty { line += ": \(signals.reason)" }
        if let within = signals.evacuateWithinSeconds { line += "; empty within \(Int(within.rounded())) s" }
        let unreadable = signals.detail.filter { $0.hasPrefix("unreadable: ") }
        return unreadable.isEmpty ? line : line + "; " + unreadable.joined(separator: "; ")
    }
}
