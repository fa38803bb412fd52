import FerryTestSupport
import Foundation
import GRDB
import PostgresNIO
import Synchronization
import Testing

@testable import FerryControl
@testable import FerryControlPostgres

/// A store with accounts on one backend, with projects `alpha` and `beta`, and a way to look for
/// a text anywhere in what the store keeps (the SQLite files; PostgreSQL's account tables).
struct AccountFixture: Sendable {
    let store: any AccountStore & ControlStore
    let databaseContains: @Sendable (String) async throws -> Bool
    let close: @Sendable () async -> Void

    static func sqlite(_ scratch: Scratch) async throws -> AccountFixture {
        let store = try await storeWithCatalogue(scratch)
        try await store.addProject(Project(name: "beta", quota: Quota(guests: 1, resources: .zero)))
        return AccountFixture(
            store: store,
            databaseContains: { text in
                // The main file, the WAL and anything else SQLite left there.
                let needle = Data(text.utf8)
                return try FileManager.default.contentsOfDirectory(atPath: scratch.path).contains { name in
                    (try Data(contentsOf: URL(fileURLWithPath: scratch.file(name)))).range(of: needle) != nil
                }
            },
            close: { try? store.close() })
    }

    static func postgres() async throws -> AccountFixture {
        let store = try await TestPostgres.store()
        try await store.addProject(Project(name: "beta", quota: Quota(guests: 1, resources: .zero)))
        return AccountFixture(
            store: store,
            databaseContains: { text in
                try await store.client.withConnection { connection in
                    var found = false
                    for table in ["users", "memberships", "sessions", "api_tokens", "login_failures"] {
                        var binds = PostgresBindings()
                        binds.append(text)
                        let query = PostgresQuery(
                            unsafeSQL: "SELECT count(*) FROM \(table) t WHERE strpos(t::text, $1) > 0", binds: binds)
                        for try await count in try await connection.query(query, logger: quietLogger).decode(Int.self) {
                            found = found || count > 0
                        }
                    }
                    return found
                }
            },
            close: { await store.close() })
    }
}

/// Cheap hashes for the scenarios (about a millisecond); `realParametersCostTheSameForEveryName`
/// uses OWASP's.
let testHashParameters = ScryptParameters(logN: 10, blockSize: 8, parallelism: 1)
let t0 = Date(timeIntervalSince1970: 1_900_000_000)
let alicePassword = "correct horse battery staple"

/// The scenarios every backend must pass.
enum AccountScenarios {
    static func service(_ fixture: AccountFixture, throttle: LoginThrottle = .standard) throws -> AccountService {
        try AccountService(
            store: fixture.store, throttle: throttle, sessionLifetime: .seconds(3600),
            hashParameters: testHashParameters, logger: quietLogger)
    }

    static func code<T>(_ body: () async throws(ControlError) -> T) async -> ControlError.Code? {
        await controlError(body)?.code
    }

