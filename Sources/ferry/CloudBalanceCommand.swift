import ArgumentParser
import Foundation

/// `ferry cloud balance [--run [--wait]]`: the controller's load balancing (admins).
struct CloudBalance: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "balance", abstract: "Show the load balancing's last passes, or run a pass now (admins).",
        discussion: """
            Without --run: the settings, the balancing moves of the last hour against the cap, when the \
            next pass is due and the last passes (what each saw, chose and did, or why it chose \
            nothing). With --run the controller runs a pass now (the one already running, if any); \
            with --wait the command follows it until its moves have ended, then prints it; exit 0 \
            unless a move failed (or was not begun) or the pass could not look at the cluster.
            """)
    @OptionGroup var session: CloudSession
    @Flag(name: .customLong("run"), help: "Run a pass now.") var runNow = false
    @OptionGroup var waiting: CloudWaitOptions

    func validate() throws {
        if waiting.wait, !runNow { throw ValidationError("--wait follows a pass that --run starts: add --run") }
    }

    func run() throws {
        runReportingErrors {
            guard runNow else {
                let report = try session.call("GET", "/v1/balance")
                if !session.json { HumanOutput.print(BalanceText.report(report)) }
                return
            }
            let pass = try session.call("POST", "/v1/balance", echo: !waiting.wait)
            guard waiting.wait else {
                if !session.json { HumanOutput.print(BalanceText.pass(pass)) }
                return
            }
            let number = pass["number"] as? Int ?? 0
            let ended = try ReportFollower.follow(
                pass, runningPhase: "running", timeout: waiting.timeout, what: "pass \(number)",
                hint: "`ferry cloud balance` shows it", summary: BalanceText.summary
            ) {
                let passes = try session.call("GET", "/v1/balance", echo: false)["passes"] as? [[String: Any]] ?? []
                return passes.first { $0["number"] as? Int == number } ?? ["phase": "gone"]
            }
            try ReportFollower.show(ended, json: session.json, text: BalanceText.pass)
            let failed = (ended["moves"] as? [[String: Any]] ?? []).contains {
                ["failed", "skipped"].contains($0["state"] as? String ?? "")
            }
            guard ended["phase"] as? String == "done", !failed else {
                throw CommandError(description: BalanceText.summary(ended), exitCode: 1)
            }
        }
    }
}

/// How the balancing's JSON reads to a person.
enum BalanceText {
    static func number(_ value: Any?) -> String {
        guard let value = value as? Double else { return "-" }
        return String(format: "%.2f", value)
    }

    /// "pass 3 done: 2 moves chosen, 2 moved; spread 0.47 → 0.02 predicted, 0.03 measured".
    static func summary(_ pass: [String: Any]) -> String {
        var text = "pass \(pass["number"] ?? "?") \(pass["phase"] ?? "?")"
        if let error = pass["error"] as? String { return text + ": \(error)" }
        let moves = pass["moves"] as? [[String: Any]] ?? []
        guard !moves.isEmpty else {
            return text
                + (pass["phase"] as? String == "running" ? ": looking" : ": nothing chosen: \(pass["reason"] ?? "-")")
        }
        let count = { (state: String) in moves.filter { $0["state"] as? String == state }.count }
        text += ": \(moves.count) moves chosen, \(count("moved")) moved"
        if count("moving") > 0 { text += ", \(count("moving")) moving" }
        if count("failed") > 0 { text += ", \(count("failed")) failed" }
        if count("skipped") > 0 { text += ", \(count("skipped")) not begun" }
        text += "; spread \(number(pass["spread_before"])) → \(number(pass["spread_predicted"])) predicted"
        if pass["spread_measured_after"] != nil { text += ", \(number(pass["spread_measured_after"])) measured" }
        return text
    }

    /// The summary, the hosts' loads and a line per move.
    static func pass(_ pass: [String: Any]) -> String {
        var lines = [summary(pass)]
        let hosts = (pass["hosts"] as? [[String: Any]] ?? []).map { "\($0["id"] ?? "?") \(number($0["load"]))" }
        if !hosts.isEmpty { lines.append("  loads   " + hosts.joined(separator: ", ")) }
        for move in pass["moves"] as? [[String: Any]] ?? [] {
            var line = "  \(move["state"] ?? "?") \(move["guest"] ?? "?") \(move["from"] ?? "?") → \(move["to"] ?? "?")"
            line += " (after \(number(move["from_load_after"])), \(number(move["to_load_after"])))"
            if let seconds = move["seconds"] as? Double { line += String(format: " in %.1f s", seconds) }
            if let reason = move["reason"] as? String { line += ": \(reason)" }
            lines.append(line)
        }
        return lines.joined(separator: "\n")
    }

    /// The whole report: settings, the hour's moves, the next pass, the passes newest first.
    static func report(_ report: [String: Any]) -> String {
        let settings = report["settings"] as? [String: Any] ?? [:]
        let interval = (settings["interval_s"] as? Double).map { "every \(NumberOption.format($0)) s" } ?? "off"
        var lines = [
            "balancing \(interval): threshold \(number(settings["threshold"])), target \(number(settings["target"])),"
                + " margin \(number(settings["margin"])); moves in the last hour"
                + " \(report["moves_last_hour"] ?? 0) of \(settings["max_moves_per_hour"] ?? 0)"
                + ((report["running"] as? Bool) == true ? "; a pass runs" : "")
                + (report["next_pass_at"].map { "; next pass at \($0)" } ?? "")
        ]
        for pass in report["passes"] as? [[String: Any]] ?? [] { lines.append(Self.pass(pass)) }
        return lines.joined(separator: "\n")
    }
}
