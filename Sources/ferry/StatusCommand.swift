import ArgumentParser
import FerryMigration
import FerryProtocol
import FerryTransport
import Foundation

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract:
            "Ask a destination agent where its migrations stand: receiving, awaiting COMMIT, resumed or discarded.",
        discussion: """
            Resolves an unknown outcome without guessing: after a source reported "handed over; the destination \
            did not confirm its resume", this tells whether the guest runs on the destination (resumed), still \
            waits for the source's COMMIT (awaiting-commit: the guest runs nowhere; the source, which keeps \
            retrying, or its operator decides), or was discarded (it never ran there). Exit status 0 when the \
            destination answered. Session ids and digests are shown only with --token (that session's) or \
            --key-file; to anyone else the destination answers with id 0.

            --commit and --discard decide a handoff in the source's place, for a migration awaiting its COMMIT \
            whose source is gone for good (its host failed or was fenced): --commit resumes the guest on the \
            destination, --discard drops the verified image. Both need --session and --token: the session token \
            is in the source's report. Use --commit only when the source can never resume the guest itself; \
            otherwise it would run twice.
            """)

    @Option(
        help: ArgumentHelp(
            "The destination agent's address (its ferry receive --listen); a port alone means 127.0.0.1.",
            valueName: "host:port"))
    var connect = "127.0.0.1:7700"

    @Option(help: ArgumentHelp("Only this migration (the session id a source's report names, hex).", valueName: "id"))
    var session: String?

    @Option(
        help: ArgumentHelp(
            "The session's token (32 hex digits, the source's report prints it): needed by --commit and --discard, and to see session ids and digests.",
            valueName: "hex"))
    var token: String?

    @Option(help: ArgumentHelp("Only this guest's migrations.", valueName: "name"))
    var guest: String?

    @Option(
        name: .customLong("key-file"),
        help: ArgumentHelp("The destination's shared key, if it has one (ferry receive --key-file).", valueName: "path")
    )
    var keyFile: String?

    @Flag(help: "Print the answer as JSON.")
    var json = false

    @Flag(
        help:
            "Resume the guest on the destination in the source's place (needs --session; only for a source that is gone for good)."
    )
    var commit = false

    @Flag(help: "Drop the destination's verified image in the source's place (needs --session).")
    var discard = false

    /// Usage errors (exit 2), before anything is sent: deciding a handoff needs the session and
    /// its token, and a token is 32 hex digits.
    func validate() throws {
        try usageCheck("--connect", connect) { _ = try Endpoint.parse($0, defaultHost: EndpointOption.defaultHost) }
        if let session, Self.sessionID(session) == nil {
            throw ValidationError("--session \(session): give the session id in hex, as the source's report prints it")
        }
        if let guest, let problem = GuestName.problem(guest) { throw ValidationError("--guest \(guest): \(problem)") }
        if let token, SessionToken(hex: token).map({ $0.isNone }) ?? true {
            throw ValidationError(
                "--token \(token): give the session token as 32 hex digits, as the source's report prints it")
        }
        if commit && discard { throw ValidationError("give --commit or --discard, not both") }
        if (commit || discard) && session == nil {
            throw ValidationError(
                "\(commit ? "--commit" : "--discard") needs --session ID: the session id is in the source's report")
        }
        if (commit || discard) && token == nil {
            throw ValidationError(
                "\(commit ? "--commit" : "--discard") needs --token: the session token is in the source's report (its session_token, or the ferry status command it suggests)"
            )
        }
    }

    func run() throws {
        runReportingErrors {
            let endpoint = try Endpoint.parse(connect, defaultHost: EndpointOption.defaultHost)
            let security = try SecurityOptions.make(
                keyFile: keyFile, encrypt: false, cipher: "auto", encryptFlag: "--encrypt")
            var query = StatusQuery()
            if let session, let id = Self.sessionID(session) { query.sessionID = id }
            if let token, let parsed = SessionToken(hex: token) { query.sessionToken = parsed }
            if let guest { query.guestName = guest }
            if commit || discard {
                print(
                    try decide(
                        endpoint: endpoint, session: query.sessionID, token: query.sessionToken, security: security))
                return
            }
            let (connection, answers) = try StatusClient.ask(endpoint, query, security: security)
            connection.close()
            if json {
                let answer = StatusAnswer(
                    destination: connect, sessions: answers.map(StatusAnswer.Session.init))
                print(String(decoding: try MigrationReport.json(answer), as: UTF8.self))
                return
            }
            for status in answers {
                let name = status.guestName.isEmpty ? "-" : status.guestName
                // Id 0: the destination shows ids only with the session's token or the key.
                let id = status.sessionID == 0 ? "(hidden)" : hexID(status.sessionID)
                print("session \(id)  guest \(name)  \(status.state)  (\(status.ageSeconds) s)  \(status.message)")
            }
        }
    }
}

