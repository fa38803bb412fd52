import FerryHostModel
import FerryTestSupport
import Foundation
import Synchronization
import Testing

@testable import FerryControl
@testable import FerryControlPostgres

/// A clock the test moves by hand, from 2026-01-01T00:00:00Z.
final class BillingClock: Sendable {
    static let start: Int64 = 1_767_225_600_000
    private let milliseconds = Mutex<Int64>(start)

    /// Sets the clock to `seconds` after the start.
    func set(_ seconds: Int64) { set(milliseconds: seconds * 1000) }
    func set(milliseconds offset: Int64) { milliseconds.withLock { $0 = Self.start + offset } }
    var now: Date { Self.date(milliseconds: milliseconds.withLock { $0 }) }
    var read: @Sendable () -> Date { { self.now } }

    static func date(_ seconds: Int64) -> Date { Date(timeIntervalSince1970: Double(start + seconds * 1000) / 1000) }
    static func date(milliseconds: Int64) -> Date { Date(timeIntervalSince1970: Double(milliseconds) / 1000) }
}

/// The same billing claims on either store: three guests with a known life (one runs, falls
/// silent, runs again and stops; one keeps running; one is deleted before it was built), billed
/// to the millisecond, the same after a restart (another store on the same database), and
/// adjacent periods adding up.
enum BillingStoreClaims {
    static func check(
        _ store: any ControlStore, clock: BillingClock, reopen: () async throws -> any ControlStore
    ) async throws {
        let ids = try await liveThreeGuests(store, clock: clock)
        let hour = BillingClock.date(3600)
        let invoice = try await store.invoice(project: "alpha", from: BillingClock.date(0), to: hour, now: clock.now)
        #expect(invoice.lines.map(\.guestID) == [ids.web, ids.db], "the guest never built has no line")
        // web: running 2 s → 62 s and 92 s → 122 s (unknown in between); db: 2 s → now (200 s).
        #expect(invoice.lines.map(\.billedMilliseconds) == [90_000, 198_000])
        #expect(invoice.lines.map(\.amountMicros) == [12 * 90, 96 * 198])
        #expect(invoice.totalMicros == 12 * 90 + 96 * 198)
        #expect(invoice.lines.map(\.flavor) == ["small", "large"])

        // The billed time is the journal's running time, guest by guest.
        for line in invoice.lines {
            let entries = try await store.journal(of: line.guestID)
            let guest = try #require(try await store.guest(id: line.guestID))
            let own = Billing.invoice(
                project: "alpha", period: invoice.period,
                guests: [GuestJournal(guest: guest, entries: entries).billable], now: invoice.madeAtMilliseconds)
            #expect(own.lines == [line])
        }

        // A restart (another store on the same database) reads the same rows: the same invoice.
        let again = try await reopen()
        #expect(
            try await again.invoice(project: "alpha", from: BillingClock.date(0), to: hour, now: clock.now) == invoice)

        // [0, 100 s) and [100 s, 1 h) bill exactly the milliseconds of [0, 1 h).
        let first = try await store.invoice(
            project: "alpha", from: BillingClock.date(0), to: BillingClock.date(100), now: clock.now)
        let second = try await store.invoice(project: "alpha", from: BillingClock.date(100), to: hour, now: clock.now)
        #expect(first.lines.map(\.billedMilliseconds) == [60_000 + 8_000, 98_000])
        #expect(second.lines.map(\.billedMilliseconds) == [22_000, 100_000])
        #expect(first.totalMicros + second.totalMicros <= invoice.totalMicros)
        #expect(first.totalMicros + second.totalMicros >= invoice.totalMicros - 2)

