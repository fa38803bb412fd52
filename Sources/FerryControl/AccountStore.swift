import Foundation

/// The SHA-256 of a bearer secret (a session's cookie value, an API token), in lowercase hex:
/// all a store keeps of it, so that a copy of the database lets nobody in.
public struct TokenDigest: Sendable, Hashable, CustomStringConvertible {
    public let hex: String

    public init(of token: String) { hex = Secrets.digest(token) }

    /// A short prefix only: the digest is not a secret, but logs need no more.
    public var description: String { "sha256:\(hex.prefix(8))…" }
}

/// A user as stored.
public struct UserRecord: Sendable, Hashable {
    public var name: String
    /// `PasswordHash.encoded`.
    public var passwordHash: String
    public var siteAdmin: Bool
    public var created: Date

    public init(name: String, passwordHash: String, siteAdmin: Bool, created: Date) {
        self.name = name
        self.passwordHash = passwordHash
        self.siteAdmin = siteAdmin
        self.created = created
    }
}

/// A session as stored: the digest of its cookie value, never the value.
public struct SessionRecord: Sendable, Hashable {
    public var digest: TokenDigest
    public var user: String
    public var csrfToken: String
    public var created: Date
    public var expires: Date

    public init(digest: TokenDigest, user: String, csrfToken: String, created: Date, expires: Date) {
        self.digest = digest
        self.user = user
        self.csrfToken = csrfToken
        self.created = created
        self.expires = expires
    }
}

/// A live session, found by its cookie: who it is and the CSRF token its forms must carry.
public struct AuthenticatedSession: Sendable, Hashable {
    public var principal: Principal
    public var csrfToken: String
    public var expires: Date

    public init(principal: Principal, csrfToken: String, expires: Date) {
        self.principal = principal
        self.csrfToken = csrfToken
        self.expires = expires
    }

    /// Whether a form's CSRF token is this session's (compared in constant time).
    public func accepts(csrfToken submitted: String) -> Bool {
        Secrets.equalInConstantTime(Array(submitted.utf8), Array(csrfToken.utf8))
    }
}

/// An API token as stored and listed: `id` names it (in lists, to revoke it); its secret is
/// known only by its digest.
public struct APITokenRecord: Sendable, Hashable {
    public var id: String
    public var user: String
    public var label: String
    public var created: Date
    public var lastUsed: Date?

    public init(id: String, user: String, label: String, created: Date, lastUsed: Date? = nil) {
        self.id = id
        self.user = user
        self.label = label
        self.created = created
        self.lastUsed = lastUsed
    }
}

/// What the store says to a login attempt it was asked to count.
public enum LoginAdmission: Sendable, Hashable {
    /// Counted as a failure up front: `failures` consecutive ones now, this one included.
    case admitted(failures: Int)
    /// Not counted, not to be checked: wait `retryAfter`.
    case throttled(retryAfter: Duration)
}

/// Users, their projects and roles, sessions, API tokens and failed logins. Separate from
/// `ControlStore` (the cluster's state); `SQLiteControlStore` and `PostgresControlStore`
/// implement both on the same database. Each operation is one transaction; times are the
/// caller's `now`, stored as Unix milliseconds.
public protocol AccountStore: Sendable {
    /// Adds a user (`alreadyExists` if the name is taken).
    func addUser(_ user: UserRecord) async throws(ControlError)
    func user(named name: String) async throws(ControlError) -> UserRecord?
    /// Gives `user` `role` in `project`, or takes the membership away (`role` nil). `notFound`
    /// if there is no such user or project.
    func setMembership(user: String, project: String, role: ProjectRole?) async throws(ControlError)
    /// The project's members and their roles.
    func members(project: String) async throws(ControlError) -> [String: ProjectRole]
    /// The user with their memberships; nil if there is no such user.
    func principal(user: String) async throws(ControlError) -> Principal?

    func createSession(_ session: SessionRecord) async throws(ControlError)
    /// The session with that digest if it has not expired at `now`; nil otherwise.
    func session(_ digest: TokenDigest, now: Date) async throws(ControlError) -> AuthenticatedSession?
    /// Ends a session (logout); nothing if there is none.
    func deleteSession(_ digest: TokenDigest) async throws(ControlError)
    /// Removes the sessions expired at `now`; returns how many.
    func deleteExpiredSessions(now: Date) async throws(ControlError) -> Int

    func createAPIToken(_ token: APITokenRecord, digest: TokenDigest) async throws(ControlError)
    /// The principal of the token with that digest, noting `now` as its last use; nil if there is
    /// none (never made, or revoked).
    func apiToken(_ digest: TokenDigest, now: Date) async throws(ControlError) -> Principal?
    func apiTokens(user: String) async throws(ControlError) -> [APITokenRecord]
    /// Revokes the user's token `id` (`notFound` if the user has no such token).
    func revokeAPIToken(id: String, user: String) async throws(ControlError)

    /// Counts a login attempt for `name` as a failure UP FRONT, before the password is checked,
    /// in a transaction of its own that first asks `throttle` about the failures so far: parallel
    /// guesses are each counted, and no more of them get past the throttle than it allows. A
    /// throttled attempt is not counted. Names without a user are counted the same.
    func recordLoginAttempt(name: String, throttle: LoginThrottle, now: Date) async throws(ControlError)
        -> LoginAdmission
    /// After a successful login: `name`'s count back to zero (other names keep theirs).
    func resetLoginFailures(name: String) async throws(ControlError)
    /// `name`'s consecutive failures so far.
    func loginFailures(name: String) async throws(ControlError) -> Int
}

/// What account rows must hold, checked the same by every backend.
public enum AccountRules {
    public static func validate(_ user: UserRecord) throws(ControlError) {
        try ControlNames.validate(user.name, "user")
        guard PasswordHash(encoded: user.passwordHash) != nil else {
            throw ControlError(.invalidArgument, "user \(user.name): the password hash is not one Ferry writes")
        }
    }

    public static func validate(apiToken token: APITokenRecord) throws(ControlError) {
        guard (1...100).contains(token.label.count), !token.id.isEmpty else {
            throw ControlError(
                .invalidArgument, "an API token's label has 1 to 100 characters, got \(token.label.count)")
        }
    }

    /// The throttle's answer for a name's recorded failures, as the store's answer.
    public static func admission(
        _ throttle: LoginThrottle, failures: Int, lastFailure: Date?, now: Date
    ) -> LoginAdmission {
        switch throttle.decide(failures: failures, lastFailure: lastFailure, now: now) {
        case .allowed: .admitted(failures: failures + 1)
        case .throttled(let wait): .throttled(retryAfter: wait)
        }
    }

    public static func membershipsFromRows(_ rows: [(project: String, role: String)]) -> [String: ProjectRole] {
        var result: [String: ProjectRole] = [:]
        for row in rows { if let role = ProjectRole(rawValue: row.role) { result[row.project] = role } }
        return result
    }
}
