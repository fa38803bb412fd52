import FerryHostModel
import FerryTestSupport
import Foundation
import Logging
import PostgresNIO
import Synchronization
import Testing

@testable import FerryControl
@testable import FerryControlPostgres

/// The server the tests use: `FERRY_TEST_POSTGRES`, which `Tools/postgres-test-server run swift
/// test` (the README's test command) sets for a throwaway server. Each test makes a database of
/// its own.
enum TestPostgres {
    static let url = ProcessInfo.processInfo.environment["FERRY_TEST_POSTGRES"]
    static var reason: Comment {
        "FERRY_TEST_POSTGRES is not set: run the tests as `Tools/postgres-test-server run swift test` (the README's command)"
    }

    /// A fresh database on the test server and a store on it with the fixtures' catalogue.
    static func store(
        quota: Quota? = nil, policy: PlacementPolicy = .spread, clock: @escaping @Sendable () -> Date = { Date() }
    ) async throws -> PostgresControlStore {
        let database = try await create()
        let store = try await PostgresControlStore.connect(
            url: try url(database: database), policy: policy, clock: clock, logger: quietLogger)
        try await store.addFlavor(small)
        try await store.addFlavor(large)
        try await store.addImage(
            Image(name: "tiny", kind: .builtin, diskTemplatePath: "/var/lib/ferry/images/tiny.img"))
        try await store.addProject(
            Project(
                name: "alpha",
                quota: quota
                    ?? Quota(
                        guests: 1000, resources: Resources(vcpus: 1 << 20, memoryBytes: 1 << 50, diskBytes: 1 << 50))))
        return store
    }

    static func url(database: String) throws -> String {
        var parsed = try PostgresURL(try #require(url))
        parsed.database = database
        return parsed.withPassword
    }

    static func create() async throws -> String {
        let name = "ferry_t_" + String(UInt64.random(in: 0...UInt64.max), radix: 16)
        let settings = PostgresSettings(url: try PostgresURL(try #require(url)), lockTimeout: .seconds(10))
        _ = try await settings.withConnection(logger: quietLogger, doing: "create a test database") { connection in
            try await connection.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)"), logger: quietLogger)
        }
        return name
    }
}

/// The SQLite store's central claims, on PostgreSQL through two stores (two controllers, each
/// its own pool): the journal, client tokens, quotas and hosts' capacity under concurrent creates.
@Suite(.enabled(if: TestPostgres.url != nil, TestPostgres.reason))
struct PostgresControlStoreTests {
    @Test func aGuestsLifeIsJournaledAndHoldsItsPlace() async throws {
        let store = try await TestPostgres.store()
        defer { Task { await store.close() } }
        _ = try await store.registerHost(host("h1", slots: 1))
        let id = try await store.createGuest(request("web"), clientToken: nil, cause: "create").guest.id
        #expect(
            await controlError { () async throws(ControlError) in
                try await store.createGuest(request("other"), clientToken: nil, cause: "c")
            }?.code == .insufficientCapacity)
        for (from, to) in [(CloudGuestState.pending, CloudGuestState.building), (.building, .running)] {
            _ = try await store.transition(id, from: from, to: to, cause: "test")
        }
        #expect(
            await controlError { () async throws(ControlError) in
                try await store.transition(id, from: .building, to: .running, cause: "stale")
            }?.code == .stale)
        #expect(try await store.journal(of: id).map(\.to) == [.pending, .building, .running])
        #expect(try await store.guests(host: "h1", states: [.running]).map(\.id) == [id])
        #expect(try await store.guests(states: [.pending, .building]).isEmpty)
        #expect(try await store.hostUsage() == ["h1": small.resources])
    }

    /// 200 creates with one token, 100 through each of two controllers: one guest.
    @Test func twoHundredCreatesWithOneTokenMakeOneGuest() async throws {
        let first = try await TestPostgres.store()
        let second = try await PostgresControlStore.connect(url: first.url.withPassword, logger: quietLogger)
        _ = try await first.registerHost(host("h1", slots: 500))
        let stores = [first, second]
        let created = Atomic<Int>(0)
        let failures = Mutex<[String]>([])
        await concurrently(200) { index in
            do {
                let creation = try await stores[index % 2].createGuest(request("web"), clientToken: "t", cause: "api")
                if creation.created { created.add(1, ordering: .relaxed) }
            } catch {
                failures.withLock { $0.append("\(error)") }
            }
        }
        #expect(failures.withLock { $0 } == [])
        #expect(created.load(ordering: .relaxed) == 1)
        #expect(try await second.guests(project: "alpha").count == 1)
        await first.close()
        await second.close()
    }

    /// Two controllers, 2 × 30 creates, quota of 10 guests and hosts with 24 places: 10, never more.
    /// Then with the quota lifted, exactly the 24 places fill and no host is over its capacity.
    @Test func twoControllersNeverOvershootAQuotaOrAHost() async throws {
        let first = try await TestPostgres.store(
            quota: Quota(guests: 10, resources: Resources(vcpus: 100, memoryBytes: 100 * gib, diskBytes: 1000 * gib)))
        let second = try await PostgresControlStore.connect(url: first.url.withPassword, logger: quietLogger)
        let slots = ["h1": 5, "h2": 7, "h3": 1, "h4": 11]
        for (id, count) in slots { _ = try await first.registerHost(host(id, slots: count)) }
        let stores = [first, second]
        func race(_ prefix: String) async -> [String: Int] {
            let outcomes = Mutex<[String: Int]>([:])
            await concurrently(60) { index in
                let outcome: String
                do {
                    _ = try await stores[index % 2].createGuest(
                        request("\(prefix)\(index)"), clientToken: "\(prefix)-\(index)", cause: "api")
                    outcome = "created"
                } catch {
                    outcome = (error as? ControlError)?.code.rawValue ?? "\(error)"
                }
                outcomes.withLock { $0[outcome, default: 0] += 1 }
            }
            return outcomes.withLock { $0 }
        }
        #expect(await race("q") == ["created": 10, "quotaExceeded": 50])
        try await first.setQuota(
            Quota(guests: 1000, resources: Resources(vcpus: 1000, memoryBytes: 1000 * gib, diskBytes: 10000 * gib)),
            project: "alpha")
        #expect(await race("c") == ["created": 14, "insufficientCapacity": 46])
        let guests = try await second.guests(project: "alpha")
        #expect(Dictionary(grouping: guests, by: \.host).mapValues(\.count) == slots)
        await first.close()
        await second.close()
    }
}