/// `ferry status --json`: what the destination answered, numbers as numbers.
struct StatusAnswer: Codable {
    struct Session: Codable {
        /// 16 hex digits; null when the destination hid it (no token, no key).
        var session: String?
        var guest: String
        /// receiving, awaiting-commit, resumed, discarded or unknown.
        var state: String
        /// The image digest, 16 hex digits; null when hidden or not known yet.
        var digest: String?
        var pages: UInt64
        var ageS: UInt32
        var message: String

        init(_ status: Status) {
            session = status.sessionID == 0 ? nil : hexID(status.sessionID)
            guest = status.guestName
            state = "\(status.state)"
            digest = status.digest == 0 ? nil : hexID(status.digest)
            pages = status.pageCount
            ageS = status.ageSeconds
            message = status.message
        }

        enum CodingKeys: String, CodingKey {
            case session, guest, state, digest, pages, message
            case ageS = "age_s"
        }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(session, forKey: .session)  // null, not absent, when hidden
            try container.encode(guest, forKey: .guest)
            try container.encode(state, forKey: .state)
            try container.encode(digest, forKey: .digest)
            try container.encode(pages, forKey: .pages)
            try container.encode(ageS, forKey: .ageS)
            try container.encode(message, forKey: .message)
        }
    }

    var schemaVersion = MigrationReport.currentSchemaVersion
    var destination: String
    var sessions: [Session]

    enum CodingKeys: String, CodingKey {
        case destination, sessions
        case schemaVersion = "schema_version"
    }
}

extension StatusCommand {
    /// A session id as given: hex, optionally 0x; nil when it is not one (or 0).
    static func sessionID(_ text: String) -> UInt64? {
        let digits = text.hasPrefix("0x") ? String(text.dropFirst(2)) : text
        guard let id = UInt64(digits, radix: 16), id != 0 else { return nil }
        return id
    }

    /// Sends COMMIT or ABORT for `session` as its source would after a resolve query.
    private func decide(endpoint: Endpoint, session: UInt64, token: SessionToken, security: ConnectionSecurity) throws
        -> String
    {
        let (connection, answers) = try StatusClient.ask(
            endpoint, StatusQuery(sessionID: session, sessionToken: token, resolve: true), security: security)
        defer { connection.close() }
        let status = answers[0]
        guard status.state == .awaitingCommit else {
            throw CommandError(
                description:
                    "session \(hexID(session)) is \(status.state), not awaiting its COMMIT: \(status.message); nothing was changed",
                exitCode: 3)
        }
        // A wrong token is answered as a plain query (digest 0) on a connection the destination
        // closes: nothing would be taken.
        guard status.digest != 0 else {
            throw CommandError(
                description:
                    "session \(hexID(session)) awaits its COMMIT but the destination did not take --token as its token: check it (the source's report prints it); nothing was changed",
                exitCode: 3)
        }
        if commit {
            try connection.send(Commit())
            let resumed = try connection.receive(Resumed.self)
            try? connection.send(Done())
            return
                "session \(hexID(session)): committed; the guest resumed on the destination in \(Double(resumed.resumeMicroseconds) / 1000) ms"
        }
        try connection.send(Abort(reason: .cancelled, message: "discarded by an operator (ferry status --discard)"))
        return "session \(hexID(session)): discarded; the guest will not run on the destination"
    }
}

private func hexID(_ value: UInt64) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: 16 - digits.count) + digits
}
