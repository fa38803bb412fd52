import Dispatch
import Foundation
import Logging
import Synchronization

/// A session just made by a login: `token` goes into the HttpOnly cookie (it is the only copy:
/// the store keeps its digest), `csrfToken` into every form the session renders.
public struct NewSession: Sendable {
    public let token: String
    public let csrfToken: String
    public let principal: Principal
    public let expires: Date
}

/// An API token just made: `secret` is shown once (the store keeps its digest); `record` is what
/// lists show.
public struct NewAPIToken: Sendable {
    public let secret: String
    public let record: APITokenRecord
}

/// Logins, sessions and API tokens over an `AccountStore`: what the HTTP layer calls.
///
/// A login (1) asks the store to count the attempt as a failure up front, in its own transaction
/// that first applies the `LoginThrottle` (so parallel guesses are all counted and no more get
/// through than the throttle allows); (2) checks the password against the scrypt hash outside any
/// transaction, on a thread of its own (a third of a second with OWASP's parameters); (3) on
/// success resets that name's count and makes a session. An unknown name costs the same hash
/// work (against a dummy hash) and gets the same `wrongCredentials` as a wrong password.
public final class AccountService: Sendable {
    public let store: any AccountStore
    public let throttle: LoginThrottle
    public let sessionLifetime: Duration
    /// What new password hashes are made with. Existing hashes verify with their own.
    public let hashParameters: ScryptParameters
    let dummyHash: PasswordHash
    /// The scrypt parameters of every password check so far, in order (what the tests read to
    /// see that an unknown name costs a hash with the same parameters as a known one).
    let checks = Mutex<[ScryptParameters]>([])
    /// At most one hash per core at once.
    let hashing = AsyncLimit(ProcessInfo.processInfo.activeProcessorCount)
    let logger: Logger

    /// Makes the dummy hash for unknown names with `hashParameters`: takes one hash's time.
    public init(
        store: any AccountStore, throttle: LoginThrottle = .standard, sessionLifetime: Duration = .seconds(12 * 3600),
        hashParameters: ScryptParameters = .owasp, logger: Logger = Logger(label: "ferry.control.accounts")
    ) throws(ControlError) {
        self.store = store
        self.throttle = throttle
        self.sessionLifetime = sessionLifetime
        self.hashParameters = hashParameters
        self.logger = logger
        dummyHash = try PasswordHash.make(password: Secrets.randomToken(), parameters: hashParameters)
    }

    /// Adds a user with a password that `PasswordPolicy` accepts, hashed with `hashParameters`.
    public func addUser(name: String, password: String, siteAdmin: Bool = false, now: Date) async throws(ControlError) {
        try ControlNames.validate(name, "user")
        try PasswordPolicy.validate(password, user: name)
        let parameters = hashParameters
        let hash = try await offThePool { () throws(ControlError) in
            try PasswordHash.make(password: password, parameters: parameters)
        }
        try await store.addUser(UserRecord(name: name, passwordHash: hash.encoded, siteAdmin: siteAdmin, created: now))
    }

    /// A new session for `name` if `password` is theirs; `wrongCredentials` if not (or if there
    /// is no such user: which of the two is never said), `throttled` with the wait after too
    /// many failures.
    public func login(name: String, password: String, now: Date) async throws(ControlError) -> NewSession {
        let wellFormed =
            (try? ControlNames.validate(name, "user")) != nil && password.utf8.count <= PasswordPolicy.maximumBytes
        guard wellFormed else {
            // No user can have this name or password: the same answer, after the same work.
            _ = try await check(dummyHash, "")
            throw wrongCredentials()
        }
        if case .throttled(let wait) = try await store.recordLoginAttempt(name: name, throttle: throttle, now: now) {
            logger.notice("login throttled", metadata: ["user.name": "\(name)", "login.retry_after": "\(wait)"])
            throw ControlError(
                .throttled,
                "too many failed logins for user \(name): wait \(Self.seconds(wait)) s before the next attempt",
                retryAfter: wait)
        }
        let user = try await store.user(named: name)
        let stored = user.flatMap { PasswordHash(encoded: $0.passwordHash) }
        if user != nil && stored == nil {
            logger.error("stored password hash unreadable", metadata: ["user.name": "\(name)"])
        }
        let hash = stored ?? dummyHash
        let verified = try await check(hash, password)
        guard verified, stored != nil else {
            logger.notice("login failed", metadata: ["user.name": "\(name)"])
            throw wrongCredentials()
        }
        try await store.resetLoginFailures(name: name)
        return try await startSession(user: name, now: now)
    }

