import FerrySystem
import Testing

/// `MonotonicCondition`, the one condition type: timed waits end at their deadline on
/// CLOCK_MONOTONIC, and `signal` and `broadcast` wake waiters long before theirs.
@Suite struct MonotonicConditionTests {
    /// State guarded by its condition, shared with waiter threads.
    final class Gate: @unchecked Sendable {
        let condition = MonotonicCondition()
        var open = false
        var waiting = 0

        /// Waits for `open` until `deadline`; whether it opened, and the seconds waited.
        func pass(deadline: UInt64) -> (opened: Bool, seconds: Double) {
            let start = MonotonicClock.now()
            let opened = condition.withLock {
                waiting += 1
                defer { waiting -= 1 }
                while !open {
                    if !condition.wait(untilNanoseconds: deadline) { return open }
                }
                return true
            }
            return (opened, MonotonicClock.seconds(since: start))
        }

        /// Returns once `count` threads wait inside `pass` (they hold no lock then: they are in
        /// the condition wait, since they increment `waiting` and wait without releasing it).
        func awaitWaiters(_ count: Int) {
            while condition.withLock({ waiting }) < count { MonotonicClock.sleep(milliseconds: 1) }
        }
    }

    @Test func timedWaitEndsAtItsDeadline() {
        let gate = Gate()
        let start = MonotonicClock.now()
        let deadline = start &+ 150_000_000
        let (opened, _) = gate.pass(deadline: deadline)
        let end = MonotonicClock.now()
        #expect(!opened)
        // Not before the deadline on the monotonic clock; not long after it (a loaded machine
        // may be slow to schedule the thread again).
        #expect(end >= deadline)
        #expect(Double(end &- start) / 1e9 < 2)
    }

    @Test func deadlineInThePastTimesOutAtOnce() {
        let condition = MonotonicCondition()
        let start = MonotonicClock.now()
        let woken = condition.withLock { condition.wait(untilNanoseconds: start &- 1_000_000_000) }
        #expect(!woken)
        #expect(MonotonicClock.seconds(since: start) < 0.5)
        let alsoWoken = condition.withLock {
            condition.wait(untilNanoseconds: MonotonicClock.deadline(afterSeconds: -3))
        }
        #expect(!alsoWoken)
    }

    @Test func signalWakesAWaiterBeforeItsDeadline() throws {
        let gate = Gate()
        let waiter = BackgroundThread { gate.pass(deadline: MonotonicClock.deadline(afterSeconds: 20)) }
        gate.awaitWaiters(1)
        gate.condition.withLock {
            gate.open = true
            gate.condition.signal()
        }
        let (opened, seconds) = try waiter.wait()
        #expect(opened)
        #expect(seconds < 10)
    }

    @Test func broadcastWakesEveryWaiter() throws {
        let gate = Gate()
        let waiters = (0..<3).map { _ in
            BackgroundThread { gate.pass(deadline: MonotonicClock.deadline(afterSeconds: 20)) }
        }
        gate.awaitWaiters(3)
        gate.condition.withLock {
            gate.open = true
            gate.condition.broadcast()
        }
        for waiter in waiters {
            let (opened, seconds) = try waiter.wait()
            #expect(opened)
            #expect(seconds < 10)
        }
    }

    @Test func untimedWaitReturnsWhenSignalled() throws {
        let gate = Gate()
        let waiter = BackgroundThread { gate.pass(deadline: .max) }  // .max: no deadline
        gate.awaitWaiters(1)
        gate.condition.withLock {
            gate.open = true
            gate.condition.signal()
        }
        #expect(try waiter.wait().opened)
    }

    @Test func deadlinesFromIntervals() {
        let now = MonotonicClock.now()
        let inOneSecond = MonotonicClock.deadline(afterSeconds: 1)
        #expect(inOneSecond >= now &+ 1_000_000_000 && inOneSecond < now &+ 3_000_000_000)
        let inFiftyMs = MonotonicClock.deadline(afterMilliseconds: 50)
        #expect(inFiftyMs >= now &+ 50_000_000 && inFiftyMs < now &+ 2_050_000_000)
        #expect(MonotonicClock.deadline(afterSeconds: .infinity) == .max)
        #expect(MonotonicClock.deadline(afterSeconds: 1e300) == .max)
        #expect(MonotonicClock.deadline(afterMilliseconds: .max) == .max)
        #expect(MonotonicClock.deadline(afterSeconds: -1) < now &+ 2_000_000_000)
        #expect(MonotonicClock.deadline(afterSeconds: .nan) < now &+ 2_000_000_000)
    }
}
