import FerryHostModel
import FerrySystem
import FerryVMM
import Foundation
import Glibc

/// Starts the `ferry vmm --incoming` a destination agent runs for an arriving guest. It does what
/// `ferry vmm --detach` does (`DetachedProcess.spawn`: a session of its own, log in
/// `STATE_DIR/GUEST_ID.log`, no inherited descriptor) but from the agent itself, so the vmm is the
/// agent's child and its exit status can be read: with `--detach` the short-lived launcher
/// would be the parent and the status would be lost.
public struct IncomingGuestSpawner: Sendable {
    /// The `ferry` executable; by default this process's own (`/proc/self/exe`: the agent runs
    /// inside `ferry`).
    public var executable: String
    /// Where the vmm's socket, image and log go (at most 69 bytes: the socket path's limit).
    public var stateDirectory: String
    /// How long the vmm may take to answer on its control socket.
    public var readyTimeoutSeconds: Double = 30
    /// The vmm's `--resume-timeout`: how long it waits for a source whose connections were lost
    /// during pre-copy to come back; nil: the vmm's default (30 s).
    public var resumeTimeout: Duration?

    public init(stateDirectory: String, executable: String? = nil) {
        self.stateDirectory = stateDirectory
        self.executable =
            executable ?? (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? "ferry"
    }

    /// Starts `ferry vmm --incoming HOST:0 --id ID --name NAME --state-dir DIR [--key-file K]
    /// [--paused] [--resume-timeout T]`, waits until it answers `hello` (with its own PID) and returns it, listening.
    /// `paused`: the guest is paused on the source and stays paused here. Blocks.
    /// `onOutcome`: called once when the guest arrived or the process ended without it.
    public func spawn(
        id: GuestID, name: GuestName, listenHost: String, keyFile: String?, paused: Bool = false,
        onOutcome: (@Sendable (IncomingGuestProcess.Outcome) -> Void)? = nil
    ) throws(MigrationDriverError) -> IncomingGuestProcess {
        var arguments = [
            "vmm", "--incoming", "\(listenHost):0", "--id", id.hex, "--name", name.value, "--state-dir", stateDirectory,
        ]
        if let keyFile { arguments += ["--key-file", keyFile] }
        if paused { arguments.append("--paused") }
        if let resumeTimeout { arguments += ["--resume-timeout", "\(resumeTimeout.inMilliseconds)ms"] }
        let socketPath = VMMConfiguration.socketPath(stateDirectory: stateDirectory, id: id)
        let logPath = "\(stateDirectory)/\(id.hex).log"
        let pid: pid_t
        do { pid = try DetachedProcess.spawn(executable: executable, arguments: arguments, logPath: logPath) } catch {
            throw MigrationDriverError(.spawn, "starting \(executable) vmm --incoming failed: \(error)", cause: error)
        }
        let deadline = Date().addingTimeInterval(readyTimeoutSeconds)
        while Date() < deadline {
            if let code = DetachedProcess.reap(pid) {
                throw MigrationDriverError(
                    .spawn,
                    "ferry vmm --incoming for guest \(id) exited with \(code) before it was ready; see \(logPath)")
            }
            if let hello = try? VMMControlClient(path: socketPath, timeoutSeconds: 5).call("hello"),
                hello["pid"]?.intValue == Int(pid), let address = hello["incoming"]?.stringValue
            {
                let ticks = UInt64(hello["process_start_ticks"]?.doubleValue ?? 0)
                return IncomingGuestProcess(
                    pid: pid, processStartTicks: ticks, address: address, socketPath: socketPath, logPath: logPath,
                    onOutcome: onOutcome)
            }
            usleep(20_000)
        }
        kill(pid, SIGKILL)
        _ = Self.waitForExit(pid, timeoutSeconds: 5)
        throw MigrationDriverError(
            .spawn,
            "ferry vmm --incoming for guest \(id) (PID \(pid)) did not answer on \(socketPath) within \(Int(readyTimeoutSeconds)) s; it was killed; see \(logPath)"
        )
    }

    /// Reaps `pid` (this process's child) once it exits: its exit code or 128 + signal; nil if it
    /// still runs after `timeoutSeconds`, or if it is gone but was not ours to reap.
    static func waitForExit(_ pid: pid_t, timeoutSeconds: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        repeat {
            if let code = DetachedProcess.reap(pid) { return code }
            if ProcessIdentity.of(pid: pid) == nil { return nil }
            // Exited, waiting for a parent that is not this process (a vmm an earlier agent
            // started): no status for us, and its new parent may be slow to reap it. (Our own
            // child's leader thread shows Z while its other threads still exit: waitpid waits.)
            if isZombie(pid) && !isChild(pid) { return nil }
            usleep(10_000)
        } while Date() < deadline
        return nil
    }

    /// Whether `pid` is a child of this process (waitid knows it; nothing is reaped).
    static func isChild(_ pid: pid_t) -> Bool {
        var info = siginfo_t()
        return waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 || errno != ECHILD
    }

    /// Whether `pid` has exited and waits for a parent to reap it: a vmm an earlier agent
    /// started is no child of this one, and its new parent may be slow to reap it.
    static func isZombie(_ pid: pid_t) -> Bool {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = text.lastIndex(of: ")")
        else { return false }
        return text[text.index(after: close)...].split(separator: " ").first == "Z"
    }
}
