import FerrySystem
import Glibc

/// The agent's state directory, locked for as long as the agent runs: one agent per directory.
///
/// Layout (docs/agent.md, "State directory"):
///
///     DIR/                   mode 0700 when the agent creates it
///       agent.lock           empty; its OFD lock is held by the running agent (`ImageLock`)
///       agent.lock.lock      the holder's PID, start time and command line (a name, not the lock)
///       guests/              one directory per guest: control socket, console, suspend image
///       disks/               guests' disk files when their specification names no path
///       inventory.sqlite     reserved for the inventory (FerryInventory)
///
/// The lock is an open file description lock: the kernel drops it when the agent exits, however
/// it exits, so it is never stale; a second agent is refused before it changes anything, with
/// the holder's PID and command line.
public final class StateDirectory: Sendable {
    public let path: String
    private let lock: ImageLock

    /// The subdirectories the agent creates (the inventory creates its own file).
    public static let subdirectories = ["guests", "disks", "migrations"]
    public static let lockFileName = "agent.lock"

    private init(path: String, lock: ImageLock) {
        self.path = path
        self.lock = lock
    }

    public var guestsPath: String { path + "/guests" }
    public var disksPath: String { path + "/disks" }
    public var migrationsPath: String { path + "/migrations" }

    /// Creates the directory (and its parents) when missing, takes its lock, then creates the
    /// subdirectories. Throws `.locked` naming the holder when another agent runs on it.
    public static func open(_ path: String) throws(SystemError) -> StateDirectory {
        let path = normalized(path)
        try makeDirectories(path)
        let lock: ImageLock
        do throws(SystemError) {
            lock = try ImageLock.acquire(path: path + "/" + lockFileName, create: true)
        } catch {
            throw error.code == .locked ? refusal(error, path: path) : error
        }
        for name in subdirectories {
            try makeDirectory(path + "/" + name)
        }
        return StateDirectory(path: path, lock: lock)
    }

    /// Gives the lock up (the agent is stopping); the files stay.
    public func release() { lock.release() }

    /// The lock's refusal, said as the agent's: which directory, who holds it, what to do.
    private static func refusal(_ error: SystemError, path: String) -> SystemError {
        var refused = error
        refused.detail =
            "another agent runs on the state directory \(path): " + error.detail
            + "; one agent per state directory (give this one another --state-dir)"
        return refused
    }

    /// `path` without trailing slashes (`/` stays `/`).
    static func normalized(_ path: String) -> String {
        var text = Substring(path)
        while text.count > 1 && text.hasSuffix("/") { text = text.dropLast() }
        return String(text)
    }

    /// `mkdir -p` with mode 0700 for what it creates; an existing path must be a directory.
    private static func makeDirectories(_ path: String) throws(SystemError) {
        var prefix = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            prefix += "/" + component
            try makeDirectory(prefix)
        }
    }

    private static func makeDirectory(_ path: String) throws(SystemError) {
        if mkdir(path, 0o700) == 0 { return }
        let failure = SystemError.lastError("mkdir(\"\(path)\")")
        var info = stat()
        guard failure.errno == .fileExists, stat(path, &info) == 0 else { throw failure }
        guard info.st_mode & S_IFMT == S_IFDIR else {
            throw SystemError(
                code: .invalidArgument, call: "mkdir(\"\(path)\")", errno: nil,
                detail: "\(path) exists and is not a directory; name a directory for --state-dir")
        }
    }
}
