import FerryHostModel

/// Billing from the state journal; pure (times are Unix milliseconds, nothing here reads a clock
/// or a database).
///
/// **The rule.** A guest is billed for every millisecond it is `running` by its journal: from the
/// row that makes it `running` to the next row of its journal (whatever that row's state:
/// `stopping`, `unknown`, `error`), or, while it is still running, to the end of the period or
/// `now`, whichever comes first. `unknown` is not billed (no one can say it ran); nor are
/// `pending`, `building`, `stopping`, `stopped`, `error` and `deleted`. The price is the one the
/// guest copied from its flavor when it was created.
///
/// **The period** is half-open, `[from, to)`: a millisecond belongs to exactly one of two adjacent
/// periods, so `[a, b)` and `[b, c)` bill exactly the milliseconds of `[a, c)`.
///
/// **Rounding.** A guest's line is `price_per_second_micros × billed_ms / 1000` micros, rounded
/// down once, on the line's total milliseconds (never per interval), in 128-bit arithmetic. The
/// invoice's total is the sum of its lines. Two adjacent invoices therefore sum to the invoice of
/// their union to within one micro per guest line, and never more than it.
///
/// **The journal's order.** Rows are taken in `sequence` order (the order their transactions
/// committed). Two controllers' clocks may disagree, so a row's time can be earlier than the one
/// before it; such a time is taken as the previous row's (times never run backwards), so that no
/// interval is negative and no millisecond is counted twice.
///
/// A controller restart cannot bill twice: an invoice is a function of the journal's rows, and a
/// restarted controller reads the same rows.
public enum Billing {
    /// The intervals in which the guest was `running`, oldest first, from its journal rows (any
    /// order: they are sorted by sequence). An interval still open (the guest's last row makes it
    /// `running`) has no end. Empty intervals (a row and the next at the same millisecond) are
    /// left out.
    public static func runningIntervals(_ changes: [StateChange]) -> [RunningInterval] {
        var intervals: [RunningInterval] = []
        var runningSince: Int64?
        var latest = Int64.min
        for change in changes.sorted(by: { $0.sequence < $1.sequence }) {
            let time = max(latest, change.timeMilliseconds)
            latest = time
            if let start = runningSince, change.to != .running {
                if time > start { intervals.append(RunningInterval(startMilliseconds: start, endMilliseconds: time)) }
                runningSince = nil
            } else if runningSince == nil, change.to == .running {
                runningSince = time
            }
        }
        if let start = runningSince {
            intervals.append(RunningInterval(startMilliseconds: start, endMilliseconds: nil))
        }
        return intervals
    }

    /// The milliseconds of `intervals` inside `period`, an open interval ending at `now` (or at the
    /// period's end, if that comes first).
    public static func billedMilliseconds(_ intervals: [RunningInterval], in period: BillingPeriod, now: Int64)
        -> Int64
    {
        var total: Int64 = 0
        for interval in intervals {
            let start = max(interval.startMilliseconds, period.fromMilliseconds)
            let end = min(interval.endMilliseconds ?? now, period.toMilliseconds)
            if end > start { total += end - start }
        }
        return total
    }

    /// `pricePerSecondMicros × milliseconds / 1000`, rounded down, computed in 128 bits; a result
    /// past `Int64.max` (a price and a time no one bills) is `Int64.max`. Both arguments are at
    /// least zero (a flavor's price is checked when it is added).
    public static func amountMicros(pricePerSecondMicros: Int64, milliseconds: Int64) -> Int64 {
        let price = max(0, pricePerSecondMicros)
        let time = max(0, milliseconds)
        let product = price.multipliedFullWidth(by: time)
        // The quotient fits in Int64 iff the product is below 1000 × 2^63 = 500 × 2^64.
        guard product.high < 500 else { return .max }
        return Int64(1000).dividingFullWidth(product).quotient
    }

    /// The project's invoice for `period`, made at `now`: one line per guest billed at least one
    /// millisecond in the period, in the order of `guests`; guests not billed are left out.
    public static func invoice(project: String, period: BillingPeriod, guests: [BillableGuest], now: Int64)
        -> Invoice
    {
        var lines: [InvoiceLine] = []
        for guest in guests {
            let billed = billedMilliseconds(runningIntervals(guest.changes), in: period, now: now)
            guard billed > 0 else { continue }
            lines.append(
                InvoiceLine(
                    guestID: guest.id, name: guest.name, flavor: guest.flavor,
                    pricePerSecondMicros: guest.pricePerSecondMicros, billedMilliseconds: billed,
                    amountMicros: amountMicros(pricePerSecondMicros: guest.pricePerSecondMicros, milliseconds: billed)))
        }
        return Invoice(project: project, period: period, madeAtMilliseconds: now, lines: lines)
    }
}

