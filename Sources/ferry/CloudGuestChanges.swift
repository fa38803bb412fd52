import ArgumentParser
import Foundation

/// `ferry cloud guest suspend ID [--wait]`.
struct CloudGuestSuspend: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "suspend", abstract: "Suspend a running guest: its host saves it to a file; it is not billed.",
        discussion: """
            The guest keeps its place on its host; `ferry cloud guest resume ID` restores it there. \
            The answer comes once its host has saved it; with --wait the command also follows it to \
            suspended and prints how long that took.
            """)
    @OptionGroup var target: CloudGuestTarget
    @OptionGroup var waiting: CloudWaitOptions

    func run() throws {
        runReportingErrors {
            let began = Date()
            let hint = "only a running guest is suspended (`ferry cloud guest show \(target.id)` tells its state)"
            let answer = try target.call("POST", "suspend", hint: hint, echo: !waiting.wait)
            guard waiting.wait else { return target.show(answer) }
            let ended = try CloudGuestFollower.follow(target, from: answer, began: began, timeout: waiting.timeout) {
                ["suspended", "error", "deleted"].contains($0["state"] as? String ?? "")
            }
            target.show(ended, echo: true)
            guard ended["state"] as? String == "suspended" else {
                throw CommandError(
                    description: "guest \(target.id) is \(ended["state"] ?? "?"), not suspended: "
                        + "\(ended["error_reason"] ?? CloudGuestFollower.lastCause(target) ?? "no reason given")",
                    exitCode: 1)
            }
            if !target.session.json {
                HumanOutput.print(
                    "guest \(target.id) suspended on host \(ended["host"] ?? "?") after "
                        + CloudGuestFollower.milliseconds(since: began))
            }
        }
    }
}

/// `ferry cloud guest resume ID [--wait]`.
struct CloudGuestResume: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resume", abstract: "Resume a suspended guest on its host, restored from its suspend file.",
        discussion: """
            The guest goes suspended → building → running. Without --wait the command returns once \
            the resume is accepted (building); with --wait it returns when the guest runs, or fails \
            with the reason it went to error.
            """)
    @OptionGroup var target: CloudGuestTarget
    @OptionGroup var waiting: CloudWaitOptions

    func run() throws {
        runReportingErrors {
            let began = Date()
            let hint =
                "only a suspended guest is resumed (a stopped one is started: `ferry cloud guest start \(target.id)`)"
            let answer = try target.call("POST", "resume", hint: hint, echo: !waiting.wait)
            guard waiting.wait else { return target.show(answer) }
            let ended = try CloudGuestFollower.follow(target, from: answer, began: began, timeout: waiting.timeout) {
                ["running", "error", "deleted", "stopped"].contains($0["state"] as? String ?? "")
            }
            target.show(ended, echo: true)
            guard ended["state"] as? String == "running" else {
                throw CommandError(
                    description: "guest \(target.id) did not resume, it is \(ended["state"] ?? "?"): "
                        + "\(ended["error_reason"] ?? CloudGuestFollower.lastCause(target) ?? "no reason given")"
                        + " (`ferry cloud guest journal \(target.id)` shows what happened)",
                    exitCode: 1)
            }
            if !target.session.json {
                HumanOutput.print(
                    "guest \(target.id) running on host \(ended["host"] ?? "?") after "
                        + CloudGuestFollower.milliseconds(since: began))
            }
        }
    }
}

/// `ferry cloud guest migrate ID [--host H] [--wait]`.
struct CloudGuestMigrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate", abstract: "Move a running guest to another host by live migration (a site admin).",
        discussion: """
            To --host H, or without it to the host the scheduler picks. Without --wait the command \
            prints the guest moving (moving to H) and returns; with --wait it follows the move, \
            printing the guest on its new host at the end, or fails with the reason it stayed where \
            it was.
            """)
    @OptionGroup var target: CloudGuestTarget
    @Option(help: ArgumentHelp("The destination host's ID (default: the scheduler's choice).", valueName: "host"))
    var host: String?
    @Option(
        name: .customLong("max-bandwidth-mb-per-s"),
        help: ArgumentHelp("Cap the migration's rate, in MB/s (default: as fast as it goes).", valueName: "rate"))
    var maxBandwidthMBPerSecond: Double?
    @OptionGroup var waiting: CloudWaitOptions

    func validate() throws {
        if let rate = maxBandwidthMBPerSecond, !(rate > 0 && rate.isFinite) {
            throw ValidationError("--max-bandwidth-mb-per-s: a rate above 0")
        }
        if host?.isEmpty == true {
            throw ValidationError("--host: a host's ID, such as h2 (leave it out for the scheduler's choice)")
        }
    }

    func run() throws {
        runReportingErrors {
            let began = Date()
            var body: [String: Any] = [:]
            if let host { body["host"] = host }
            if let rate = maxBandwidthMBPerSecond { body["max_bandwidth_bytes_per_s"] = rate * 1e6 }
            let hint = "a guest moves while it runs and is not moving already"
            let answer = try target.call("POST", "migrate", body: body, hint: hint, echo: !waiting.wait)
            guard waiting.wait else { return target.show(answer) }
            let source = answer["host"] as? String ?? "?"
            let destination = answer["moving_to"] as? String ?? "?"
            let ended = try CloudGuestFollower.follow(target, from: answer, began: began, timeout: waiting.timeout) {
                $0["moving_to"] == nil
            }
            target.show(ended, echo: true)
            guard ended["host"] as? String == destination else {
                throw CommandError(
                    description: "guest \(target.id) stays on host \(ended["host"] ?? source), its move to host "
                        + "\(destination) failed: \(CloudGuestFollower.lastCause(target) ?? "no reason given")",
                    exitCode: 1)
            }
            if !target.session.json {
                HumanOutput.print(
                    "guest \(target.id) moved from host \(source) to host \(destination) after "
                        + CloudGuestFollower.milliseconds(since: began))
            }
        }
    }
}
