import ArgumentParser
import FerryAgent
import Foundation

/// `ferry cloud …`: a user's view of `ferry control` through its API, with an API token that
/// `ferry cloud login` makes and keeps in a file of the user's own (docs/control-plane.md).
struct CloudCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cloud", abstract: "Use a Ferry cloud as one of its users: guests, catalogue, invoices.",
        discussion: """
            `ferry cloud login URL --user NAME` logs in once and keeps an API token in \
            ~/.config/ferry/cloud.json (mode 0600; --config or $FERRY_CLOUD_CONFIG to put it elsewhere); \
            the other commands use it. Exit status: 0 done, 1 refused by the controller (the message says \
            why), 3 not logged in or the token is no longer valid, 5 the controller cannot be reached.
            """,
        subcommands: [
            CloudLogin.self, CloudLogout.self, CloudCatalogue.self, CloudGuests.self, CloudCreate.self,
            CloudGuestCommand.self, CloudHostCommand.self, CloudBalance.self, CloudConsolidate.self,
            CloudInvoice.self,
        ])
}

/// Where the login is kept, and the client it makes.
struct CloudSession: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "The login file (default: $FERRY_CLOUD_CONFIG, else ~/.config/ferry/cloud.json).", valueName: "path"))
    var config: String?

    @Flag(help: "Print the controller's JSON as it is.") var json = false

    var path: String {
        config ?? ProcessInfo.processInfo.environment["FERRY_CLOUD_CONFIG"]
            ?? (ProcessInfo.processInfo.environment["HOME"] ?? "/root") + "/.config/ferry/cloud.json"
    }

    func load() throws -> CloudLoginFile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CommandError(
                description: "not logged in (no \(path)): run `ferry cloud login URL --user NAME`", exitCode: 3)
        }
        guard let file = try? JSONDecoder().decode(CloudLoginFile.self, from: data) else {
            throw CommandError.configuration("\(path) is not a login this ferry wrote: run `ferry cloud login` again")
        }
        return file
    }

    func client() throws -> AgentClient {
        let file = try load()
        do throws(AgentClientError) { return try AgentClient(url: file.url, bearer: file.token) } catch {
            throw CommandError.configuration(error.message)
        }
    }

    /// One call with the token; the answer's JSON object (with `--json` and `echo`, printed as it
    /// came). 401 means the token is gone; a refusal for the guest's state (409) adds `conflictHint`.
    func call(
        _ method: String, _ target: String, body: [String: Any]? = nil, echo: Bool = true, conflictHint: String = ""
    ) throws -> [String: Any] {
        let (response, object) = try CloudExchange.send(
            try client(), method, target, body, refusalPrefix: "\(method) \(target): ",
            unauthenticatedHint: " (run `ferry cloud login` again)", conflictHint: conflictHint)
        if json, echo { FileHandle.standardOutput.write(Data(response.body)) }
        return object
    }
}

/// One request to the controller and its JSON answer; a failure to reach it throws with the
/// client's exit code, a refusal with the controller's message (exit 3 for 401, else 1).
enum CloudExchange {
    static func send(
        _ client: AgentClient, _ method: String, _ target: String, _ body: [String: Any]?,
        headers: [(String, String)] = [], refusalPrefix: String = "", unauthenticatedHint: String = "",
        conflictHint: String = ""
    ) throws -> (response: AgentResponse, object: [String: Any]) {
        let bytes = try body.map { Array(try JSONSerialization.data(withJSONObject: $0)) } ?? []
        let response: AgentResponse
        do throws(AgentClientError) { response = try client.send(method, target, body: bytes, headers: headers) } catch
        {
            throw CommandError(
                description: error.message.replacingOccurrences(of: "the agent", with: "the controller"),
                exitCode: agentExitCode(for: error))
        }
        let object = (try? JSONSerialization.jsonObject(with: Data(response.body))) as? [String: Any] ?? [:]
        guard (200..<300).contains(response.status) else {
            let message = (object["error"] as? [String: Any])?["message"] as? String ?? "HTTP \(response.status)"
            if response.status == 401 {
                throw CommandError(description: message + unauthenticatedHint, exitCode: 3)
            }
            let hint = response.status == 409 && !conflictHint.isEmpty ? "; " + conflictHint : ""
            throw CommandError(description: refusalPrefix + message + hint, exitCode: 1)
        }
        return (response, object)
    }
}

struct CloudLoginFile: Codable {
    var url: String
    var user: String
    var token: String
    var tokenID: String

    enum CodingKeys: String, CodingKey {
        case url, user, token
        case tokenID = "token_id"
    }
}