/// A half-open span of time, `[from, to)`, in Unix milliseconds.
public struct BillingPeriod: Sendable, Equatable, Hashable {
    public let fromMilliseconds: Int64
    public let toMilliseconds: Int64

    /// Refused (`invalidArgument`) unless `from` is before `to`.
    public init(fromMilliseconds: Int64, toMilliseconds: Int64) throws(ControlError) {
        guard fromMilliseconds < toMilliseconds else {
            throw ControlError(
                .invalidArgument,
                "a billing period ends after it starts: from \(fromMilliseconds) ms is not before to \(toMilliseconds)"
                    + " ms")
        }
        self.fromMilliseconds = fromMilliseconds
        self.toMilliseconds = toMilliseconds
    }
}

/// One row of a guest's journal as billing reads it.
public struct StateChange: Sendable, Equatable {
    public var sequence: Int64
    public var timeMilliseconds: Int64
    public var to: CloudGuestState

    public init(sequence: Int64, timeMilliseconds: Int64, to: CloudGuestState) {
        self.sequence = sequence
        self.timeMilliseconds = timeMilliseconds
        self.to = to
    }
}

/// A guest as billing sees it: who it is, its price, and its journal.
public struct BillableGuest: Sendable, Equatable {
    public var id: GuestID
    public var name: GuestName
    public var flavor: String
    public var pricePerSecondMicros: Int64
    public var changes: [StateChange]

    public init(id: GuestID, name: GuestName, flavor: String, pricePerSecondMicros: Int64, changes: [StateChange]) {
        self.id = id
        self.name = name
        self.flavor = flavor
        self.pricePerSecondMicros = pricePerSecondMicros
        self.changes = changes
    }
}

/// `[start, end)` in Unix milliseconds; `end` nil while the guest still runs.
public struct RunningInterval: Sendable, Equatable {
    public var startMilliseconds: Int64
    public var endMilliseconds: Int64?

    public init(startMilliseconds: Int64, endMilliseconds: Int64?) {
        self.startMilliseconds = startMilliseconds
        self.endMilliseconds = endMilliseconds
    }
}

/// One guest's charge in an invoice.
public struct InvoiceLine: Sendable, Equatable {
    public var guestID: GuestID
    public var name: GuestName
    public var flavor: String
    public var pricePerSecondMicros: Int64
    public var billedMilliseconds: Int64
    /// `pricePerSecondMicros × billedMilliseconds / 1000`, rounded down.
    public var amountMicros: Int64

    public init(
        guestID: GuestID, name: GuestName, flavor: String, pricePerSecondMicros: Int64, billedMilliseconds: Int64,
        amountMicros: Int64
    ) {
        self.guestID = guestID
        self.name = name
        self.flavor = flavor
        self.pricePerSecondMicros = pricePerSecondMicros
        self.billedMilliseconds = billedMilliseconds
        self.amountMicros = amountMicros
    }
}

/// What a project owes for a period: a line per guest that ran in it, and their sum.
public struct Invoice: Sendable, Equatable {
    public var project: String
    public var period: BillingPeriod
    /// When the invoice was made: a guest still running is billed up to this time (or to the
    /// period's end, if that comes first).
    public var madeAtMilliseconds: Int64
    public var lines: [InvoiceLine]

    public init(project: String, period: BillingPeriod, madeAtMilliseconds: Int64, lines: [InvoiceLine]) {
        self.project = project
        self.period = period
        self.madeAtMilliseconds = madeAtMilliseconds
        self.lines = lines
    }

    /// The sum of the lines' amounts (`Int64.max` if it would overflow).
    public var totalMicros: Int64 {
        lines.reduce(0) { total, line in
            let (sum, overflow) = total.addingReportingOverflow(line.amountMicros)
            return overflow ? .max : sum
        }
    }

    public var billedMilliseconds: Int64 { lines.reduce(0) { $0 + $1.billedMilliseconds } }
}