    static func wrongPasswordAndUnknownUserGetTheSameAnswer(_ fixture: AccountFixture) async throws {
        let service = try service(fixture)
        try await service.addUser(name: "alice", password: alicePassword, now: t0)
        let wrong = await controlError { () async throws(ControlError) in
            try await service.login(name: "alice", password: "not her password", now: t0)
        }
        let unknown = await controlError { () async throws(ControlError) in
            try await service.login(name: "mallory", password: alicePassword, now: t0)
        }
        #expect(wrong?.code == .wrongCredentials && unknown?.code == .wrongCredentials)
        #expect(wrong?.message == unknown?.message)
        #expect(try await fixture.store.loginFailures(name: "alice") == 1)
        #expect(try await fixture.store.loginFailures(name: "mallory") == 1)
        #expect(
            await code { () async throws(ControlError) in
                try await service.addUser(name: "alice", password: alicePassword, now: t0)
            } == .alreadyExists)
        #expect(
            await code { () async throws(ControlError) in
                try await service.addUser(name: "bob", password: "short", now: t0)
            }
                == .invalidArgument)
    }

    /// Three free failures, then the throttle: even the right password waits (and is not
    /// counted); after the wait it logs in and the count is back to zero.
    static func throttledAfterThreeFailuresThenTheRightPasswordResets(_ fixture: AccountFixture) async throws {
        let service = try service(fixture)
        try await service.addUser(name: "alice", password: alicePassword, now: t0)
        for attempt in 1...3 {
            #expect(
                await code { () async throws(ControlError) in
                    try await service.login(name: "alice", password: "guess \(attempt) of many", now: t0)
                } == .wrongCredentials)
        }
        let throttled = await controlError { () async throws(ControlError) in
            try await service.login(name: "alice", password: alicePassword, now: t0 + 0.4)
        }
        #expect(throttled?.code == .throttled && throttled?.retryAfter == .milliseconds(600))
        #expect(try await fixture.store.loginFailures(name: "alice") == 3)
        let session = try await service.login(name: "alice", password: alicePassword, now: t0 + 1)
        #expect(session.principal.user == "alice")
        #expect(try await fixture.store.loginFailures(name: "alice") == 0)
    }

    /// 20 wrong guesses at once: each is counted before its hash is checked, so exactly the
    /// throttle's three free ones get to the hash and the other 17 are throttled; with a
    /// throttle that lets them all through, all 20 are counted.
    static func parallelGuessesAreAllCounted(_ fixture: AccountFixture) async throws {
        let strict = try service(fixture)
        let lenient = try service(
            fixture, throttle: LoginThrottle(freeFailures: 1000, firstDelay: .seconds(1), maximumDelay: .seconds(1)))
        try await strict.addUser(name: "alice", password: alicePassword, now: t0)
        try await strict.addUser(name: "bob", password: alicePassword, now: t0)
        for (service, name) in [(strict, "alice"), (lenient, "bob")] {
            let codes = Mutex<[ControlError.Code?]>([])
            await concurrently(20) { index in
                let code = await code { () async throws(ControlError) in
                    try await service.login(name: name, password: "parallel guess \(index)", now: t0)
                }
                codes.withLock { $0.append(code) }
            }
            let answers = codes.withLock { $0 }
            let wrong = answers.filter { $0 == .wrongCredentials }.count
            let throttled = answers.filter { $0 == .throttled }.count
            if name == "alice" {
                #expect(wrong == 3 && throttled == 17, "\(answers)")
                #expect(try await fixture.store.loginFailures(name: name) == 3)
            } else {
                #expect(wrong == 20, "\(answers)")
                #expect(try await fixture.store.loginFailures(name: name) == 20)
            }
        }
        let counts = Mutex<[Int]>([])
        let open = LoginThrottle(freeFailures: 1000, firstDelay: .seconds(1), maximumDelay: .seconds(1))
        await concurrently(20) { _ in
            if case .admitted(let count)? = try? await fixture.store.recordLoginAttempt(
                name: "carol", throttle: open, now: t0)
            {
                counts.withLock { $0.append(count) }
            }
        }
        #expect(counts.withLock { $0.sorted() } == Array(1...20))
    }

    /// A success resets that name's count only.
    static func successResetsOnlyItsOwnName(_ fixture: AccountFixture) async throws {
        let service = try service(fixture)
        try await service.addUser(name: "alice", password: alicePassword, now: t0)
        for name in ["alice", "bob"] {
            for _ in 0..<2 {
                _ = await code { () async throws(ControlError) in
                    try await service.login(name: name, password: "wrong password here", now: t0)
                }
            }
        }
        _ = try await service.login(name: "alice", password: alicePassword, now: t0)
        #expect(try await fixture.store.loginFailures(name: "alice") == 0)
        #expect(try await fixture.store.loginFailures(name: "bob") == 2)
    }

    /// A session carries the user's roles and its CSRF token until it expires or is ended.
    static func sessionsExpireAndEnd(_ fixture: AccountFixture) async throws {
        let service = try service(fixture)
        try await service.addUser(name: "alice", password: alicePassword, now: t0)
        try await fixture.store.setMembership(user: "alice", project: "alpha", role: .member)
        let new = try await service.login(name: "alice", password: alicePassword, now: t0)
        #expect(new.token.count == 43 && new.csrfToken.count == 43 && new.token != new.csrfToken)
        #expect(new.expires == t0 + 3600)
        let found = try #require(try await service.session(token: new.token, now: t0 + 3599.999))
        #expect(found.principal == Principal(user: "alice", memberships: ["alpha": .member]))
        #expect(found.accepts(csrfToken: new.csrfToken) && !found.accepts(csrfToken: new.token))
        #expect(!found.accepts(csrfToken: ""))
        #expect(try await service.session(token: new.token, now: t0 + 3600) == nil)
        #expect(try await service.session(token: new.token + "x", now: t0) == nil)
        let other = try await service.login(name: "alice", password: alicePassword, now: t0)
        try await service.logout(token: other.token)
        #expect(try await service.session(token: other.token, now: t0) == nil)
        #expect(try await service.session(token: new.token, now: t0) != nil)
        #expect(try await fixture.store.deleteExpiredSessions(now: t0 + 3600) == 1)
    }

    static func apiTokensActAsTheirUserUntilRevoked(_ fixture: AccountFixture) async throws {
        let service = try service(fixture)
        try await service.addUser(name: "alice", password: alicePassword, siteAdmin: true, now: t0)
        try await service.addUser(name: "bob", password: alicePassword, now: t0)
        let token = try await service.createAPIToken(user: "alice", label: "backup script", now: t0)
        #expect(
            try await service.apiToken(secret: token.secret, now: t0 + 5) == Principal(user: "alice", siteAdmin: true))
        let listed = try await fixture.store.apiTokens(user: "alice")
        #expect(listed.map(\.id) == [token.record.id] && listed.first?.lastUsed == t0 + 5)
        #expect(listed.first?.label == "backup script")
        #expect(
            await code { () async throws(ControlError) in
                try await service.revokeAPIToken(id: token.record.id, user: "bob")
            } == .notFound)
        try await service.revokeAPIToken(id: token.record.id, user: "alice")
        #expect(try await service.apiToken(secret: token.secret, now: t0 + 6) == nil)
        #expect(try await fixture.store.apiTokens(user: "alice").isEmpty)
        #expect(
            await code { () async throws(ControlError) in
                try await service.revokeAPIToken(id: token.record.id, user: "alice")
            } == .notFound)
        #expect(
            await code { () async throws(ControlError) in
                try await service.createAPIToken(user: "nobody", label: "x", now: t0)
            } == .notFound)
    }

    static func membershipsMakeThePrincipal(_ fixture: AccountFixture) async throws {
        let service = try service(fixture)
        let store = fixture.store
        try await service.addUser(name: "alice", password: alicePassword, now: t0)
        try await store.setMembership(user: "alice", project: "alpha", role: .member)
        try await store.setMembership(user: "alice", project: "beta", role: .member)
        try await store.setMembership(user: "alice", project: "beta", role: .admin)
        #expect(
            try await store.principal(user: "alice")
                == Principal(user: "alice", memberships: ["alpha": .member, "beta": .admin]))
        #expect(try await store.members(project: "beta") == ["alice": .admin])
        try await store.setMembership(user: "alice", project: "alpha", role: nil)
        #expect(try await store.principal(user: "alice")?.memberships == ["beta": .admin])
        #expect(try await store.principal(user: "nobody") == nil)
        #expect(
            await code { () async throws(ControlError) in
                try await store.setMembership(user: "nobody", project: "alpha", role: .member)
            } == .notFound)
        #expect(
            await code { () async throws(ControlError) in
                try await store.setMembership(user: "alice", project: "gamma", role: .member)
            } == .notFound)
    }

    /// What a copy of the database would give a thief: digests, never the cookie or the API
    /// secret (the digests are there, which shows the search finds what is stored).
    static func onlyDigestsOfSecretsAreStored(_ fixture: AccountFixture) async throws {
        let service = try service(fixture)
        try await service.addUser(name: "alice", password: alicePassword, now: t0)
        let session = try await service.login(name: "alice", password: alicePassword, now: t0)
        let token = try await service.createAPIToken(user: "alice", label: "ci", now: t0)
        #expect(try await fixture.databaseContains(TokenDigest(of: session.token).hex))
        #expect(try await fixture.databaseContains(TokenDigest(of: token.secret).hex))
        #expect(try await fixture.databaseContains(session.token) == false)
        #expect(try await fixture.databaseContains(token.secret) == false)
        #expect(try await fixture.databaseContains(alicePassword) == false)
    }
}

