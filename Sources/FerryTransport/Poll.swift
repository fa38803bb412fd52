import FerrySystem
import Glibc

/// Waits for `events` on `fd` and returns the events that came, nil on timeout; nil `timeoutMs`
/// waits forever. An interrupted wait goes on with the time that is left.
func pollReady(_ fd: Int32, events: Int16, timeoutMs: Int?) throws(SystemError) -> Int16? {
    let deadline = timeoutMs.map { MonotonicClock.milliseconds() + max(0, $0) }
    var entry = pollfd(fd: fd, events: events, revents: 0)
    let ready = try valueOrErrno("poll") {
        let wait = deadline.map { Int32(clamping: max(0, $0 - MonotonicClock.milliseconds())) } ?? -1
        return poll(&entry, 1, wait)
    }
    return ready > 0 ? entry.revents : nil
}
