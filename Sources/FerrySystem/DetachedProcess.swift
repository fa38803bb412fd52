import CFerryShims
import Glibc

/// Starts a program independent of its starter, as an agent starts a `ferry vmm`: a session of
/// its own (`setsid`: no terminal hang-up or process-group signal reaches it), no parent-death
/// signal, signals at their defaults and unblocked, stdin from /dev/null, stdout and stderr
/// appended to a log file, and no other file descriptor inherited. The starter may exit or be
/// killed; the process runs on. It stays the starter's child until the starter exits: reap it
/// (`reap(_:)`) to leave no zombie.
public enum DetachedProcess {
    public static func spawn(executable: String, arguments: [String], logPath: String) throws(SystemError) -> pid_t {
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: Int32 = 0
        let result = ferry_spawn_detached(executable, argv, environ, logPath, &pid)
        guard result == 0 else {
            throw SystemError(
                call: "posix_spawn", errno: Errno(-result),
                detail: "starting \(executable) (log \(logPath)); check the path and its permissions")
        }
        return pid
    }

    /// Collects `pid`'s exit status if it has ended (never blocks): its exit code, or 128 + the
    /// signal that killed it; nil while it runs (or when it is not this process's child).
    public static func reap(_ pid: pid_t) -> Int32? {
        var status: Int32 = 0
        guard waitpid(pid, &status, WNOHANG) == pid else { return nil }
        let signal = status & 0x7f
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal
    }
}