@Suite struct SQLiteAccountTests {
    func run(_ scenario: (AccountFixture) async throws -> Void) async throws {
        let scratch = Scratch()
        let fixture = try await AccountFixture.sqlite(scratch)
        try await scenario(fixture)
        await fixture.close()
    }

    @Test func wrongPasswordAndUnknownUser() async throws {
        try await run(AccountScenarios.wrongPasswordAndUnknownUserGetTheSameAnswer)
    }
    @Test func throttle() async throws {
        try await run(AccountScenarios.throttledAfterThreeFailuresThenTheRightPasswordResets)
    }
    @Test func parallelGuesses() async throws { try await run(AccountScenarios.parallelGuessesAreAllCounted) }
    @Test func successResets() async throws { try await run(AccountScenarios.successResetsOnlyItsOwnName) }
    @Test func sessions() async throws { try await run(AccountScenarios.sessionsExpireAndEnd) }
    @Test func apiTokens() async throws { try await run(AccountScenarios.apiTokensActAsTheirUserUntilRevoked) }
    @Test func memberships() async throws { try await run(AccountScenarios.membershipsMakeThePrincipal) }
    @Test func onlyDigests() async throws { try await run(AccountScenarios.onlyDigestsOfSecretsAreStored) }

    /// OWASP's parameters once: the stored hash says them, and every login does one scrypt
    /// check with them whether the name exists, does not, or cannot exist (what an attacker
    /// timing logins would otherwise learn from). Counted, not timed: a timing comparison failed
    /// under the suite's load (one hash took 21 s with every core busy).
    @Test func realParametersCostTheSameForEveryName() async throws {
        let scratch = Scratch()
        let fixture = try await AccountFixture.sqlite(scratch)
        let service = try AccountService(
            store: fixture.store,
            throttle: LoginThrottle(freeFailures: 100, firstDelay: .seconds(1), maximumDelay: .seconds(1)),
            hashParameters: .owasp, logger: quietLogger)
        try await service.addUser(name: "alice", password: alicePassword, now: t0)
        #expect(try await fixture.store.user(named: "alice")?.passwordHash.hasPrefix("$scrypt$ln=17,r=8,p=1$") == true)
        _ = try await service.login(name: "alice", password: alicePassword, now: t0)
        for (name, password) in [("alice", "not her password"), ("mallory", alicePassword), ("Bad Name!", "x")] {
            let code = await AccountScenarios.code { () async throws(ControlError) in
                try await service.login(name: name, password: password, now: t0)
            }
            #expect(code == .wrongCredentials, "\(name)")
        }
        #expect(service.checks.withLock { $0 } == Array(repeating: ScryptParameters.owasp, count: 4))
        await fixture.close()
    }
}

