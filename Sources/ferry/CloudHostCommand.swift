import ArgumentParser
import Foundation

/// `ferry cloud host …`: the cloud's hosts as a site admin sees them, and their maintenance.
struct CloudHostCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "host",
        abstract: "List the cloud's hosts; drain one for maintenance and give it back; standby and wake (admins).",
        subcommands: [
            CloudHostList.self, CloudHostDrain.self, CloudHostUndrain.self, CloudHostStandby.self, CloudHostWake.self,
        ])
}

/// `ferry cloud host list`.
struct CloudHostList: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "Every host: mode, health, use and whether it takes guests.")
    @OptionGroup var session: CloudSession

    func run() throws {
        runReportingErrors {
            let answer = try session.call("GET", "/v1/hosts")
            guard !session.json else { return }
            let hosts = answer["hosts"] as? [[String: Any]] ?? []
            var lines = ["HOST        MODE      POWER    HEALTH    TAKES  vCPUs    MEMORY (MiB)     ADDRESS"]
            for host in hosts {
                let mib = { (key: String) in ((host[key] as? Int) ?? 0) >> 20 }
                lines.append(
                    [
                        Self.pad(host["id"], 11), Self.pad(host["mode"], 9), Self.pad(host["power"], 8),
                        Self.pad(host["health"], 9),
                        Self.pad((host["takes_guests"] as? Bool) == true ? "yes" : "no", 6),
                        Self.pad("\(host["used_vcpus"] ?? 0)/\(host["vcpus"] ?? 0)", 8),
                        Self.pad("\(mib("used_memory_bytes"))/\(mib("memory_bytes"))", 16),
                        "\(host["address"] ?? "")",
                    ].joined(separator: " "))
            }
            HumanOutput.print(lines.joined(separator: "\n"))
        }
    }

    static func pad(_ value: Any?, _ width: Int) -> String {
        let text = value.map { "\($0)" } ?? "-"
        return text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
    }
}

/// `ferry cloud host drain HOST [--wait]`.
struct CloudHostDrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drain", abstract: "Empty a host for maintenance: it takes no guests, its guests leave live.",
        discussion: """
            The controller moves the host's running guests to other hosts by live migration, several \
            at once as its cost model chooses from the link and the guests' dirty rates. A guest that \
            cannot go (no host has room, its migration fails) stays and is named with the reason; so \
            is a guest that is not running. With --wait the command shows the drain's progress and \
            ETA until it ends, then a report; exit 0 when the host is drained, 1 when something stays.
            """)
    @OptionGroup var session: CloudSession
    @Argument(help: "The host's ID (`ferry cloud host list`).") var host: String
    @OptionGroup var waiting: CloudWaitOptions

    func run() throws {
        runReportingErrors {
            let answer = try session.call("POST", "/v1/hosts/\(host)/drain", echo: !waiting.wait)
            guard waiting.wait else {
                if !session.json { HumanOutput.print(DrainText.summary(answer)) }
                return
            }
            let report = try ReportFollower.follow(
                answer, runningPhase: "draining", timeout: waiting.timeout, what: "the drain of host \(host)",
                hint: "`ferry cloud host drain \(host) --wait` follows it again", summary: DrainText.summary
            ) { try session.call("GET", "/v1/hosts/\(host)/drain", echo: false) }
            try ReportFollower.show(report, json: session.json, text: DrainText.report)
            guard report["phase"] as? String == "drained" else {
                throw CommandError(description: DrainText.summary(report), exitCode: 1)
            }
        }
    }
}

/// `ferry cloud host undrain HOST`.
struct CloudHostUndrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "undrain",
        abstract: "Give a drained (or draining) host back: it takes guests again; no more of its guests leave.")
    @OptionGroup var session: CloudSession
    @Argument(help: "The host's ID.") var host: String

    func run() throws {
        runReportingErrors {
            let answer = try session.call("POST", "/v1/hosts/\(host)/undrain")
            if !session.json {
                let takes = (answer["takes_guests"] as? Bool).map { $0 ? "yes" : "no" } ?? "?"
                HumanOutput.print("host \(host) is \(answer["mode"] ?? "?"), takes guests: \(takes)")
            }
        }
    }
}

/// How a drain's JSON reads to a person.
enum DrainText {
    static func list(_ report: [String: Any], _ key: String) -> [[String: Any]] {
        report[key] as? [[String: Any]] ?? []
    }

    /// "host h1 draining: 3 of 8 moved, 2 moving, 2 at once, eta 12 s".
    static func summary(_ report: [String: Any]) -> String {
        let cold = list(report, "moved_cold").count
        let moved = list(report, "moved").count + cold
        let total = ["moved", "moved_cold", "moving", "waiting", "failed", "stays"].reduce(0) {
            $0 + list(report, $1).count
        }
        var text = "host \(report["host"] ?? "?") \(report["phase"] ?? "?"): \(moved) of \(total) moved"
        if cold > 0 { text += " (\(cold) cold)" }
        if !list(report, "moving").isEmpty { text += ", \(list(report, "moving").count) moving" }
        if !list(report, "failed").isEmpty { text += ", \(list(report, "failed").count) failed" }
        if !list(report, "stays").isEmpty { text += ", \(list(report, "stays").count) not running" }
        if report["phase"] as? String == "draining" {
            let eta = (report["eta_s"] as? Double).map { "\(Int($0.rounded(.up))) s" } ?? "?"
            text += ", \(report["concurrency"] ?? 1) at once, eta \(eta)"
        }
        return text
    }

    /// The end: the summary, then a line per guest.
    static func report(_ report: [String: Any]) -> String {
        var lines = [summary(report)]
        for guest in list(report, "moved") {
            let seconds = (guest["seconds"] as? Double).map { String(format: "%.1f s", $0) } ?? "?"
            let downtime = (guest["downtime_ms"] as? Double).map { String(format: "%.1f ms", $0) } ?? "?"
            lines.append(
                "  moved   \(guest["name"] ?? "?") → \(guest["to"] ?? "?") in \(seconds), downtime \(downtime)")
        }
        for guest in list(report, "moved_cold") {
            let seconds = (guest["seconds"] as? Double).map { String(format: "%.1f s", $0) } ?? "?"
            let downtime = (guest["downtime_ms"] as? Double).map { String(format: "%.0f ms", $0) } ?? "none"
            lines.append(
                "  cold    \(guest["name"] ?? "?") → \(guest["to"] ?? "?") in \(seconds), interruption \(downtime)"
                    + ((guest["reason"] as? String).map { " (\($0))" } ?? ""))
        }
        for key in ["failed", "stays"] {
            for guest in list(report, key) {
                lines.append(
                    "  \(key == "failed" ? "failed" : "stays ") \(guest["name"] ?? "?"): \(guest["reason"] ?? "?")")
            }
        }
        return lines.joined(separator: "\n")
    }
}
