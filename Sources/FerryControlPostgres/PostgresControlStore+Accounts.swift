import FerryControl
import Foundation
import Logging
import PostgresNIO

extension PostgresControlStore: AccountStore {
    public func addUser(_ user: UserRecord) async throws(ControlError) {
        try AccountRules.validate(user)
        let created = PostgresRows.milliseconds(user.created)
        do {
            try await writing("add user \(user.name) to") { connection in
                _ = try await connection.query(
                    """
                    INSERT INTO users (name, password_hash, site_admin, created_ms)
                    VALUES (\(user.name), \(user.passwordHash), \(user.siteAdmin), \(created))
                    """, logger: logger)
            }
        } catch {
            guard (error.cause ?? "").contains("SQLSTATE 23505") else { throw error }
            throw ControlError(.alreadyExists, "user \(user.name) already exists in control store \(url)")
        }
        logger.info("user added", metadata: ["user.name": "\(user.name)", "user.site_admin": "\(user.siteAdmin)"])
    }

    public func user(named name: String) async throws(ControlError) -> UserRecord? {
        try await reading("read user \(name) from") { connection in
            try await PostgresRows.all(
                connection, "SELECT * FROM users WHERE name = \(name)", logger: logger
            ) { row in
                UserRecord(
                    name: try row["name"].decode(String.self),
                    passwordHash: try row["password_hash"].decode(String.self),
                    siteAdmin: try row["site_admin"].decode(Bool.self),
                    created: PostgresRows.date(try row["created_ms"].decode(Int64.self)))
            }.first
        }
    }

    public func setMembership(user: String, project: String, role: ProjectRole?) async throws(ControlError) {
        try await writing("set the role of user \(user) in project \(project) in") { connection in
            guard try await Self.exists(connection, "SELECT 1 FROM users WHERE name = \(user)", logger: logger) else {
                throw ControlError(.notFound, "no user \(user)")
            }
            guard try await Self.exists(connection, "SELECT 1 FROM projects WHERE name = \(project)", logger: logger)
            else { throw ControlError(.notFound, "no project \(project)") }
            if let role {
                try await connection.query(
                    """
                    INSERT INTO memberships (user_name, project, role) VALUES (\(user), \(project), \(role.rawValue))
                    ON CONFLICT (user_name, project) DO UPDATE SET role = excluded.role
                    """, logger: logger)
            } else {
                try await connection.query(
                    "DELETE FROM memberships WHERE user_name = \(user) AND project = \(project)", logger: logger)
            }
        }
        logger.info(
            "membership set",
            metadata: ["user.name": "\(user)", "project": "\(project)", "role": "\(role?.rawValue ?? "none")"])
    }

    public func members(project: String) async throws(ControlError) -> [String: ProjectRole] {
        try await reading("list the members of project \(project) in") { connection in
            let rows = try await PostgresRows.all(
                connection, "SELECT user_name, role FROM memberships WHERE project = \(project)", logger: logger
            ) { row in (project: try row["user_name"].decode(String.self), role: try row["role"].decode(String.self)) }
            return AccountRules.membershipsFromRows(rows)
        }
    }

    public func principal(user: String) async throws(ControlError) -> Principal? {
        try await reading("read user \(user) from") { connection in try await self.principal(connection, user: user) }
    }

    public func createSession(_ session: SessionRecord) async throws(ControlError) {
        let created = PostgresRows.milliseconds(session.created)
        let expires = PostgresRows.milliseconds(session.expires)
        try await writing("create a session of user \(session.user) in") { connection in
            _ = try await connection.query(
                """
                INSERT INTO sessions (token_sha256, user_name, csrf_token, created_ms, expires_ms)
                VALUES (\(session.digest.hex), \(session.user), \(session.csrfToken), \(created), \(expires))
                """, logger: logger)
        }
    }

    public func session(_ digest: TokenDigest, now: Date) async throws(ControlError) -> AuthenticatedSession? {
        let now = PostgresRows.milliseconds(now)
        return try await reading("read a session from") { connection in
            let rows = try await PostgresRows.all(
                connection,
                """
                SELECT user_name, csrf_token, expires_ms FROM sessions
                WHERE token_sha256 = \(digest.hex) AND expires_ms > \(now)
                """, logger: logger
            ) { row in
                (
                    user: try row["user_name"].decode(String.self), csrf: try row["csrf_token"].decode(String.self),
                    expires: try row["expires_ms"].decode(Int64.self)
                )
            }
            guard let row = rows.first, let principal = try await self.principal(connection, user: row.user) else {
                return nil
            }
            return AuthenticatedSession(
                principal: principal, csrfToken: row.csrf, expires: PostgresRows.date(row.expires))
        }
    }

    public func deleteSession(_ digest: TokenDigest) async throws(ControlError) {
        try await writing("end a session in") { connection in
            _ = try await connection.query("DELETE FROM sessions WHERE token_sha256 = \(digest.hex)", logger: logger)
        }
    }

    public func deleteExpiredSessions(now: Date) async throws(ControlError) -> Int {
        let now = PostgresRows.milliseconds(now)
        return try await writing("remove expired sessions from") { connection in
            try await PostgresRows.all(
                connection, "DELETE FROM sessions WHERE expires_ms <= \(now) RETURNING 1", logger: logger
            ) { _ in true }.count
        }
    }

