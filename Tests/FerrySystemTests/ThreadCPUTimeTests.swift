import FerrySystem
import Foundation
import Glibc
import Testing

/// A thread's CPU time read from another thread: a spinning thread's grows by about the time it
/// spun, a sleeping one's hardly at all, and the last reading stays after the thread ended.
@Suite struct ThreadCPUTimeTests {
    @Test func aSpinningThreadUsesCPUAndASleepingOneDoesNot() throws {
        let spinner = ThreadCPUTime()
        let sleeper = ThreadCPUTime()
        #expect(spinner.nanoseconds == 0, "0 before the thread began")
        let started = DispatchSemaphore(value: 0)
        let finish = DispatchSemaphore(value: 0)
        let spinning = Thread {
            spinner.begin()
            started.signal()
            let end = MonotonicClock.now() + 300_000_000
            var sink: UInt64 = 0
            while MonotonicClock.now() < end { sink &+= 1 }
            precondition(sink > 0)
            finish.wait()
        }
        let sleeping = Thread {
            sleeper.begin()
            started.signal()
            usleep(300_000)
            finish.wait()
        }
        spinning.start()
        sleeping.start()
        started.wait()
        started.wait()
        usleep(400_000)
        let spun = spinner.nanoseconds
        let slept = sleeper.nanoseconds
        // Spun 300 ms of wall time; under load it gets less CPU, but far more than a sleeper.
        #expect(spun > 50_000_000 && spun < 1_000_000_000, "\(spun) ns")
        #expect(slept < 20_000_000, "\(slept) ns")
        finish.signal()
        finish.signal()
        usleep(200_000)
        #expect(spinner.nanoseconds >= spun, "the last reading stays once the thread ended")
    }
}
