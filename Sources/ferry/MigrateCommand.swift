import ArgumentParser
import FerryAgent
import FerryGuest
import FerryHostModel
import Foundation

/// `ferry migrate NAME --to AGENT`: live-migrate a guest between two agents through their API
/// (`POST /v1/migrations` on the source agent), following the migration's event stream.
struct MigrateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Live-migrate a guest from its agent to another agent.",
        discussion: """
            Asks the guest's agent (--agent) to move the guest to the agent at --to: the destination \
            reserves the guest and starts its ferry vmm --incoming, the source's vmm sends it, and \
            the guest belongs to exactly one agent at every moment. Both agents must share the key \
            (--key-file). With --wait (the default) a progress line follows the migration and a \
            report ends it; the exit status is 0 only when the guest completed on the destination. \
            Ctrl-C stops watching, not the migration (`ferry migration cancel ID` cancels it).

            With --cold the guest moves powered off (docs/cold-migration.md): a running guest is shut \
            down gracefully, its configuration and the disk files the destination does not see already \
            move (only their allocated blocks, verified), the destination registers it (the moment it \
            becomes the owner) and starts it again (a suspended guest is resumed). The report gives each \
            step's time and the service interruption.
            """)

    @Argument(help: "The guest's name on the source agent.") var name: String
    @Option(help: ArgumentHelp("The destination agent, http://HOST:PORT.", valueName: "url")) var to: String
    @OptionGroup var client: AgentClientOptions
    @Flag(inversion: .prefixedNo, help: "Follow the migration to its end (--no-wait: print its ID and return).")
    var wait = true
    @Option(
        name: .customLong("downtime-ms"),
        help: ArgumentHelp("Largest acceptable blackout in milliseconds (default: the vmm's).", valueName: "ms"),
        transform: NumberOption.real(0.001...60_000, unit: "ms"))
    var downtimeMs: Double?
    @Option(
        name: .customLong("max-bandwidth"),
        help: ArgumentHelp("Cap on the migration's sending rate, like 100MB/s or 800Mbit/s.", valueName: "rate"),
        transform: RateOption.bandwidth)
    var maxBandwidth: Rate?
    @Option(
        name: .customLong("max-rounds"),
        help: "Pre-copy rounds before the switchover is forced or the migration fails.",
        transform: NumberOption.count(1...100_000))
    var maxRounds: Int?
    @Option(
        name: .customLong("timeout"), help: ArgumentHelp("Give up after this many seconds.", valueName: "seconds"),
        transform: NumberOption.real(0.001...86_400, unit: "s"))
    var timeoutSeconds: Double?
    @Flag(name: .customLong("force-switchover"), help: "Switch over after --max-rounds even above --downtime-ms.")
    var forceSwitchover = false
    @Flag(name: .customLong("no-auto-converge"), help: "Do not throttle the guest's vCPUs to make it converge.")
    var noAutoConverge = false
    @Flag(help: "Encrypt the migration stream with the shared key.") var encrypt = false
    @Flag(help: "Print the agent's JSON (the final migration with --wait) instead of text.") var json = false
    @Flag(help: "Cold migration: shut the guest down, move its files, register and start it there.") var cold = false
    @Flag(
        name: .customLong("keep-source"),
        help: "Cold: keep the guest's files on the source until `ferry migration confirm ID`.")
    var keepSource = false
    @Flag(name: .customLong("power-on"), help: "Cold: start a guest that was stopped on the destination too.")
    var powerOn = false
    @Option(
        name: .customLong("shutdown-timeout"),
        help: ArgumentHelp("Cold: seconds a running guest has to shut down gracefully (default 30).", valueName: "s"),
        transform: NumberOption.count(1...3600))
    var shutdownTimeout: Int?

    func validate() throws {
        if !cold, keepSource || powerOn || shutdownTimeout != nil {
            throw ValidationError(
                "--keep-source, --power-on and --shutdown-timeout belong to a cold migration: add --cold")
        }
        do { _ = try GuestName(name) } catch { throw ValidationError("guest name \(name): \(error.message)") }
    }

    var request: MigrationRequest {
        var options = MigrationRequest.Options(
            downtimeMs: downtimeMs, maxRounds: maxRounds, timeoutSeconds: timeoutSeconds,
            forceSwitchover: forceSwitchover ? true : nil, autoConverge: noAutoConverge ? false : nil,
            maxBandwidthBytesPerSecond: maxBandwidth.map { $0.bytesPerSecond(pageSize: 4096) },
            encrypt: encrypt ? true : nil)
        if cold {
            options.keepSource = keepSource ? true : nil
            options.powerOn = powerOn ? true : nil
            options.shutdownTimeoutSeconds = shutdownTimeout
        }
        return MigrationRequest(guest: name, to: to, kind: cold ? "cold" : nil, options: options)
    }

    func run() throws {
        runReportingErrors {
            let agent = try client.makeClient()
            let body = Array(try AgentClient.exchangeEncoder.encode(request))
            let started = try MigrationText.decode(try agentCall(agent, "POST", "/v1/migrations", body: body))
            guard wait else {
                if json { return FileHandle.standardOutput.write(Data((started.json + "\n").utf8)) }
                return HumanOutput.print(
                    "migration \(started.id) of \(name) to \(to) started; follow it with ferry migration show \(started.id)"
                )
            }
            if !json { Terminal.note("migration \(started.id): \(name) to \(to)") }
            let final =
                cold
                ? try MigrationText.poll(agent, started.id, quiet: json)
                : try MigrationText.follow(agent, started.id, quiet: json)
            if json {
                FileHandle.standardOutput.write(Data((final.json + "\n").utf8))
            } else {
                HumanOutput.print(MigrationText.report(final))
            }
            guard final.status == .completed else {
                throw CommandError(
                    description: "migration \(final.id) \(final.status.rawValue): \(final.error ?? "")"
                        + "; the guest is on the \(final.guestLocation ?? "unknown") side", exitCode: 1)
            }
        }
    }
}

