import ArgumentParser
import Foundation

/// `ferry cloud guest …`: one guest's view and actions through the controller's API.
struct CloudGuestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "guest", abstract: "Show, stop, start, suspend, resume, delete or migrate one guest.",
        discussion: """
            Each takes the guest's ID (see `ferry cloud guests --project P`). suspend, resume and \
            migrate take --wait: follow the guest to its end state, print each change on standard \
            error and a last line on standard output (exit 1 if it ended elsewhere, with the reason).
            """,
        subcommands: [
            CloudGuestShow.self, CloudGuestJournal.self, CloudGuestStop.self, CloudGuestStart.self,
            CloudGuestSuspend.self, CloudGuestResume.self, CloudGuestDelete.self, CloudGuestMigrate.self,
            CloudGuestPolicy.self,
        ])
}

/// The guest and the login, common to every `ferry cloud guest` command.
struct CloudGuestTarget: ParsableArguments {
    @Argument(help: "The guest's ID (32 hex digits).") var id: String
    @OptionGroup var session: CloudSession

    func validate() throws {
        guard id.count == 32, id.allSatisfy(\.isHexDigit) else {
            throw ValidationError(
                "\(id) is not a guest ID (32 hex digits; `ferry cloud guests --project P` lists them)")
        }
    }

    /// `method` on the guest's `action` path (nil: the guest itself); a refusal for the guest's
    /// state says `hint` too; `echo`: print the answer's JSON with `--json`.
    func call(
        _ method: String, _ action: String? = nil, body: [String: Any]? = nil, hint: String = "", echo: Bool = true
    ) throws -> [String: Any] {
        let path = "/v1/guests/\(id)" + (action.map { "/" + $0 } ?? "")
        return try session.call(method, path, body: body, echo: echo, conflictHint: hint)
    }

    /// Prints the guest's line, unless `--json` printed the answer (`echo`: print it now).
    func show(_ guest: [String: Any], echo: Bool = false) {
        if session.json, echo, let data = try? JSONSerialization.data(withJSONObject: guest, options: [.sortedKeys]) {
            try? FileHandle.standardOutput.write(contentsOf: data + Data("\n".utf8))
        }
        guard !session.json else { return }
        HumanOutput.print(
            CloudText.line(guest) + ((guest["moving_to"] as? String).map { "  (moving to \($0))" } ?? ""))
    }
}

/// `--wait` and how long.
struct CloudWaitOptions: ParsableArguments {
    @Flag(help: "Follow the guest to its end state: each change on standard error, the end on standard output.")
    var wait = false
    @Option(help: ArgumentHelp("With --wait: give up after this many seconds (exit 1).", valueName: "seconds"))
    var timeout = 120.0

    func validate() throws {
        guard timeout > 0, timeout.isFinite else { throw ValidationError("--timeout: a number of seconds above 0") }
    }
}

/// Polls a guest until `done` holds, printing each change of its state, host or destination
/// (`guest ID: building (0.4 s)`) on standard error; the guest as it ended.
enum CloudGuestFollower {
    static func follow(
        _ target: CloudGuestTarget, from first: [String: Any], began: Date, timeout: Double,
        until done: ([String: Any]) -> Bool
    ) throws -> [String: Any] {
        var guest = first
        var last = ""
        while true {
            let seen = summary(guest)
            if seen != last {
                let elapsed = String(format: "%.1f s", Date().timeIntervalSince(began))
                try? FileHandle.standardError.write(contentsOf: Data("guest \(target.id): \(seen) (\(elapsed))\n".utf8))
                last = seen
            }
            if done(guest) { return guest }
            guard Date().timeIntervalSince(began) < timeout else {
                throw CommandError(
                    description: "guest \(target.id) is still \(seen) after \(Int(timeout)) s: "
                        + "`ferry cloud guest show \(target.id)` tells where it got to (--timeout to wait longer)",
                    exitCode: 1)
            }
            usleep(50_000)
            guest = try target.call("GET", echo: false)
        }
    }

    static func summary(_ guest: [String: Any]) -> String {
        "\(guest["state"] ?? "?") on host \(guest["host"] ?? "?")"
            + ((guest["moving_to"] as? String).map { ", moving to \($0)" } ?? "")
    }

    static func milliseconds(since began: Date) -> String {
        String(format: "%.0f ms", Date().timeIntervalSince(began) * 1000)
    }

    /// The cause of the guest's newest journal entry (why it is where it is).
    static func lastCause(_ target: CloudGuestTarget) -> String? {
        let journal = try? target.call("GET", "journal", echo: false)
        return (journal?["entries"] as? [[String: Any]])?.last?["cause"] as? String
    }
}

struct CloudGuestShow: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "The guest's state and host.")
    @OptionGroup var target: CloudGuestTarget

    func run() throws { runReportingErrors { target.show(try target.call("GET")) } }
}

struct CloudGuestJournal: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "journal", abstract: "The guest's changes of state, with their times and causes.")
    @OptionGroup var target: CloudGuestTarget

    func run() throws {
        runReportingErrors {
            let answer = try target.call("GET", "journal")
            if target.session.json { return }
            for entry in answer["entries"] as? [[String: Any]] ?? [] {
                HumanOutput.print(
                    "\(entry["time"] ?? "?")  \(entry["from"] ?? "-") -> \(entry["to"] ?? "?")  \(entry["cause"] ?? "")"
                )
            }
        }
    }
}

struct CloudGuestStop: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stop", abstract: "Stop a running guest (it keeps its disk and its place; not billed).")
    @OptionGroup var target: CloudGuestTarget

    func run() throws { runReportingErrors { target.show(try target.call("POST", "stop")) } }
}

struct CloudGuestStart: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "start", abstract: "Start a stopped guest again from its disk, on the same host.")
    @OptionGroup var target: CloudGuestTarget

    func run() throws { runReportingErrors { target.show(try target.call("POST", "start")) } }
}

struct CloudGuestDelete: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delete", abstract: "Delete a guest and its disk (it must not be running: stop it first).")
    @OptionGroup var target: CloudGuestTarget

    func run() throws { runReportingErrors { target.show(try target.call("DELETE")) } }
}

struct CloudGuestPolicy: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
        abstract: "Set how the guest leaves a host the operator empties: live_only or live_then_cold.")
    @OptionGroup var target: CloudGuestTarget
    @Argument(help: "live_only (live migration alone) or live_then_cold (cold when it cannot go live).")
    var policy: String

    func validate() throws {
        guard ["live_only", "live_then_cold"].contains(policy) else {
            throw ValidationError("\(policy): live_only or live_then_cold")
        }
    }

    func run() throws {
        runReportingErrors {
            let guest = try target.call("POST", "policy", body: ["migration_policy": policy])
            target.show(guest)
            if !target.session.json { HumanOutput.print("migration policy: \(guest["migration_policy"] ?? "?")") }
        }
    }
}
