import FerryHostModel
import FerryTestSupport
import Testing

@testable import FerryControl

/// Billing from the journal (pure): hand-written lives, then random legal journals against an
/// oracle that walks time one millisecond at a time, and adjacent periods that add up.
struct BillingTests {
    /// A guest at 1,000 µ per second (1 µ per millisecond) whose journal is `steps` (time in ms,
    /// state), in that order.
    static func guest(_ name: String, price: Int64 = 1000, _ steps: [(Int64, CloudGuestState)]) -> BillableGuest {
        BillableGuest(
            id: .random(), name: try! GuestName(name), flavor: "small", pricePerSecondMicros: price,
            changes: steps.enumerated().map { index, step in
                StateChange(sequence: Int64(index + 1), timeMilliseconds: step.0, to: step.1)
            })
    }

    static func period(_ from: Int64, _ to: Int64) -> BillingPeriod {
        try! BillingPeriod(fromMilliseconds: from, toMilliseconds: to)
    }

    static func billed(_ guest: BillableGuest, _ from: Int64, _ to: Int64, now: Int64) -> Int64 {
        Billing.billedMilliseconds(Billing.runningIntervals(guest.changes), in: period(from, to), now: now)
    }

    @Test func stoppedAndStartedAgainBillsBothRuns() {
        let web = Self.guest(
            "web",
            [
                (0, .pending), (100, .building), (1000, .running), (5000, .stopping), (6000, .stopped),
                (10000, .building), (12000, .running),
            ])
        #expect(
            Billing.runningIntervals(web.changes) == [
                RunningInterval(startMilliseconds: 1000, endMilliseconds: 5000),
                RunningInterval(startMilliseconds: 12000, endMilliseconds: nil),
            ])
        let invoice = Billing.invoice(project: "alpha", period: Self.period(0, 20000), guests: [web], now: 30000)
        #expect(invoice.lines.map(\.billedMilliseconds) == [4000 + 8000])
        #expect(invoice.lines.map(\.amountMicros) == [12000])
        #expect(invoice.totalMicros == 12000)
        // Clipped to a period that starts inside the first run and ends inside the second.
        #expect(Self.billed(web, 3000, 13500, now: 30000) == 2000 + 1500)
        // Nothing in a period in which it did not run.
        #expect(Self.billed(web, 5000, 12000, now: 30000) == 0)
    }

    /// Warm capacity: a suspended guest holds its place but is not billed; its resume is billed
    /// from the moment it runs again.
    @Test func suspendedTimeIsNotBilled() {
        let warm = Self.guest(
            "warm",
            [
                (0, .pending), (10, .building), (1000, .running), (2000, .suspended), (50000, .building),
                (50300, .running), (51000, .suspended), (60000, .deleted),
            ])
        #expect(Self.billed(warm, 0, 100_000, now: 100_000) == 1000 + 700)
        #expect(Self.billed(warm, 2000, 50300, now: 100_000) == 0)
    }

    @Test func unknownTimeIsNotBilled() {
        let web = Self.guest(
            "web",
            [(0, .pending), (10, .building), (1000, .running), (3000, .unknown), (7000, .running), (9000, .stopping)]
        )
        #expect(Self.billed(web, 0, 100_000, now: 100_000) == 2000 + 2000)
        // Unknown until it ended in error: only the first run.
        let lost = Self.guest(
            "lost", [(0, .pending), (10, .building), (1000, .running), (3000, .unknown), (9000, .error)])
        #expect(Self.billed(lost, 0, 100_000, now: 100_000) == 2000)
    }

    @Test func aGuestStillRunningIsBilledToTheEndOfThePeriodOrNow() {
        let web = Self.guest("web", [(0, .pending), (10, .building), (1000, .running)])
        #expect(Self.billed(web, 0, 5000, now: 100_000) == 4000)
        #expect(Self.billed(web, 0, 5000, now: 3000) == 2000, "not past now")
        #expect(Self.billed(web, 5000, 10000, now: 100_000) == 5000)
        #expect(Self.billed(web, 0, 1000, now: 100_000) == 0, "the period ends as it starts")
    }

    @Test func deletedAndErrorEndBilling() {
        let failed = Self.guest(
            "failed", [(0, .pending), (10, .building), (1000, .running), (2500, .error), (3000, .deleted)])
        let removed = Self.guest(
            "removed",
            [(0, .pending), (10, .building), (1000, .running), (2000, .stopping), (2100, .stopped), (2200, .deleted)])
        let neverBuilt = Self.guest("never", [(0, .pending), (500, .deleted)])
        let invoice = Billing.invoice(
            project: "alpha", period: Self.period(0, 10000), guests: [failed, removed, neverBuilt], now: 10000)
        #expect(invoice.lines.map(\.name.value) == ["failed", "removed"], "a guest never running has no line")
        #expect(invoice.lines.map(\.billedMilliseconds) == [1500, 1000])
        #expect(invoice.totalMicros == 2500 && invoice.billedMilliseconds == 2500)
    }

    /// Two controllers' clocks may disagree: a row earlier than the one before it is taken at the
    /// previous row's time, and rows are read by sequence, not time.
    @Test func timesThatRunBackwardsNeverBillTwice() {
        let skewed = Self.guest(
            "skewed", [(0, .pending), (10, .building), (5000, .running), (4000, .stopping), (6000, .stopped)])
        #expect(Self.billed(skewed, 0, 10000, now: 10000) == 0)
        var shuffled = Self.guest("shuffled", [(0, .pending), (10, .building), (1000, .running), (3000, .stopping)])
        shuffled.changes.reverse()
        #expect(Self.billed(shuffled, 0, 10000, now: 10000) == 2000)
    }

    @Test func amountsAreRoundedDownOncePerLine() {
        #expect(Billing.amountMicros(pricePerSecondMicros: 7, milliseconds: 1234) == 8)  // 8.638
        #expect(Billing.amountMicros(pricePerSecondMicros: 12, milliseconds: 3_600_000) == 43200)
        #expect(Billing.amountMicros(pricePerSecondMicros: 0, milliseconds: 1_000_000) == 0)
        #expect(Billing.amountMicros(pricePerSecondMicros: .max, milliseconds: 1000) == .max)
        #expect(Billing.amountMicros(pricePerSecondMicros: .max, milliseconds: 1001) == .max, "saturates")
        #expect(Billing.amountMicros(pricePerSecondMicros: 1_000_000_000_000, milliseconds: 1 << 40) == .max)
        // Two runs of 600 ms at 1 µ per second: 1 µ on one line (1.2 rounded once), not 0 + 0.
        let web = Self.guest(
            "web", price: 1,
            [
                (0, .pending), (0, .building), (0, .running), (600, .stopping), (600, .stopped), (1000, .building),
                (1000, .running), (1600, .stopping),
            ])
        let invoice = Billing.invoice(project: "alpha", period: Self.period(0, 2000), guests: [web], now: 2000)
        #expect(invoice.lines.map(\.amountMicros) == [1])
    }

    @Test func aPeriodEndsAfterItStarts() {
        #expect(throws: ControlError.self) { try BillingPeriod(fromMilliseconds: 5, toMilliseconds: 5) }
        #expect(throws: ControlError.self) { try BillingPeriod(fromMilliseconds: 6, toMilliseconds: 5) }
    }

    // MARK: - Random journals

    /// A legal journal (every change allowed by `CloudGuestState.allows`), starting `pending` at
    /// a time in [0, 500) ms, each row 0–200 ms after the one before (a quarter of them at the
    /// same millisecond), until `deleted` or 2–30 rows; `error` and `deleted` are taken one time in
    /// eight that they are allowed (else most journals would end at once).
    static func randomJournal(_ random: inout SplitMix64) -> [(Int64, CloudGuestState)] {
        var time = Int64.random(in: 0..<500, using: &random)
        var state = CloudGuestState.pending
        var steps = [(time, state)]
        let length = Int.random(in: 2...30, using: &random)
        while steps.count < length, !state.successors.isEmpty {
            time +=
                Bool.random(using: &random) && Bool.random(using: &random) ? 0 : .random(in: 1...200, using: &random)
            let all = state.successors.sorted { $0.rawValue < $1.rawValue }
            let onward = all.filter { $0 != .error && $0 != .deleted }
            let choices = onward.isEmpty || Int.random(in: 0..<8, using: &random) == 0 ? all : onward
            state = choices.randomElement(using: &random)!
            steps.append((time, state))
        }
        return steps
    }

    /// The oracle: each millisecond of [from, min(to, now)) in which the guest's latest row at or
    /// before it says `running`.
    static func oracle(_ steps: [(Int64, CloudGuestState)], from: Int64, to: Int64, now: Int64) -> Int64 {
        var billed: Int64 = 0
        var next = 0
        var state: CloudGuestState?
        var time = from
        while time < min(to, now) {
            while next < steps.count, steps[next].0 <= time {
                state = steps[next].1
                next += 1
            }
            if state == .running { billed += 1 }
            time += 1
        }
        return billed
    }

    @Test func twoThousandRandomJournalsAgreeWithTheOracle() {
        var random = SplitMix64(seed: 0xB111)
        var billedTotal: Int64 = 0
        var billedTrials = 0
        for trial in 0..<2000 {
            let steps = Self.randomJournal(&random)
            let last = steps.last!.0
            let now = last + .random(in: 0...1000, using: &random)
            let from = Int64.random(in: 0..<(last + 500), using: &random)
            let to = from + .random(in: 1...3000, using: &random)
            let price = Int64.random(in: 0...5000, using: &random)
            let guest = Self.guest("g", price: price, steps)
            let invoice = Billing.invoice(project: "alpha", period: Self.period(from, to), guests: [guest], now: now)
            let expected = Self.oracle(steps, from: from, to: to, now: now)
            let billed = invoice.lines.first?.billedMilliseconds ?? 0
            #expect(billed == expected, "trial \(trial): \(steps) over [\(from), \(to)) at \(now)")
            #expect((invoice.lines.first?.amountMicros ?? 0) == price * expected / 1000, "trial \(trial)")
            #expect(invoice.lines.isEmpty == (expected == 0))
            billedTotal += billed
            billedTrials += billed > 0 ? 1 : 0
        }
        // With this seed: 834 of the 2,000 bill something, 185,187 ms in all (the others did not
        // run in their period).
        #expect(billedTrials > 600, "the random journals ran in their periods")
        #expect(billedTotal > 100_000)
    }

    /// `[a, b)` and `[b, c)` bill exactly the milliseconds of `[a, c)`, and amounts to within one
    /// micro per line (each line is rounded down once), never more.
    @Test func adjacentPeriodsAddUp() {
        var random = SplitMix64(seed: 0xADD)
        for trial in 0..<500 {
            let guests = (0..<Int.random(in: 1...6, using: &random)).map { index in
                Self.guest("g\(index)", price: .random(in: 0...5000, using: &random), Self.randomJournal(&random))
            }
            let now = Int64.random(in: 0...8000, using: &random)
            let a = Int64.random(in: 0...4000, using: &random)
            let b = a + .random(in: 1...3000, using: &random)
            let c = b + .random(in: 1...3000, using: &random)
            let first = Billing.invoice(project: "alpha", period: Self.period(a, b), guests: guests, now: now)
            let second = Billing.invoice(project: "alpha", period: Self.period(b, c), guests: guests, now: now)
            let whole = Billing.invoice(project: "alpha", period: Self.period(a, c), guests: guests, now: now)
            for line in whole.lines {
                let parts = [first, second].compactMap { invoice in
                    invoice.lines.first { $0.guestID == line.guestID }
                }
                #expect(parts.reduce(0) { $0 + $1.billedMilliseconds } == line.billedMilliseconds, "trial \(trial)")
                let amount = parts.reduce(0) { $0 + $1.amountMicros }
                #expect(amount <= line.amountMicros && amount >= line.amountMicros - 1, "trial \(trial)")
            }
            #expect(first.billedMilliseconds + second.billedMilliseconds == whole.billedMilliseconds)
            let sum = first.totalMicros + second.totalMicros
            #expect(sum <= whole.totalMicros && sum >= whole.totalMicros - Int64(whole.lines.count), "trial \(trial)")
        }
    }
}