/// How the CLI shows a migration.
enum MigrationText {
    static func decode(_ body: [UInt8]) throws -> MigrationResource {
        do { return try MigrationResource.decode(String(decoding: body, as: UTF8.self)) } catch {
            throw CommandError(
                description: "the agent answered with a migration this ferry cannot read (another version?)",
                exitCode: 7)
        }
    }

    /// Follows the event stream to its `end` (a progress line per event), then reads the
    /// migration once more (a resolution may have come after the end).
    static func follow(_ agent: AgentClient, _ id: String, quiet: Bool) throws -> MigrationResource {
        var last: MigrationResource?
        do throws(AgentClientError) {
            try agent.events("/v1/migrations/\(id)/events") { event in
                guard let resource = try? MigrationResource.decode(event.data) else { return true }
                if !quiet, ["progress", "round"].contains(event.event) {
                    Terminal.progress(progressLine(resource), force: event.event == "round")
                }
                if event.event == "end" { last = resource }
                return event.event != "end"
            }
        } catch {
            throw CommandError(description: error.message, exitCode: agentExitCode(for: error))
        }
        Terminal.clearProgress()
        return (try? decode(agentCall(agent, "GET", "/v1/migrations/\(id)"))) ?? last
            ?? .init(
                id: id, guest: "?", direction: .out, peer: nil, destination: "?")
    }

    /// Polls a cold migration (it has no event stream) until it ends, a line per phase.
    static func poll(_ agent: AgentClient, _ id: String, quiet: Bool) throws -> MigrationResource {
        while true {
            let current = try decode(agentCall(agent, "GET", "/v1/migrations/\(id)"))
            if current.status.isFinal {
                Terminal.clearProgress()
                return current
            }
            if !quiet {
                Terminal.progress(
                    "\(current.phase)  \(ProgressLine.mb(current.bytesTransferred ?? 0)) MB sent", force: false)
            }
            usleep(100_000)
        }
    }

    /// `round 3  182 MB sent  12 MB left  95 MB/s  ETA 0.4s`.
    static func progressLine(_ m: MigrationResource) -> String {
        "round \(m.round.map(String.init) ?? "—")  \(ProgressLine.mb(m.bytesTransferred ?? 0)) MB sent"
            + "  \(ProgressLine.mb(m.bytesRemaining ?? 0)) MB left  \(ProgressLine.rate(m.sendRateBytesPerSecond))"
            + "  ETA \(ProgressLine.duration(m.etaSeconds))"
    }

    /// The report at the end: outcome, total, downtime, bytes, rounds, where the guest is.
    static func report(_ m: MigrationResource) -> String {
        func ms(_ value: Double?) -> String { value.map { String(format: "%.1f ms", $0) } ?? "—" }
        if m.kind == "cold" { return coldReport(m) }
        return """
            migration \(m.id) \(m.status.rawValue): guest \(m.guest) is on the \(m.guestLocation ?? "unknown") side
              total     \(ms(m.totalTimeMs))
              downtime  \(ms(m.downtimeMs))
              sent      \(ProgressLine.mb(m.bytesTransferred ?? 0)) MB in \(m.rounds.map(String.init) ?? "—") rounds
            """ + (m.error.map { "\n  error     \($0)" } ?? "")
    }

