import Foundation
import GRDB

extension SQLiteControlStore: AccountStore {
    public func addUser(_ user: UserRecord) async throws(ControlError) {
        try AccountRules.validate(user)
        do {
            try await writing("add user \(user.name) to") { db in
                try db.execute(
                    sql: "INSERT INTO users (name, password_hash, site_admin, created_ms) VALUES (?, ?, ?, ?)",
                    arguments: [user.name, user.passwordHash, user.siteAdmin, ControlRows.milliseconds(user.created)])
            }
        } catch {
            guard (error.cause ?? "").contains("UNIQUE constraint failed") else { throw error }
            throw ControlError(.alreadyExists, "user \(user.name) already exists in control store \(path)")
        }
        logger.info("user added", metadata: ["user.name": "\(user.name)", "user.site_admin": "\(user.siteAdmin)"])
    }

    public func user(named name: String) async throws(ControlError) -> UserRecord? {
        try await reading("read user \(name) from") { db in
            try Row.fetchOne(db, sql: "SELECT * FROM users WHERE name = ?", arguments: [name]).map { row in
                UserRecord(
                    name: row["name"], passwordHash: row["password_hash"], siteAdmin: row["site_admin"],
                    created: ControlRows.date(row["created_ms"]))
            }
        }
    }

    public func setMembership(user: String, project: String, role: ProjectRole?) async throws(ControlError) {
        try await writing("set the role of user \(user) in project \(project) in") { db in
            guard try Bool.fetchOne(db, sql: "SELECT 1 FROM users WHERE name = ?", arguments: [user]) != nil else {
                throw ControlError(.notFound, "no user \(user)")
            }
            guard try Bool.fetchOne(db, sql: "SELECT 1 FROM projects WHERE name = ?", arguments: [project]) != nil
            else { throw ControlError(.notFound, "no project \(project)") }
            if let role {
                try db.execute(
                    sql: "INSERT INTO memberships (user_name, project, role) VALUES (?, ?, ?)"
                        + " ON CONFLICT (user_name, project) DO UPDATE SET role = excluded.role",
                    arguments: [user, project, role.rawValue])
            } else {
                try db.execute(
                    sql: "DELETE FROM memberships WHERE user_name = ? AND project = ?", arguments: [user, project])
            }
        }
        logger.info(
            "membership set",
            metadata: ["user.name": "\(user)", "project": "\(project)", "role": "\(role?.rawValue ?? "none")"])
    }

    public func members(project: String) async throws(ControlError) -> [String: ProjectRole] {
        try await reading("list the members of project \(project) in") { db in
            let rows = try Row.fetchAll(
                db, sql: "SELECT user_name, role FROM memberships WHERE project = ?", arguments: [project])
            return AccountRules.membershipsFromRows(rows.map { (project: $0["user_name"], role: $0["role"]) })
        }
    }

    public func principal(user: String) async throws(ControlError) -> Principal? {
        try await reading("read user \(user) from") { db in try Self.principal(db, user: user) }
    }

    public func createSession(_ session: SessionRecord) async throws(ControlError) {
        try await writing("create a session of user \(session.user) in") { db in
            try db.execute(
                sql: "INSERT INTO sessions (token_sha256, user_name, csrf_token, created_ms, expires_ms)"
                    + " VALUES (?, ?, ?, ?, ?)",
                arguments: [
                    session.digest.hex, session.user, session.csrfToken, ControlRows.milliseconds(session.created),
                    ControlRows.milliseconds(session.expires),
                ])
        }
    }

    public func session(_ digest: TokenDigest, now: Date) async throws(ControlError) -> AuthenticatedSession? {
        try await reading("read a session from") { db in
            guard
                let row = try Row.fetchOne(
                    db,
                    sql: "SELECT user_name, csrf_token, expires_ms FROM sessions WHERE token_sha256 = ?"
                        + " AND expires_ms > ?", arguments: [digest.hex, ControlRows.milliseconds(now)]),
                let principal = try Self.principal(db, user: row["user_name"])
            else { return nil }
            return AuthenticatedSession(
                principal: principal, csrfToken: row["csrf_token"], expires: ControlRows.date(row["expires_ms"]))
        }
    }

    public func deleteSession(_ digest: TokenDigest) async throws(ControlError) {
        try await writing("end a session in") { db in
            try db.execute(sql: "DELETE FROM sessions WHERE token_sha256 = ?", arguments: [digest.hex])
        }
    }

    public func deleteExpiredSessions(now: Date) async throws(ControlError) -> Int {
        try await writing("remove expired sessions from") { db in
            try db.execute(
                sql: "DELETE FROM sessions WHERE expires_ms <= ?", arguments: [ControlRows.milliseconds(now)])
            return db.changesCount
        }
    }

