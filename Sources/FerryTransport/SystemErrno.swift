import FerrySystem
import Glibc

/// Waits for `events` on `fd`. Returns false on timeout; nil `timeoutMs` waits forever.
/// Retries EINTR with the time that is left.
func pollReady(_ fd: Int32, events: Int16, timeoutMs: Int?) -> (ready: Bool, revents: Int16, errno: Int32) {
    let deadline = timeoutMs.map { MonotonicClock.milliseconds() + max(0, $0) }
    var entry = pollfd(fd: fd, events: events, revents: 0)
    while true {
        let wait: Int32
        if let deadline {
            wait = Int32(clamping: max(0, deadline - MonotonicClock.milliseconds()))
        } else {
            wait = -1
        }
        let rc = poll(&entry, 1, wait)
        if rc > 0 { return (true, entry.revents, 0) }
        if rc == 0 { return (false, 0, 0) }
        let code = errno
        if code == EINTR { continue }
        return (false, 0, code)
    }
}