        try await checkQuery(store, ids: ids)
    }

    /// The query leaves out what cannot bill, and refuses what does not exist.
    static func checkQuery(_ store: any ControlStore, ids: (web: GuestID, db: GuestID, idle: GuestID)) async throws {
        let early = try BillingPeriod(fromMilliseconds: BillingClock.start, toMilliseconds: BillingClock.start + 1000)
        #expect(
            try await store.billingJournals(project: "alpha", period: early).map(\.guest.id) == [
                ids.web, ids.db, ids.idle,
            ])
        let later = try BillingPeriod(
            fromMilliseconds: BillingClock.start + 10_000, toMilliseconds: BillingClock.start + 20_000)
        let journals = try await store.billingJournals(project: "alpha", period: later)
        #expect(journals.map(\.guest.id) == [ids.web, ids.db], "deleted at 5 s: not read for a period from 10 s")
        #expect(
            journals.first?.entries.map(\.to) == [
                .pending, .building, .running, .unknown, .running, .stopping, .stopped,
            ])
        let before = try BillingPeriod(
            fromMilliseconds: BillingClock.start - 10_000, toMilliseconds: BillingClock.start)
        #expect(try await store.billingJournals(project: "alpha", period: before).isEmpty, "created at 0 s")
        let missing = await controlError { () async throws(ControlError) in
            try await store.invoice(project: "nobody", from: BillingClock.date(0), to: BillingClock.date(1))
        }
        #expect(missing?.code == .notFound)
        let backwards = await controlError { () async throws(ControlError) in
            try await store.invoice(project: "alpha", from: BillingClock.date(1), to: BillingClock.date(1))
        }
        #expect(backwards?.code == .invalidArgument)
    }

    /// web (small, 12 µ/s) and db (large, 96 µ/s) run from 2 s; web is unknown from 62 s to 92 s,
    /// stops at 122 s; idle is deleted pending at 5 s; the clock ends at 200 s.
    static func liveThreeGuests(_ store: any ControlStore, clock: BillingClock) async throws -> (
        web: GuestID, db: GuestID, idle: GuestID
    ) {
        clock.set(0)
        _ = try await store.registerHost(host("h1", slots: 16))
        let web = try await store.createGuest(request("web"), clientToken: nil, cause: "test").guest.id
        clock.set(milliseconds: 1)  // guests are listed oldest first
        let db = try await store.createGuest(request("db", flavor: "large"), clientToken: nil, cause: "test").guest.id
        clock.set(milliseconds: 2)
        let idle = try await store.createGuest(request("idle"), clientToken: nil, cause: "test").guest.id
        let steps: [(Int64, GuestID, CloudGuestState, CloudGuestState)] = [
            (1, web, .pending, .building), (1, db, .pending, .building), (2, web, .building, .running),
            (2, db, .building, .running), (5, idle, .pending, .deleted), (62, web, .running, .unknown),
            (92, web, .unknown, .running), (122, web, .running, .stopping), (123, web, .stopping, .stopped),
        ]
        for (seconds, id, from, to) in steps {
            clock.set(seconds)
            _ = try await store.transition(id, from: from, to: to, cause: "test")
        }
        clock.set(200)
        return (web, db, idle)
    }
}

@Suite struct SQLiteBillingTests {
    @Test func invoicesFromTheJournal() async throws {
        let scratch = Scratch("billing-sqlite")
        let clock = BillingClock()
        let store = try await storeWithCatalogue(scratch, clock: clock.read)
        try await BillingStoreClaims.check(store, clock: clock) {
            try SQLiteControlStore(path: store.path, clock: clock.read, logger: quietLogger)
        }
    }
}

@Suite(.enabled(if: TestPostgres.url != nil, TestPostgres.reason))
struct PostgresBillingTests {
    @Test func invoicesFromTheJournal() async throws {
        let clock = BillingClock()
        let store = try await TestPostgres.store(clock: clock.read)
        defer { Task { await store.close() } }
        let second = Mutex<PostgresControlStore?>(nil)
        defer { if let other = second.withLock({ $0 }) { Task { await other.close() } } }
        try await BillingStoreClaims.check(store, clock: clock) {
            let other = try await PostgresControlStore.connect(
                url: store.url.withPassword, clock: clock.read, logger: quietLogger)
            second.withLock { $0 = other }
            return other
        }
    }
}
