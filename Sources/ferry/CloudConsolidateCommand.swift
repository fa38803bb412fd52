import ArgumentParser
import Foundation

/// `ferry cloud consolidate [--dry-run] [--wait]`.
struct CloudConsolidate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "consolidate",
        abstract: "Pack the guests onto fewer hosts by live migration and put the freed hosts in standby (admins).",
        discussion: """
            The controller plans on the hosts that are on (the fewest hosts that hold the guests with \
            --consolidate-headroom free on each receiving host, then the fewest moves), moves the guests \
            live, and puts each emptied host in standby; a host out of which a move failed stays on. \
            --dry-run shows the plan only. With --wait the command follows it to its end, then prints \
            the report; exit 1 when a move failed or an emptied host stayed on.
            """)
    @OptionGroup var session: CloudSession
    @Flag(help: "Show the plan only.") var dryRun = false
    @OptionGroup var waiting: CloudWaitOptions

    func run() throws {
        runReportingErrors {
            var report = try session.call(
                "POST", "/v1/consolidate" + (dryRun ? "?dry_run=1" : ""), echo: !waiting.wait || dryRun)
            guard waiting.wait, !dryRun else {
                if !session.json { HumanOutput.print(Self.text(report)) }
                return
            }
            report = try ReportFollower.follow(
                report, runningPhase: "running", timeout: waiting.timeout, what: "the consolidation",
                hint: "`ferry cloud consolidate` would start another; GET /v1/consolidate shows it",
                summary: Self.summary
            ) { try session.call("GET", "/v1/consolidate", echo: false) }
            try ReportFollower.show(report, json: session.json, text: Self.text)
            let failed = (report["moves_failed"] as? [Any] ?? []).count + (report["stayed_on"] as? [Any] ?? []).count
            if failed > 0 { throw CommandError(description: Self.summary(report), exitCode: 1) }
        }
    }

    static func list(_ report: [String: Any], _ key: String) -> [[String: Any]] {
        report[key] as? [[String: Any]] ?? []
    }

    /// "4 hosts → 2 (lower bound 2), 2 of 2 moves done, 0 failed, 2 host(s) in standby".
    static func summary(_ report: [String: Any]) -> String {
        "\(report["hosts_used_before"] ?? "?") hosts → \(report["hosts_used_after"] ?? "?") (lower bound"
            + " \(report["lower_bound"] ?? "?")), \(list(report, "moves_done").count) of"
            + " \(list(report, "moves_planned").count) moves done, \(list(report, "moves_failed").count) failed,"
            + " \(report["hosts_saved"] ?? 0) host(s) saved"
    }

    /// The summary, then each move and each emptied host.
    static func text(_ report: [String: Any]) -> String {
        var lines = [(report["dry_run"] as? Bool == true ? "plan: " : "") + summary(report)]
        for move in list(report, "moves_planned") {
            lines.append("  move \(move["guest"] ?? "?"): \(move["from"] ?? "?") → \(move["to"] ?? "?")")
        }
        for move in list(report, "moves_failed") {
            lines.append("  failed \(move["guest"] ?? "?"): \(move["reason"] ?? "?")")
        }
        for host in report["standby"] as? [String] ?? [] { lines.append("  standby \(host)") }
        for kept in list(report, "stayed_on") {
            lines.append("  stays on \(kept["host"] ?? "?"): \(kept["reason"] ?? "?")")
        }
        return lines.joined(separator: "\n")
    }
}

/// `ferry cloud host standby HOST`.
struct CloudHostStandby: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "standby",
        abstract: "Put an empty host in standby (it stands for powered down; the scheduler wakes it when needed).")
    @OptionGroup var session: CloudSession
    @Argument(help: "The host's ID.") var host: String

    func run() throws {
        runReportingErrors {
            let answer = try session.call("POST", "/v1/hosts/\(host)/standby")
            if !session.json { HumanOutput.print("host \(host) is \(answer["power"] ?? "?")") }
        }
    }
}

/// `ferry cloud host wake HOST`.
struct CloudHostWake: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wake", abstract: "Wake a host in standby: it takes guests once its agent reports it on.")
    @OptionGroup var session: CloudSession
    @Argument(help: "The host's ID.") var host: String

    func run() throws {
        runReportingErrors {
            let answer = try session.call("POST", "/v1/hosts/\(host)/wake")
            if !session.json { HumanOutput.print("host \(host) is \(answer["power"] ?? "?")") }
        }
    }
}