    /// A cold migration: each step's time, the interruption, each file.
    static func coldReport(_ m: MigrationResource) -> String {
        func ms(_ value: Double?) -> String { value.map { String(format: "%.1f ms", $0) } ?? "—" }
        var lines = [
            "cold migration \(m.id) \(m.status.rawValue): guest \(m.guest) is on the \(m.guestLocation ?? "unknown") side"
        ]
        for phase in ["shutdown", "configuration", "disks", "registration", "power_on"] {
            guard let time = m.phasesMs?[phase] else { continue }
            lines.append("  \(phase.padding(toLength: 14, withPad: " ", startingAt: 0))\(ms(time))")
        }
        lines.append("  total         \(ms(m.totalTimeMs))")
        if let interruption = m.interruptionMs { lines.append("  interruption  \(ms(interruption))") }
        for file in m.files ?? [] {
            let moved =
                file.shared
                ? "shared, not copied"
                : "\(ProgressLine.mb(UInt64(file.allocatedBytes))) MB allocated, \(ProgressLine.mb(file.wireBytes)) MB on the wire"
            lines.append("  file \(file.name): \(ProgressLine.mb(UInt64(file.sizeBytes))) MB, \(moved)")
        }
        if let line = m.resumedLine { lines.append("  guest said   \(line)") }
        if let retained = m.retained, !retained.isEmpty {
            lines.append(
                "  kept on the source until `ferry migration confirm \(m.id)`: \(retained.joined(separator: ", "))")
        }
        if let error = m.error { lines.append("  error         \(error)") }
        return lines.joined(separator: "\n")
    }

    static func line(_ m: MigrationResource) -> String {
        "\(m.id)  \(m.direction.rawValue.padding(toLength: 3, withPad: " ", startingAt: 0))  "
            + "\(m.status.rawValue.padding(toLength: 10, withPad: " ", startingAt: 0))  \(m.guest)  "
            + "\(m.peer ?? m.destination)"
    }
}

/// `ferry migration list|show|cancel`: an agent's migrations.
struct MigrationCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migration", abstract: "List, show and cancel an agent's live migrations.",
        subcommands: [
            MigrationListCommand.self, MigrationShowCommand.self, MigrationCancelCommand.self,
            MigrationConfirmCommand.self,
        ])
}

struct MigrationListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "The agent's migrations, newest first (GET /v1/migrations).")
    @OptionGroup var client: AgentClientOptions
    @Flag(help: "Print the agent's JSON as it is.") var json = false

    func run() throws {
        runReportingErrors {
            let answer = try agentCall(try client.makeClient(), "GET", "/v1/migrations")
            if json { return FileHandle.standardOutput.write(Data(answer)) }
            let decoder = JSONDecoder()
            decoder.dateDecodingStrategy = .iso8601
            guard let list = try? decoder.decode(MigrationList.self, from: Data(answer)) else {
                throw CommandError(description: "the agent's migration list cannot be read", exitCode: 7)
            }
            for migration in list.migrations { HumanOutput.print(MigrationText.line(migration)) }
        }
    }
}

struct MigrationShowCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show", abstract: "One migration's figures (GET /v1/migrations/ID).")
    @Argument(help: "The migration's ID.") var id: String
    @OptionGroup var client: AgentClientOptions
    @Flag(help: "Print the agent's JSON as it is.") var json = false

    func run() throws {
        runReportingErrors {
            let answer = try agentCall(try client.makeClient(), "GET", "/v1/migrations/\(id)")
            if json { return FileHandle.standardOutput.write(Data(answer)) }
            let migration = try MigrationText.decode(answer)
            HumanOutput.print(
                migration.status.isFinal ? MigrationText.report(migration) : MigrationText.progressLine(migration))
        }
    }
}

struct MigrationCancelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cancel",
        abstract: "Cancel a migration (DELETE /v1/migrations/ID); too late once the handoff committed.")
    @Argument(help: "The migration's ID.") var id: String
    @OptionGroup var client: AgentClientOptions

    func run() throws {
        runReportingErrors {
            _ = try agentCall(try client.makeClient(), "DELETE", "/v1/migrations/\(id)")
            HumanOutput.print("migration \(id) cancelling; the guest stays on its source")
        }
    }
}

struct MigrationConfirmCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "confirm",
        abstract: "Remove the files a cold migration with --keep-source kept on its source.")
    @Argument(help: "The migration's ID.") var id: String
    @OptionGroup var client: AgentClientOptions

    func run() throws {
        runReportingErrors {
            _ = try agentCall(try client.makeClient(), "POST", "/v1/migrations/\(id)/confirm")
            HumanOutput.print("migration \(id) confirmed: the source's copies of the guest's files are removed")
        }
    }
}

struct MigrationRevertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "revert",
        abstract: "Move a guest back after a cold migration with --keep-source (only the blocks that differ move).")
    @Argument(help: "The migration's ID on its source agent (--agent).") var id: String
    @OptionGroup var client: AgentClientOptions

    func run() throws {
        runReportingErrors {
            let agent = try client.makeClient()
            let original = try MigrationText.decode(try agentCall(agent, "GET", "/v1/migrations/\(id)"))
            let back = try MigrationText.decode(try agentCall(agent, "POST", "/v1/migrations/\(id)/revert"))
            let peer = original.peer ?? "the destination agent"
            HumanOutput.print(
                "guest \(back.guest) moves back from \(peer): migration \(back.id) there; follow it with"
                    + " ferry migration show \(back.id) --agent \(peer)")
        }
    }
}