    /// The live session whose cookie is `token`; nil for an unknown, expired or ended one.
    public func session(token: String, now: Date) async throws(ControlError) -> AuthenticatedSession? {
        guard Self.isPlausible(token) else { return nil }
        return try await store.session(TokenDigest(of: token), now: now)
    }

    /// Ends the session (logout).
    public func logout(token: String) async throws(ControlError) {
        guard Self.isPlausible(token) else { return }
        try await store.deleteSession(TokenDigest(of: token))
    }

    /// A new API token for `user`, acting with the user's roles.
    public func createAPIToken(user: String, label: String, now: Date) async throws(ControlError) -> NewAPIToken {
        guard try await store.user(named: user) != nil else { throw ControlError(.notFound, "no user \(user)") }
        let secret = Secrets.randomToken()
        let id = Secrets.randomBytes(8).map { String(format: "%02x", $0) }.joined()
        let record = APITokenRecord(id: id, user: user, label: label, created: now)
        try await store.createAPIToken(record, digest: TokenDigest(of: secret))
        return NewAPIToken(secret: secret, record: record)
    }

    /// The principal of the API token `secret` (from `Authorization: Bearer`); nil for an
    /// unknown or revoked one.
    public func apiToken(secret: String, now: Date) async throws(ControlError) -> Principal? {
        guard Self.isPlausible(secret) else { return nil }
        return try await store.apiToken(TokenDigest(of: secret), now: now)
    }

    public func revokeAPIToken(id: String, user: String) async throws(ControlError) {
        try await store.revokeAPIToken(id: id, user: user)
    }

    private func startSession(user: String, now: Date) async throws(ControlError) -> NewSession {
        guard let principal = try await store.principal(user: user) else {
            throw ControlError(.unauthenticated, "user \(user) was removed during the login: log in again")
        }
        let token = Secrets.randomToken()
        let csrfToken = Secrets.randomToken()
        let expires = now.addingTimeInterval(Self.seconds(sessionLifetime))
        try await store.createSession(
            SessionRecord(
                digest: TokenDigest(of: token), user: user, csrfToken: csrfToken, created: now, expires: expires))
        logger.info("login", metadata: ["user.name": "\(user)"])
        return NewSession(token: token, csrfToken: csrfToken, principal: principal, expires: expires)
    }

    private func wrongCredentials() -> ControlError {
        ControlError(.wrongCredentials, "wrong user name or password")
    }

    /// Tokens this service makes are 43 characters; anything far longer is not worth a digest.
    private static func isPlausible(_ token: String) -> Bool { (1...256).contains(token.utf8.count) }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    /// Runs `body` (a hash) on a Dispatch thread, once `hashing` lets it: a hash's third of a
    /// second must not hold a thread of Swift's cooperative pool, and a flood of logins must queue
    /// rather than hold 128 MiB per hash at once.
    /// One password check against `hash`, off the cooperative pool, recorded in `checks`.
    private func check(_ hash: PasswordHash, _ password: String) async throws(ControlError) -> Bool {
        checks.withLock { $0.append(hash.parameters) }
        return try await offThePool { hash.verifies(password) }
    }

    func offThePool<T: Sendable>(_ body: @escaping @Sendable () throws(ControlError) -> T)
        async throws(ControlError) -> T
    {
        await hashing.acquire()
        defer { hashing.release() }
        let result: Result<T, ControlError> = await withCheckedContinuation { continuation in
            DispatchQueue.global(qos: .userInitiated).async {
                continuation.resume(returning: Result { () throws(ControlError) in try body() })
            }
        }
        return try result.get()
    }
}

/// At most `limit` holders at once; the others wait in order, without holding a thread.
final class AsyncLimit: Sendable {
    private struct State {
        var free: Int
        var waiting: [CheckedContinuation<Void, Never>] = []
    }
    private let state: Mutex<State>

    init(_ limit: Int) { state = Mutex(State(free: max(1, limit))) }

    func acquire() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let admitted = state.withLock { state in
                guard state.free > 0 else {
                    state.waiting.append(continuation)
                    return false
                }
                state.free -= 1
                return true
            }
            if admitted { continuation.resume() }
        }
    }

    /// Hands the place to the first waiter, or frees it.
    func release() {
        let next = state.withLock { state in
            guard !state.waiting.isEmpty else {
                state.free += 1
                return CheckedContinuation<Void, Never>?.none
            }
            return state.waiting.removeFirst()
        }
        next?.resume()
    }
}
