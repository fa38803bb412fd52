import Foundation

/// How a migration (or a command that wrote a report) ended: the `outcome` of a report.
public enum MigrationOutcome: String, Codable, Sendable, CaseIterable {
    /// Still under way (a report taken before the end).
    case running
    /// The guest runs on the destination (a migration), or the command did what it was asked.
    case succeeded
    /// The destination refused the guest (busy, no room, keys that differ, …); it runs on the source.
    case refused
    /// Pre-copy did not meet the downtime target within the rounds and time it was given.
    case notConverged = "not_converged"
    /// The peer aborted the migration (ABORT), or an operator discarded it.
    case aborted
    /// An operator cancelled the migration on this side (Ctrl-C, SIGTERM) before the handoff;
    /// the peer was sent `ABORT` (reason `cancelled`).
    case cancelled
    /// The source handed the guest over but the destination's resume was not confirmed: ask it
    /// with `ferry status` (the report's `guest` is `handed-over-unconfirmed`).
    case unresolved
    /// Anything else that went wrong: a lost connection, a verification, protocol or system failure.
    case failed

    /// The outcome of a migration that failed with `error`.
    public init(failure error: MigrationError) {
        if error.guest == .handedOverUnconfirmed {
            self = .unresolved
            return
        }
        switch error.code {
        case .refused: self = .refused
        case .notConverged: self = .notConverged
        case .peerAborted: self = .aborted
        case .cancelled: self = .cancelled
        case .transport, .protocolViolation, .verification, .system, .configuration: self = .failed
        }
    }

    /// How the text report says it ("migrated" for a migration that succeeded).
    public var phrase: String {
        switch self {
        case .succeeded: return "migrated"
        case .notConverged: return "not converged"
        case .unresolved: return "handed over, resume not confirmed"
        default: return rawValue
        }
    }
}

/// Why a report's migration or command failed: the report's `error`.
public struct ReportedError: Codable, Sendable, Equatable {
    /// The failure as the command printed it: the problem, and where the guest is.
    public var message: String
    /// What kind of failure, one name per exit code of `ferry` (`MigrationError.Code.name`, or
    /// e.g. "transparency", "guest_failed", "internal").
    public var code: String
    /// The exit status of the `ferry` command that wrote the report; nil when the engine wrote it.
    public var exitCode: Int32?

    public init(message: String, code: String, exitCode: Int32? = nil) {
        self.message = message
        self.code = code
        self.exitCode = exitCode
    }

    enum CodingKeys: String, CodingKey {
        case message, code
        case exitCode = "exit_code"
    }
}

extension MigrationError.Code {
    /// The name reports use for the code (snake case: "not_converged", "peer_aborted", …).
    public var name: String {
        switch self {
        case .refused: return "refused"
        case .notConverged: return "not_converged"
        case .transport: return "transport"
        case .protocolViolation: return "protocol_violation"
        case .verification: return "verification"
        case .peerAborted: return "peer_aborted"
        case .cancelled: return "cancelled"
        case .system: return "system"
        case .configuration: return "configuration"
        }
    }
}

/// A wall-clock instant in a report, written as ISO 8601 in UTC with milliseconds
/// ("2026-12-05T07:01:02.345Z").
public struct ReportTimestamp: Codable, Sendable, Equatable, CustomStringConvertible {
    public var date: Date

    public init(_ date: Date = Date()) {
        self.date = date
    }

    public var description: String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: date)
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        guard let date = formatter.date(from: text) else {
            throw DecodingError.dataCorrupted(
                .init(
                    codingPath: decoder.codingPath,
                    debugDescription: "\(text): not an ISO 8601 time with milliseconds like 2026-12-05T07:01:02.345Z"))
        }
        self.date = date
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

extension MigrationReport {
    /// The version of the report's JSON form (`schema_version`): raised when a key changes
    /// meaning or goes away; new keys do not raise it.
    public static let currentSchemaVersion = 1

    /// Marks the report as ended by `error`: outcome, error, where the guest is, and when it ended.
    public mutating func recordFailure(_ error: MigrationError) {
        outcome = MigrationOutcome(failure: error)
        self.error = ReportedError(message: "\(error)", code: error.code.name)
        guestLocation = error.guest
        finishedAt = ReportTimestamp()
    }
}
