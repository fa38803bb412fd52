import FerryHostModel
import Foundation

/// A guest and its journal rows, oldest first: what billing reads from a store.
public struct GuestJournal: Sendable, Equatable {
    public var guest: CloudGuest
    public var entries: [CloudJournalEntry]

    public init(guest: CloudGuest, entries: [CloudJournalEntry]) {
        self.guest = guest
        self.entries = entries
    }

    /// The guest as `Billing` takes it (times in Unix milliseconds).
    public var billable: BillableGuest {
        BillableGuest(
            id: guest.id, name: guest.name, flavor: guest.request.flavor,
            pricePerSecondMicros: guest.pricePerSecondMicros,
            changes: entries.map { entry in
                StateChange(
                    sequence: entry.sequence, timeMilliseconds: Billing.milliseconds(entry.time), to: entry.to)
            })
    }

    /// Journal rows joined with their guests (in sequence order), grouped by guest: guests oldest
    /// first (created, then ID), each with its rows in sequence order.
    public static func grouping(_ rows: [(guest: CloudGuest, entry: CloudJournalEntry)]) -> [GuestJournal] {
        var byID: [GuestID: GuestJournal] = [:]
        for row in rows {
            byID[row.guest.id, default: GuestJournal(guest: row.guest, entries: [])].entries.append(row.entry)
        }
        return byID.values.sorted { ($0.guest.createdAt, $0.guest.id.hex) < ($1.guest.createdAt, $1.guest.id.hex) }
            .map { journal in
                var sorted = journal
                sorted.entries.sort { $0.sequence < $1.sequence }
                return sorted
            }
    }

    /// The condition on a guest (table `guests`, aliased `g`) that billing's query for a period
    /// keeps: created before the period ends, and not ended (`deleted` or `error`) by a journal
    /// whose latest time is before the period starts. Exact, not a heuristic: a guest it leaves
    /// out bills nothing in the period. Same SQL on SQLite and PostgreSQL; `from` and `to` are
    /// integers, so nothing needs quoting.
    public static func periodCondition(_ period: BillingPeriod) -> String {
        """
        g.created_ms < \(period.toMilliseconds) AND (g.state NOT IN ('deleted', 'error')
        OR (SELECT MAX(m.time_ms) FROM journal m WHERE m.guest_id = g.id) >= \(period.fromMilliseconds))
        """
    }
}

extension Billing {
    /// A date as Unix milliseconds, as the stores write it.
    public static func milliseconds(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1000).rounded()) }
}

extension ControlStore {
    /// The project's invoice for `[from, to)`, made at `now`: `Billing.invoice` over the store's
    /// journal rows, so the same rows give the same invoice whichever controller asks and however
    /// often it has restarted. An unknown project is `notFound`; a period that does not end after
    /// it starts is `invalidArgument`.
    public func invoice(project: String, from: Date, to: Date, now: Date = Date()) async throws(ControlError)
        -> Invoice
    {
        let period = try BillingPeriod(
            fromMilliseconds: Billing.milliseconds(from), toMilliseconds: Billing.milliseconds(to))
        let journals = try await billingJournals(project: project, period: period)
        return Billing.invoice(
            project: project, period: period, guests: journals.map(\.billable), now: Billing.milliseconds(now))
    }
}
