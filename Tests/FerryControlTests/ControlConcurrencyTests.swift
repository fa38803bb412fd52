import FerryHostModel
import FerryTestSupport
import Foundation
import Synchronization
import Testing

@testable import FerryControl

/// Races between concurrent tasks against real SQLite files: the client token, the quota and the hosts'
/// capacity are each checked in the transaction that consumes them.
@Suite struct ControlConcurrencyTests {
    /// 200 tasks send the same create with the same client token at once: one guest, and
    /// every task gets that guest.
    @Test func twoHundredCreatesWithOneTokenMakeOneGuest() async throws {
        let scratch = Scratch()
        let store = try await storeWithCatalogue(scratch)
        _ = try await store.registerHost(host("h1", slots: 500))
        let created = Atomic<Int>(0)
        let ids = Mutex<Set<GuestID>>([])
        let failures = Mutex<[String]>([])
        await concurrently(200) { _ in
            do {
                let creation = try await store.createGuest(request("web"), clientToken: "retry-me", cause: "api")
                if creation.created { created.add(1, ordering: .relaxed) }
                ids.withLock { _ = $0.insert(creation.guest.id) }
            } catch {
                failures.withLock { $0.append("\(error)") }
            }
        }
        #expect(failures.withLock { $0 } == [])
        #expect(created.load(ordering: .relaxed) == 1)
        #expect(ids.withLock { $0.count } == 1)
        #expect(try await store.guests(project: "alpha").count == 1)
        #expect(try await store.journal(latest: 1000).count == 1)
    }

    /// 50 creates in parallel, each with its own token, against a quota of 10 guests, through
    /// one controller and through two on the same file: exactly 10 are made, the other 40 are
    /// refused for the quota.
    @Test(arguments: [1, 2])
    func fiftyParallelCreatesNeverOvershootAQuotaOfTen(controllers count: Int) async throws {
        let scratch = Scratch()
        let store = try await storeWithCatalogue(
            scratch,
            quota: Quota(guests: 10, resources: Resources(vcpus: 100, memoryBytes: 100 * gib, diskBytes: 1000 * gib)))
        for id in ["h1", "h2", "h3"] { _ = try await store.registerHost(host(id, slots: 50)) }
        let controllers =
            [store]
            + (try (1..<count).map { _ in
                try SQLiteControlStore(
                    path: store.path, heartbeatTimeout: testHeartbeatTimeout, logger: quietLogger)
            })
        let outcomes = Mutex<[String: Int]>([:])
        await concurrently(50) { index in
            let outcome: String
            do {
                _ = try await controllers[index % count].createGuest(
                    request("g\(index)"), clientToken: "token-\(index)", cause: "api")
                outcome = "created"
            } catch let error as ControlError {
                outcome = error.code.rawValue
            } catch {
                outcome = "\(error)"
            }
            outcomes.withLock { $0[outcome, default: 0] += 1 }
        }
        #expect(outcomes.withLock { $0 } == ["created": 10, "quotaExceeded": 40])
        #expect(try await store.usage(project: "alpha").guests == 10)
        try await expectJournalAgreesWithGuests(store)
    }

    /// Two controllers (two stores, each its own connections) on one file create guests at once
    /// from 2 × 30 tasks into hosts with 24 places in all: exactly 24 guests, no host holds
    /// more than its capacity, and each guest is in both controllers' view.
    @Test func twoControllersNeverPlaceTwoGuestsIntoTheSameCapacity() async throws {
        let scratch = Scratch()
        let first = try await storeWithCatalogue(scratch)
        let second = try SQLiteControlStore(
            path: first.path, heartbeatTimeout: testHeartbeatTimeout, logger: quietLogger)
        let slots = ["h1": 5, "h2": 7, "h3": 1, "h4": 11]
        for (id, count) in slots { _ = try await first.registerHost(host(id, slots: count)) }
        let controllers = [first, second]
        let outcomes = Mutex<[String: Int]>([:])
        await concurrently(60) { index in
            let outcome: String
            do {
                _ = try await controllers[index % 2].createGuest(
                    request("g\(index)"), clientToken: "token-\(index)", cause: "controller \(index % 2)")
                outcome = "created"
            } catch let error as ControlError {
                outcome = error.code.rawValue
            } catch {
                outcome = "\(error)"
            }
            outcomes.withLock { $0[outcome, default: 0] += 1 }
        }
        #expect(outcomes.withLock { $0 } == ["created": 24, "insufficientCapacity": 36])
        let guests = try await second.guests(project: "alpha")
        #expect(guests.count == 24 && Set(guests.map(\.id)).count == 24)
        let perHost = Dictionary(grouping: guests, by: \.host).mapValues(\.count)
        #expect(perHost == slots)
        let hosts = try await first.hosts()
        let used = try await first.hostUsage()
        for host in hosts {
            #expect((host.capacity - (used[host.id] ?? .zero)).isNonNegative, "\(host.id) overcommitted")
        }
        try await expectJournalAgreesWithGuests(first)
    }
}
