import ArgumentParser
import FerryAgent
import FerryGuest
import FerryHostModel
import Foundation
import Glibc

/// `ferry guest …`: the guests of one agent, through its API (docs/guide.md, docs/agent.md).
struct GuestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "guest", abstract: "Create, run and inspect the guests an agent owns.",
        subcommands: [
            GuestCreateCommand.self, GuestListCommand.self, GuestShowCommand.self, GuestStartCommand.self,
            GuestStopCommand.self, GuestSuspendCommand.self, GuestResumeCommand.self, GuestDeleteCommand.self,
            GuestConsoleCommand.self, GuestPaceCommand.self,
        ])
}

/// One API call with the CLI's error mapping (exit codes as `ferry host show`).
func agentCall(_ client: AgentClient, _ method: String, _ target: String, body: [UInt8] = []) throws -> [UInt8] {
    do throws(AgentClientError) {
        return try client.checked(client.send(method, target, body: body)).body
    } catch {
        throw CommandError(description: error.message, exitCode: agentExitCode(for: error))
    }
}

func decodeAnswer<Value: Decodable>(_ type: Value.Type, _ body: [UInt8], _ what: String) throws -> Value {
    guard let value = try? JSONDecoder().decode(Value.self, from: Data(body)) else {
        throw CommandError(
            description: "the agent answered \(what) with JSON this ferry cannot read (another version?)", exitCode: 7)
    }
    return value
}

/// The arguments every per-guest command takes.
struct GuestTarget: ParsableArguments {
    @Argument(help: "The guest's name.") var name: String
    @OptionGroup var client: AgentClientOptions
    @Flag(help: "Print the agent's JSON as it is.") var json = false

    func validate() throws {
        do { _ = try GuestName(name) } catch { throw ValidationError("guest name \(name): \(error.message)") }
    }

    /// Sends the request and prints the guest it answers with (or its JSON).
    func act(_ method: String, _ suffix: String, body: [UInt8] = [], done: String) throws {
        let answer = try agentCall(try client.makeClient(), method, "/v1/guests/\(name)\(suffix)", body: body)
        if json { return FileHandle.standardOutput.write(Data(answer)) }
        let guest = try decodeAnswer(GuestView.self, answer, "\(method) /v1/guests/\(name)\(suffix)")
        HumanOutput.print("guest \(guest.specification.name) \(done): \(GuestText.summary(guest))")
    }
}

enum GuestText {
    static func summary(_ guest: GuestView) -> String {
        "\(guest.state)" + (guest.pid.map { ", process \($0)" } ?? "") + " (since \(guest.stateSince))"
    }

    static func size(_ bytes: Int) -> String {
        for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] where bytes >= 1 << shift {
            let value = Double(bytes) / Double(1 << shift)
            return value == value.rounded() ? "\(Int(value)) \(unit)" : String(format: "%.1f %@", value, unit)
        }
        return "\(bytes) B"
    }

    static func line(_ guest: GuestView) -> String {
        let spec = guest.specification
        let name = spec.name.value.padding(toLength: max(12, spec.name.value.count), withPad: " ", startingAt: 0)
        let state = guest.state.padding(toLength: 13, withPad: " ", startingAt: 0)
        let kind = spec.kind.rawValue.padding(toLength: 8, withPad: " ", startingAt: 0)
        return "\(name) \(state) \(kind) \(spec.vcpus) vCPU  \(size(spec.memoryBytes))  \(spec.disks.count) disk(s)"
            + (guest.pid.map { "  pid \($0)" } ?? "")
    }
}

struct GuestListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the agent's guests.")
    @OptionGroup var client: AgentClientOptions
    @Flag(help: "Print the agent's JSON as it is.") var json = false

    func run() throws {
        runReportingErrors {
            let answer = try agentCall(try client.makeClient(), "GET", "/v1/guests")
            if json { return FileHandle.standardOutput.write(Data(answer)) }
            let list = try decodeAnswer(GuestList.self, answer, "GET /v1/guests")
            if list.guests.isEmpty { return HumanOutput.print("no guests (create one with ferry guest create)") }
            HumanOutput.print(list.guests.map(GuestText.line).joined(separator: "\n"))
        }
    }
}

struct GuestShowCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show", abstract: "Show a guest: its specification, state, process and latest transitions.")
    @OptionGroup var target: GuestTarget

    func run() throws {
        runReportingErrors {
            let answer = try agentCall(try target.client.makeClient(), "GET", "/v1/guests/\(target.name)")
            if target.json { return FileHandle.standardOutput.write(Data(answer)) }
            let guest = try decodeAnswer(GuestView.self, answer, "GET /v1/guests/\(target.name)")
            let spec = guest.specification
            var lines = [
                "guest \(spec.name) (ID \(guest.id)): \(GuestText.summary(guest))",
                "\(spec.kind.rawValue), \(spec.vcpus) vCPU(s), \(GuestText.size(spec.memoryBytes)) memory, seed \(spec.seed)"
                    + (spec.workload.map { ", workload \($0)" } ?? ""),
            ]
            for disk in spec.disks {
                let missing = guest.missingDisks.contains(disk.name) ? " (MISSING)" : ""
                lines.append("disk \(disk.name): \(GuestText.size(disk.sizeBytes)) at \(disk.path ?? "?")\(missing)")
            }
            for step in guest.transitions ?? [] {
                lines.append("  \(step.time)  \(step.from ?? "-") → \(step.to): \(step.cause)")
            }
            HumanOutput.print(lines.joined(separator: "\n"))
        }
    }
}

