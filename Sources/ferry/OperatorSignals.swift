import FerryMigration
import Foundation
import Glibc
import Synchronization

/// SIGINT (Ctrl-C) and SIGTERM as an operator's cancel of the command's migration.
///
/// The handler does only what is safe in a signal handler: it writes the signal's number to a
/// pipe. A thread reads the pipe and does the rest: the first signal cancels the migration
/// (`MigrationCancellation.cancel`) and says so on stderr; the command then ends as its phase
/// allows (docs/guide.md, "Cancelling") and exits 128 + the first signal's number (130 for
/// SIGINT, 143 for SIGTERM), the shell's convention. Later signals only say that the cancel is
/// under way: exiting at once could leave a paused guest paused or a running guest's image
/// half written, and the cancel itself is bounded (a batch, a round trip, the blackout's
/// deadline). SIGKILL remains the way out that skips all of it.
enum OperatorSignals {
    nonisolated(unsafe) private static var pipeWrite: Int32 = -1
    private static let first = Mutex<Int32>(0)

    /// The exit status of a migration cancelled by a signal: 128 + its number (130 when the
    /// cancel came from elsewhere).
    static var exitCode: Int32 {
        let signal = first.withLock { $0 }
        return 128 + (signal == 0 ? SIGINT : signal)
    }

    /// The first signal's name, or nil when none arrived.
    static var received: String? {
        let signal = first.withLock { $0 }
        return signal == 0 ? nil : name(signal)
    }

    static func name(_ signal: Int32) -> String {
        switch signal {
        case SIGINT: return "SIGINT"
        case SIGTERM: return "SIGTERM"
        default: return "signal \(signal)"
        }
    }

    enum Role { case source, destination }

    /// A cancellation that SIGINT and SIGTERM trigger from now on, announced for `role`.
    static func cancelMigration(role: Role) -> MigrationCancellation {
        let cancellation = MigrationCancellation()
        install(cancellation) { signal in
            switch role {
            case .source:
                return
                    "\(signal): cancelling the migration; the guest keeps running here until ferry stops it cleanly (if the handoff has begun, it completes)"
            case .destination:
                return
                    "\(signal): cancelling: a migration not yet verified is aborted (its source keeps the guest) and its partial image removed; one that sent VERIFIED waits for its source's COMMIT or ABORT; a guest already handed over runs here as usual"
            }
        }
        return cancellation
    }

    /// After a migration that succeeded: a signal that came too late to cancel it is said so.
    static func noteLateSignal(role: Role) {
        guard let signal = received else { return }
        switch role {
        case .source:
            Terminal.note(
                "\(signal) arrived after the handoff had begun (COMMIT written): too late to cancel; the migration completed and the guest runs on the destination"
            )
        case .destination:
            Terminal.note(
                "\(signal) arrived after COMMIT: the guest was this side's; it ran here as usual and was stopped cleanly"
            )
        }
    }

    /// Installs the handlers: from now on SIGINT and SIGTERM cancel `cancellation`; `announce`
    /// is the line printed on the first one (given the signal's name).
    static func install(_ cancellation: MigrationCancellation, announce: @escaping @Sendable (String) -> String) {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { return }  // without a pipe, the signals keep their default
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        pipeWrite = fds[1]
        let readEnd = fds[0]
        // A parent may have started this process with the signals blocked (a test runner's
        // thread, a service manager): unblocked here, on the main thread, before any thread
        // that should inherit it starts.
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
        let thread = Thread {
            var byte: UInt8 = 0
            while true {
                let count = read(readEnd, &byte, 1)
                if count < 0 && errno == EINTR { continue }
                guard count == 1 else { return }
                let signal = Int32(byte)
                let isFirst = first.withLock { held in
                    guard held == 0 else { return false }
                    held = signal
                    return true
                }
                let name = name(signal)
                if isFirst {
                    Terminal.note(announce(name))
                    cancellation.cancel(name)
                } else {
                    Terminal.note(
                        "\(name): the cancel is under way; ferry exits once the guest is where it belongs (SIGKILL skips that)"
                    )
                }
            }
        }
        thread.name = "ferry-signals"
        thread.start()
        // glibc's signal() installs with SA_RESTART: system calls in progress are restarted.
        signal(SIGINT, forwardSignal)
        signal(SIGTERM, forwardSignal)
    }

    fileprivate static func forward(_ signal: Int32) {
        var byte = UInt8(truncatingIfNeeded: signal)
        let saved = errno
        _ = write(pipeWrite, &byte, 1)
        errno = saved
    }
}

private func forwardSignal(_ signal: Int32) {
    OperatorSignals.forward(signal)
}