    public func createAPIToken(_ token: APITokenRecord, digest: TokenDigest) async throws(ControlError) {
        try AccountRules.validate(apiToken: token)
        try await writing("create an API token of user \(token.user) in") { db in
            try db.execute(
                sql: "INSERT INTO api_tokens (id, secret_sha256, user_name, label, created_ms, last_used_ms)"
                    + " VALUES (?, ?, ?, ?, ?, NULL)",
                arguments: [token.id, digest.hex, token.user, token.label, ControlRows.milliseconds(token.created)])
        }
        logger.info("API token created", metadata: ["user.name": "\(token.user)", "token.id": "\(token.id)"])
    }

    public func apiToken(_ digest: TokenDigest, now: Date) async throws(ControlError) -> Principal? {
        try await writing("use an API token in") { db in
            guard
                let user = try String.fetchOne(
                    db, sql: "SELECT user_name FROM api_tokens WHERE secret_sha256 = ?", arguments: [digest.hex])
            else { return nil }
            try db.execute(
                sql: "UPDATE api_tokens SET last_used_ms = ? WHERE secret_sha256 = ?",
                arguments: [ControlRows.milliseconds(now), digest.hex])
            return try Self.principal(db, user: user)
        }
    }

    public func apiTokens(user: String) async throws(ControlError) -> [APITokenRecord] {
        try await reading("list the API tokens of user \(user) in") { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM api_tokens WHERE user_name = ? ORDER BY created_ms, id", arguments: [user]
            ).map { row in
                APITokenRecord(
                    id: row["id"], user: row["user_name"], label: row["label"],
                    created: ControlRows.date(row["created_ms"]),
                    lastUsed: (row["last_used_ms"] as Int64?).map(ControlRows.date))
            }
        }
    }

    public func revokeAPIToken(id: String, user: String) async throws(ControlError) {
        try await writing("revoke API token \(id) in") { db in
            try db.execute(sql: "DELETE FROM api_tokens WHERE id = ? AND user_name = ?", arguments: [id, user])
            guard db.changesCount == 1 else { throw ControlError(.notFound, "user \(user) has no API token \(id)") }
        }
        logger.info("API token revoked", metadata: ["user.name": "\(user)", "token.id": "\(id)"])
    }

    public func recordLoginAttempt(name: String, throttle: LoginThrottle, now: Date) async throws(ControlError)
        -> LoginAdmission
    {
        let nowMilliseconds = ControlRows.milliseconds(now)
        return try await writing("count a login attempt in") { db in
            let row = try Row.fetchOne(
                db, sql: "SELECT consecutive, last_failure_ms FROM login_failures WHERE name = ?", arguments: [name])
            let admission = AccountRules.admission(
                throttle, failures: row?["consecutive"] ?? 0,
                lastFailure: (row?["last_failure_ms"] as Int64?).map(ControlRows.date), now: now)
            if case .admitted(let failures) = admission {
                try db.execute(
                    sql: "INSERT INTO login_failures (name, consecutive, last_failure_ms) VALUES (?, ?, ?)"
                        + " ON CONFLICT (name) DO UPDATE SET consecutive = excluded.consecutive,"
                        + " last_failure_ms = excluded.last_failure_ms",
                    arguments: [name, failures, nowMilliseconds])
            }
            return admission
        }
    }

    public func resetLoginFailures(name: String) async throws(ControlError) {
        try await writing("reset the failed logins of \(name) in") { db in
            try db.execute(sql: "DELETE FROM login_failures WHERE name = ?", arguments: [name])
        }
    }

    public func loginFailures(name: String) async throws(ControlError) -> Int {
        try await reading("read the failed logins of \(name) in") { db in
            try Int.fetchOne(db, sql: "SELECT consecutive FROM login_failures WHERE name = ?", arguments: [name]) ?? 0
        }
    }

    /// The user and their memberships, inside a transaction.
    static func principal(_ db: Database, user: String) throws -> Principal? {
        guard
            let siteAdmin = try Bool.fetchOne(db, sql: "SELECT site_admin FROM users WHERE name = ?", arguments: [user])
        else { return nil }
        let rows = try Row.fetchAll(
            db, sql: "SELECT project, role FROM memberships WHERE user_name = ?", arguments: [user])
        return Principal(
            user: user, siteAdmin: siteAdmin,
            memberships: AccountRules.membershipsFromRows(rows.map { (project: $0["project"], role: $0["role"]) }))
    }
}
