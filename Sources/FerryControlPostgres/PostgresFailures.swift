import FerryControl
import Foundation
import PostgresNIO

/// What the server or the connection said, as a cause a person can read: postgres-nio's
/// `PSQLError` describes itself as a generic text on purpose, so the SQLSTATE and the server's
/// message are taken out of it here.
struct PostgresServerError: Error, CustomStringConvertible {
    var sqlState: String?
    var text: String

    init(_ error: any Error) {
        if let error = error as? PSQLError {
            sqlState = error.serverInfo?[.sqlState]
            if let message = error.serverInfo?[.message] {
                let detail = error.serverInfo?[.detail].map { " (\($0))" } ?? ""
                text = "SQLSTATE \(sqlState ?? "?"): \(message)\(detail)"
            } else {
                text = "\(error.code)" + (error.underlying.map { ": \($0)" } ?? "")
            }
        } else if let error = error as? PostgresDecodingError {
            sqlState = nil
            text = "column \(error.columnName) could not be read as \(error.targetType): \(error.code)"
        } else {
            sqlState = nil
            text = String(describing: error)
        }
    }

    var description: String { text }
}

/// One mapping from postgres-nio's errors to `ControlError`, naming the database's URL (without
/// its password) and what to do.
enum PostgresFailures {
    static func controlError(_ error: any Error, url: PostgresURL, doing what: String) -> ControlError {
        if let error = error as? ControlError { return error }
        let server = PostgresServerError(error)
        if let state = server.sqlState, let mapped = serverError(state, server, url: url, doing: what) {
            return mapped
        }
        if let error = error as? PSQLError, let mapped = connectionError(error, server, url: url, doing: what) {
            return mapped
        }
        if error is PostgresDecodingError {
            return ControlError(
                .unusableDatabase,
                "control store \(url): a row cannot be read (\(what)); it was not written by this Ferry: restore the"
                    + " database from a backup", cause: server)
        }
        return ControlError(.database, "control store \(url): could not \(what) the database", cause: server)
    }

    private static func serverError(
        _ state: String, _ cause: PostgresServerError, url: PostgresURL, doing what: String
    ) -> ControlError? {
        switch state {
        case "28P01":
            return ControlError(
                .database,
                "PostgreSQL at \(url) refused the password of user \(url.user): put the right password in the URL"
                    + " (postgres://\(url.user):PASSWORD@…), or set it with ALTER ROLE \(url.user) PASSWORD",
                cause: cause)
        case "28000":
            return ControlError(
                .database,
                "PostgreSQL at \(url) does not let user \(url.user) in (no such role, or pg_hba.conf has no line for"
                    + " this host, user and database): create the role or add the line, and reload the server",
                cause: cause)
        case "3D000":
            return ControlError(
                .database,
                "database \(url.database) does not exist on the PostgreSQL server at \(url.host):\(url.port): create it"
                    + " (createdb -h \(url.host) -p \(url.port) -U \(url.user) \(url.database)) or fix the URL",
                cause: cause)
        case "55P03", "57014":
            return ControlError(
                .database,
                "control store \(url) stayed locked by another transaction (\(what)): a controller holds a transaction"
                    + " open too long (see pg_stat_activity); retry", cause: cause)
        case "53100":
            return ControlError(
                .database, "control store \(url): the server's disk is full (\(what)); free space and retry",
                cause: cause)
        case "57P01", "57P02", "57P03":
            return ControlError(
                .database, "the PostgreSQL server at \(url) is shutting down or starting (\(what)): retry", cause: cause
            )
        default: return nil
        }
    }

    private static func connectionError(
        _ error: PSQLError, _ cause: PostgresServerError, url: PostgresURL, doing what: String
    ) -> ControlError? {
        switch error.code {
        case .connectionError, .serverClosedConnection, .uncleanShutdown:
            return ControlError(
                .database,
                "cannot reach the PostgreSQL server of \(url) (\(what)): is it running and listening on"
                    + " \(url.host):\(url.port)? (pg_isready -h \(url.host) -p \(url.port)); check the URL's host and port",
                cause: cause)
        case .sslUnsupported:
            return ControlError(
                .database,
                "the PostgreSQL server of \(url) does not offer TLS and the URL requires it: enable ssl on the server,"
                    + " or use ?sslmode=disable on a trusted network", cause: cause)
        case .authMechanismRequiresPassword:
            return ControlError(
                .database,
                "PostgreSQL at \(url) asks user \(url.user) for a password and the URL has none: write it as"
                    + " postgres://\(url.user):PASSWORD@…", cause: cause)
        case .poolClosed, .clientClosedConnection:
            return ControlError(.database, "control store \(url) is closed (\(what)): open it again", cause: cause)
        default: return nil
        }
    }
}