    public func createAPIToken(_ token: APITokenRecord, digest: TokenDigest) async throws(ControlError) {
        try AccountRules.validate(apiToken: token)
        let created = PostgresRows.milliseconds(token.created)
        try await writing("create an API token of user \(token.user) in") { connection in
            _ = try await connection.query(
                """
                INSERT INTO api_tokens (id, secret_sha256, user_name, label, created_ms, last_used_ms)
                VALUES (\(token.id), \(digest.hex), \(token.user), \(token.label), \(created), NULL)
                """, logger: logger)
        }
        logger.info("API token created", metadata: ["user.name": "\(token.user)", "token.id": "\(token.id)"])
    }

    public func apiToken(_ digest: TokenDigest, now: Date) async throws(ControlError) -> Principal? {
        let now = PostgresRows.milliseconds(now)
        return try await writing("use an API token in") { connection in
            let users = try await PostgresRows.all(
                connection,
                "UPDATE api_tokens SET last_used_ms = \(now) WHERE secret_sha256 = \(digest.hex) RETURNING user_name",
                logger: logger
            ) { row in try row["user_name"].decode(String.self) }
            guard let user = users.first else { return nil }
            return try await self.principal(connection, user: user)
        }
    }

    public func apiTokens(user: String) async throws(ControlError) -> [APITokenRecord] {
        try await reading("list the API tokens of user \(user) in") { connection in
            try await PostgresRows.all(
                connection, "SELECT * FROM api_tokens WHERE user_name = \(user) ORDER BY created_ms, id", logger: logger
            ) { row in
                APITokenRecord(
                    id: try row["id"].decode(String.self), user: try row["user_name"].decode(String.self),
                    label: try row["label"].decode(String.self),
                    created: PostgresRows.date(try row["created_ms"].decode(Int64.self)),
                    lastUsed: try row["last_used_ms"].decode(Int64?.self).map(PostgresRows.date))
            }
        }
    }

    public func revokeAPIToken(id: String, user: String) async throws(ControlError) {
        try await writing("revoke API token \(id) in") { connection in
            let deleted = try await PostgresRows.all(
                connection, "DELETE FROM api_tokens WHERE id = \(id) AND user_name = \(user) RETURNING id",
                logger: logger
            ) { _ in true }
            guard deleted.count == 1 else { throw ControlError(.notFound, "user \(user) has no API token \(id)") }
        }
        logger.info("API token revoked", metadata: ["user.name": "\(user)", "token.id": "\(id)"])
    }

    public func recordLoginAttempt(name: String, throttle: LoginThrottle, now: Date) async throws(ControlError)
        -> LoginAdmission
    {
        let nowMilliseconds = PostgresRows.milliseconds(now)
        return try await writing("count a login attempt in") { connection in
            let rows = try await PostgresRows.all(
                connection, "SELECT consecutive, last_failure_ms FROM login_failures WHERE name = \(name)",
                logger: logger
            ) { row in
                (count: try row["consecutive"].decode(Int.self), last: try row["last_failure_ms"].decode(Int64.self))
            }
            let admission = AccountRules.admission(
                throttle, failures: rows.first?.count ?? 0, lastFailure: rows.first.map { PostgresRows.date($0.last) },
                now: now)
            if case .admitted(let failures) = admission {
                try await connection.query(
                    """
                    INSERT INTO login_failures (name, consecutive, last_failure_ms) VALUES (\(name), \(failures),
                    \(nowMilliseconds))
                    ON CONFLICT (name) DO UPDATE SET consecutive = excluded.consecutive,
                    last_failure_ms = excluded.last_failure_ms
                    """, logger: logger)
            }
            return admission
        }
    }

    public func resetLoginFailures(name: String) async throws(ControlError) {
        try await writing("reset the failed logins of \(name) in") { connection in
            _ = try await connection.query("DELETE FROM login_failures WHERE name = \(name)", logger: logger)
        }
    }

    public func loginFailures(name: String) async throws(ControlError) -> Int {
        try await reading("read the failed logins of \(name) in") { connection in
            try await PostgresRows.all(
                connection, "SELECT consecutive FROM login_failures WHERE name = \(name)", logger: logger
            ) { row in try row["consecutive"].decode(Int.self) }.first ?? 0
        }
    }

    /// The user and their memberships, on `connection` (in its transaction, if any).
    func principal(_ connection: PostgresConnection, user: String) async throws -> Principal? {
        let admin = try await PostgresRows.all(
            connection, "SELECT site_admin FROM users WHERE name = \(user)", logger: logger
        ) { row in try row["site_admin"].decode(Bool.self) }
        guard let siteAdmin = admin.first else { return nil }
        let rows = try await PostgresRows.all(
            connection, "SELECT project, role FROM memberships WHERE user_name = \(user)", logger: logger
        ) { row in (project: try row["project"].decode(String.self), role: try row["role"].decode(String.self)) }
        return Principal(user: user, siteAdmin: siteAdmin, memberships: AccountRules.membershipsFromRows(rows))
    }

    private static func exists(_ connection: PostgresConnection, _ query: PostgresQuery, logger: Logger) async throws
        -> Bool
    {
        try await !PostgresRows.all(connection, query, logger: logger) { _ in true }.isEmpty
    }
}