struct CloudLogin: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "login", abstract: "Log in and keep an API token for the other commands.")
    @Argument(help: "The controller, http://HOST:PORT.") var url: String
    @Option(help: "Your user name.") var user: String
    @Option(
        name: .customLong("password-file"),
        help: ArgumentHelp(
            "A file holding your password (default: read a line from standard input).", valueName: "path"))
    var passwordFile: String?
    @OptionGroup var session: CloudSession

    func run() throws {
        runReportingErrors {
            let password = try readPassword()
            let anonymous: AgentClient
            do throws(AgentClientError) { anonymous = try AgentClient(url: url, key: nil) } catch {
                throw CommandError(description: error.message, exitCode: 9)
            }
            let login = try CloudExchange.send(
                anonymous, "POST", "/v1/login", ["name": user, "password": password], headers: [])
            guard let cookie = login.response.header("set-cookie")?.split(separator: ";").first,
                let csrf = login.object["csrf_token"] as? String
            else { throw CommandError(description: "the controller's login answer has no session", exitCode: 7) }
            let host = ProcessInfo.processInfo.hostName
            let made = try CloudExchange.send(
                anonymous, "POST", "/v1/tokens", ["label": "ferry cloud on \(host)"],
                headers: [("Cookie", String(cookie)), ("X-CSRF-Token", csrf)])
            _ = try? CloudExchange.send(
                anonymous, "POST", "/v1/logout", nil, headers: [("Cookie", String(cookie)), ("X-CSRF-Token", csrf)])
            guard let token = made.object["secret"] as? String, let id = made.object["id"] as? String else {
                throw CommandError(description: "the controller made no API token", exitCode: 7)
            }
            let file = CloudLoginFile(url: url, user: user, token: token, tokenID: id)
            let directory = (session.path as NSString).deletingLastPathComponent
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let data = try JSONEncoder().encode(file)
            guard
                FileManager.default.createFile(
                    atPath: session.path, contents: data, attributes: [.posixPermissions: 0o600])
            else { throw CommandError.configuration("cannot write \(session.path)") }
            HumanOutput.print("logged in to \(url) as \(user); token \(id) kept in \(session.path)")
        }
    }

    private func readPassword() throws -> String {
        if let passwordFile {
            guard let text = try? String(contentsOfFile: passwordFile, encoding: .utf8) else {
                throw CommandError.configuration("cannot read --password-file \(passwordFile)")
            }
            return text.trimmingCharacters(in: .newlines)
        }
        guard let line = readLine(strippingNewline: true) else {
            throw CommandError.configuration("no password on standard input: give --password-file or pipe it in")
        }
        return line
    }
}

struct CloudLogout: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logout", abstract: "Revoke the kept API token and forget it.")
    @OptionGroup var session: CloudSession

    func run() throws {
        runReportingErrors {
            let file = try session.load()
            _ = try? session.call("DELETE", "/v1/tokens/\(file.tokenID)")
            try FileManager.default.removeItem(atPath: session.path)
            HumanOutput.print("logged out of \(file.url); token \(file.tokenID) revoked")
        }
    }
}

struct CloudCatalogue: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "catalogue", abstract: "The flavors and images guests are made from, and your projects.")
    @OptionGroup var session: CloudSession

    func run() throws {
        runReportingErrors {
            let flavors = try session.call("GET", "/v1/flavors")["flavors"] as? [[String: Any]] ?? []
            let images = try session.call("GET", "/v1/images")["images"] as? [[String: Any]] ?? []
            let projects = try session.call("GET", "/v1/projects")["projects"] as? [[String: Any]] ?? []
            if session.json { return }
            HumanOutput.print("flavors:")
            for flavor in flavors {
                let resources = flavor["resources"] as? [String: Any] ?? [:]
                let price = Double(flavor["price_per_second_micros"] as? Int ?? 0) * 3600 / 1e6
                HumanOutput.print(
                    "  \(flavor["name"] ?? "?")  \(resources["vcpus"] ?? "?") vCPU  "
                        + "\(GuestText.size(resources["memory_bytes"] as? Int ?? 0)) memory  "
                        + "\(GuestText.size(resources["disk_bytes"] as? Int ?? 0)) disk  "
                        + String(format: "%.4f per hour", price))
            }
            HumanOutput.print("images:")
            for image in images { HumanOutput.print("  \(image["name"] ?? "?")  (\(image["kind"] ?? "?"))") }
            HumanOutput.print("projects: " + projects.compactMap { $0["name"] as? String }.joined(separator: ", "))
        }
    }
}