@Suite(.enabled(if: TestPostgres.url != nil, TestPostgres.reason))
struct PostgresAccountTests {
    func run(_ scenario: (AccountFixture) async throws -> Void) async throws {
        let fixture = try await AccountFixture.postgres()
        try await scenario(fixture)
        await fixture.close()
    }

    @Test func wrongPasswordAndUnknownUser() async throws {
        try await run(AccountScenarios.wrongPasswordAndUnknownUserGetTheSameAnswer)
    }
    @Test func throttle() async throws {
        try await run(AccountScenarios.throttledAfterThreeFailuresThenTheRightPasswordResets)
    }
    @Test func parallelGuesses() async throws { try await run(AccountScenarios.parallelGuessesAreAllCounted) }
    @Test func successResets() async throws { try await run(AccountScenarios.successResetsOnlyItsOwnName) }
    @Test func sessions() async throws { try await run(AccountScenarios.sessionsExpireAndEnd) }
    @Test func apiTokens() async throws { try await run(AccountScenarios.apiTokensActAsTheirUserUntilRevoked) }
    @Test func memberships() async throws { try await run(AccountScenarios.membershipsMakeThePrincipal) }
    @Test func onlyDigests() async throws { try await run(AccountScenarios.onlyDigestsOfSecretsAreStored) }
}

@Suite struct AsyncLimitTests {
    /// 40 tasks through a limit of 3: never more than 3 inside at once, and every one gets in.
    @Test func neverMoreThanTheLimitInside() async {
        let limit = AsyncLimit(3)
        let counts = Mutex<(inside: Int, most: Int, done: Int)>((0, 0, 0))
        await concurrently(40) { _ in
            await limit.acquire()
            counts.withLock { counts in
                counts.inside += 1
                counts.most = max(counts.most, counts.inside)
            }
            try? await Task.sleep(for: .milliseconds(2))
            counts.withLock { counts in
                counts.inside -= 1
                counts.done += 1
            }
            limit.release()
        }
        let final = counts.withLock { $0 }
        #expect(final.most == 3 && final.done == 40 && final.inside == 0)
    }
}

@Suite struct AccountMigrationTests {
    /// A file a controller of the first schema wrote gains the account tables and keeps its rows.
    @Test func aFirstSchemaFileGainsTheAccountTables() async throws {
        let scratch = Scratch()
        let path = scratch.file("control.sqlite")
        do {
            let queue = try DatabaseQueue(path: path)
            try ControlSchema.migrator.migrate(queue, upTo: "v1-cluster")
            try await queue.write { db in
                try db.execute(sql: "INSERT INTO projects VALUES ('alpha', 1, 1, 1, 1)")
            }
            try queue.close()
        }
        let store = try SQLiteControlStore(path: path, logger: quietLogger)
        #expect(try await store.projects().map(\.name) == ["alpha"])
        let service = try AccountService(store: store, hashParameters: testHashParameters, logger: quietLogger)
        try await service.addUser(name: "alice", password: alicePassword, now: t0)
        try await store.setMembership(user: "alice", project: "alpha", role: .admin)
        #expect(try await store.principal(user: "alice")?.memberships == ["alpha": .admin])
        try store.close()
    }
}