struct GuestPaceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pace", abstract: "Change how fast a running guest writes its memory (its demand), at once.",
        discussion: """
            RATE is bytes of page writes per second for the whole guest, as in a workload: 8MB/s, 1GiB/s, \
            2000pages/s, or unpaced. The guest's steps per second and the load it reports follow within about \
            two seconds. The pace belongs to the guest's current process: after a migration or a restore it runs \
            at its specification's rate again. Tools/load-gen changes it over time in patterns.
            """)
    @OptionGroup var target: GuestTarget
    @Argument(help: ArgumentHelp("The new rate.", valueName: "rate")) var rate: String

    func run() throws {
        runReportingErrors {
            let body = Array(try JSONEncoder().encode(["rate": rate]))
            try target.act("POST", "/pace", body: body, done: "paced at \(rate)")
        }
    }
}

struct GuestStartCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "start", abstract: "Start a defined, stopped or crashed guest (its own ferry vmm process).")
    @OptionGroup var target: GuestTarget
    func run() throws { runReportingErrors { try target.act("POST", "/start", done: "started") } }
}

struct GuestStopCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stop",
        abstract: "Stop a guest gracefully (vCPUs stop, memory and disks flushed).",
        discussion: "Without --force a guest that does not stop within --timeout keeps running and the command fails.")
    @OptionGroup var target: GuestTarget
    @Option(help: "Seconds the graceful shutdown may take (1-3600).") var timeout = 30
    @Flag(help: "Kill the guest's process when the graceful shutdown fails.") var force = false

    func validate() throws {
        guard (1...3600).contains(timeout) else { throw ValidationError("--timeout \(timeout): 1 to 3600 seconds") }
    }

    func run() throws {
        runReportingErrors {
            let body = Array(#"{"timeout_seconds":\#(timeout),"force":\#(force)}"#.utf8)
            try target.act("POST", "/stop", body: body, done: "stopped")
        }
    }
}

struct GuestSuspendCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "suspend",
        abstract: "Save a guest's memory and device state to the state directory; its process ends.")
    @OptionGroup var target: GuestTarget
    func run() throws { runReportingErrors { try target.act("POST", "/suspend", done: "suspended") } }
}

struct GuestResumeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resume", abstract: "Run a suspended guest again (from its saved state) or a paused one.")
    @OptionGroup var target: GuestTarget
    func run() throws { runReportingErrors { try target.act("POST", "/resume", done: "resumed") } }
}

struct GuestDeleteCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delete", abstract: "Remove a guest without a process from the inventory (disks kept unless told)."
    )
    @OptionGroup var target: GuestTarget
    @Flag(name: .customLong("remove-disks"), help: "Remove the guest's disk files too.") var removeDisks = false

    func run() throws {
        runReportingErrors {
            _ = try agentCall(
                try target.client.makeClient(), "DELETE", "/v1/guests/\(target.name)?remove_disks=\(removeDisks)")
            if target.json { return FileHandle.standardOutput.write(Data("{}\n".utf8)) }
            HumanOutput.print(
                "guest \(target.name) deleted" + (removeDisks ? " with its disks" : "; its disks were kept"))
        }
    }
}

struct GuestConsoleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "console", abstract: "Print a running guest's console lines (--follow: keep printing new ones).")
    @OptionGroup var target: GuestTarget
    @Option(help: "Start after this cursor (the `next` of an earlier call).") var since = 0
    @Flag(name: .shortAndLong, help: "Keep polling for new lines until interrupted or the guest stops.") var follow =
        false

    func run() throws {
        runReportingErrors {
            let client = try target.client.makeClient()
            var cursor = since
            repeat {
                let answer = try agentCall(client, "GET", "/v1/guests/\(target.name)/console?since=\(cursor)")
                if target.json {
                    FileHandle.standardOutput.write(Data(answer))
                } else {
                    let page = try decodeAnswer(ConsolePage.self, answer, "GET /v1/guests/\(target.name)/console")
                    if page.dropped > 0 { HumanOutput.print("(\(page.dropped) lines no longer kept)") }
                    for line in page.lines { HumanOutput.print(line.text) }
                    if follow && page.lines.isEmpty { usleep(500_000) }
                    cursor = page.next
                }
            } while follow && !target.json
        }
    }
}