enum CloudText {
    static func line(_ guest: [String: Any]) -> String {
        let fields = ["id", "name", "state", "flavor", "image", "host"].map { "\(guest[$0] ?? "-")" }
        return fields.joined(separator: "  ")
            + ((guest["error_reason"] as? String).map { "  (\($0))" } ?? "")
    }
}

struct CloudGuests: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "guests", abstract: "List a project's guests.")
    @Option(help: "The project.") var project: String
    @OptionGroup var session: CloudSession

    func run() throws {
        runReportingErrors {
            let guests = try session.call("GET", "/v1/projects/\(project)/guests")["guests"] as? [[String: Any]] ?? []
            if session.json { return }
            if guests.isEmpty { HumanOutput.print("project \(project) has no guests") }
            for guest in guests { HumanOutput.print(CloudText.line(guest)) }
        }
    }
}

struct CloudCreate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create", abstract: "Create a guest and wait until it runs.",
        discussion: """
            The create carries a client token (--client-token, default a new one each run): the same \
            token and request again give the same guest, never a second one, so a script may retry.
            """)
    @Argument(help: "The guest's name.") var name: String
    @Option(help: "The project.") var project: String
    @Option(help: "The flavor (see `ferry cloud catalogue`).") var flavor: String
    @Option(help: "The image.") var image: String
    @Option(name: .customLong("client-token"), help: "The idempotency token (default: a new UUID).")
    var clientToken: String?
    @Option(
        name: .customLong("migration-policy"),
        help: ArgumentHelp(
            "How the guest leaves a host the operator empties: live_only (live migration alone; if it cannot go"
                + " live it stays) or live_then_cold (cold, with a downtime of seconds, when it cannot go live).",
            valueName: "policy"))
    var migrationPolicy = "live_only"
    @Flag(name: .customLong("no-wait"), help: "Return once the create is accepted.") var noWait = false
    @Option(help: ArgumentHelp("Seconds to wait for running.", valueName: "seconds")) var timeout = 120.0
    @OptionGroup var session: CloudSession

    func validate() throws {
        guard ["live_only", "live_then_cold"].contains(migrationPolicy) else {
            throw ValidationError("--migration-policy \(migrationPolicy): live_only or live_then_cold")
        }
    }

    func run() throws {
        runReportingErrors {
            let began = Date()
            let body: [String: Any] = [
                "name": name, "flavor": flavor, "image": image, "client_token": clientToken ?? UUID().uuidString,
                "migration_policy": migrationPolicy,
            ]
            var guest = try session.call("POST", "/v1/projects/\(project)/guests", body: body)
            let id = guest["id"] as? String ?? "?"
            if noWait || session.json {
                if !session.json { HumanOutput.print("guest \(id) \(guest["state"] ?? "?")") }
                return
            }
            while let state = guest["state"] as? String, !["running", "error"].contains(state) {
                guard Date().timeIntervalSince(began) < timeout else {
                    throw CommandError(
                        description: "guest \(id) is still \(state) after \(Int(timeout)) s", exitCode: 1)
                }
                usleep(20_000)
                guest = try session.call("GET", "/v1/guests/\(id)")
            }
            let elapsed = String(format: "%.0f ms", Date().timeIntervalSince(began) * 1000)
            if guest["state"] as? String == "error" {
                throw CommandError(description: "guest \(id) failed: \(guest["error_reason"] ?? "?")", exitCode: 1)
            }
            HumanOutput.print("guest \(id) running on host \(guest["host"] ?? "?") after \(elapsed)")
        }
    }
}

struct CloudInvoice: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "invoice", abstract: "A project's bill for a period (its admins only).")
    @Option(help: "The project.") var project: String
    @Option(help: "From (RFC 3339 time or date; default: the start of this month, UTC).") var from: String?
    @Option(help: "To (default: now).") var to: String?
    @OptionGroup var session: CloudSession

    func run() throws {
        runReportingErrors {
            var query: [String] = []
            if let from { query.append("from=\(from)") }
            if let to { query.append("to=\(to)") }
            let target = "/v1/projects/\(project)/invoice" + (query.isEmpty ? "" : "?" + query.joined(separator: "&"))
            let invoice = try session.call("GET", target)
            if session.json { return }
            HumanOutput.print("project \(project), \(invoice["from"] ?? "?") to \(invoice["to"] ?? "?"):")
            for line in invoice["lines"] as? [[String: Any]] ?? [] {
                HumanOutput.print(
                    "  \(line["guest_id"] ?? "?")  \(line["name"] ?? "")  \(line["billed_seconds"] ?? "?") s  \(line["amount"] ?? "?")"
                )
            }
            HumanOutput.print("total \(invoice["total"] ?? "?")")
        }
    }
}
