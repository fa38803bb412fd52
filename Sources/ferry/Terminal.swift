import FerryDiskMove
import FerryGuest
import FerryKVM
import FerryMigration
import FerryProtocol
import FerrySystem
import FerryTransport
import Foundation
import Glibc
import Synchronization

/// Writes to stderr: one-line errors and a progress line that rewrites itself on a terminal.
enum Terminal {
    static let isTTY = isatty(STDERR_FILENO) == 1
    private static let lastProgress = Mutex<UInt64>(0)

    static func error(_ message: String) {
        clearProgress()
        FileHandle.standardError.write(Data("ferry: error: \(message)\n".utf8))
    }

    static func note(_ message: String) {
        clearProgress()
        FileHandle.standardError.write(Data("ferry: \(message)\n".utf8))
    }

    /// A progress line at most every 200 ms on a terminal (rewritten in place), or one line per
    /// call marked `force` (round ends) when stderr is a file or pipe.
    static func progress(_ line: String, force: Bool = false) {
        let now = MonotonicClock.now()
        let due = lastProgress.withLock { last -> Bool in
            if !force && now &- last < 200_000_000 { return false }
            last = now
            return true
        }
        guard due else { return }
        if isTTY {
            FileHandle.standardError.write(Data("\r\u{1B}[K\(line)".utf8))
        } else if force {
            FileHandle.standardError.write(Data("\(line)\n".utf8))
        }
    }

    /// The terminal's width (stderr's), if it has one: a progress bar wider than it would wrap,
    /// and the carriage return would then redraw only its last row.
    static var columns: Int? {
        var size = winsize()
        guard ioctl(STDERR_FILENO, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 else { return nil }
        return Int(size.ws_col)
    }

    static func clearProgress() {
        if isTTY { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
    }

    /// Seconds between plain progress lines when stderr is not a terminal (round ends and events
    /// are printed whenever they come).
    static let plainLineInterval = 3.0
    private static let lastPlainLine = Mutex<UInt64>(0)

    /// Shows the engine's progress: on a terminal a bar redrawn in place and a line per round's
    /// end; otherwise a plain line at most every `plainLineInterval` seconds and a line per round's
    /// end, never a carriage return.
    static func progressHandler(quiet: Bool) -> ProgressHandler? {
        if quiet { return nil }
        return { progress in
            if let event = ProgressLine.event(progress) {
                note(event)
                return
            }
            if progress.kind == .roundEnded {
                clearProgress()
                FileHandle.standardError.write(Data("\(ProgressLine.roundEnd(progress))\n".utf8))
                if !isTTY { lastPlainLine.withLock { $0 = MonotonicClock.now() } }
            } else if isTTY {
                Terminal.progress(ProgressLine.bar(progress, columns: columns))
            } else {
                let now = MonotonicClock.now()
                let due = lastPlainLine.withLock { last -> Bool in
                    guard Double(now &- last) / 1e9 >= plainLineInterval else { return false }
                    last = now
                    return true
                }
                if due { FileHandle.standardError.write(Data("\(ProgressLine.plain(progress))\n".utf8)) }
            }
        }
    }
}

/// Maps every error to one line and an exit code (listed in `ferry --help`).
func exitCode(for error: any Error) -> Int32 {
    switch error {
    case let migration as MigrationError:
        switch migration.code {
        case .refused: return 3
        case .notConverged: return 4
        case .transport: return 5
        case .verification: return 6
        case .protocolViolation: return 7
        case .system: return 8
        case .configuration: return 9
        case .peerAborted: return 10
        case .cancelled: return OperatorSignals.exitCode
        }
    case let command as CommandError: return command.exitCode
    case let move as DiskMoveError:
        switch move.code {
        case .refused: return 3
        case .transport: return 5
        case .verification: return 6
        case .protocolViolation: return 7
        case .system: return 8
        case .configuration: return 9
        case .peerAborted: return move.peerReason == .verification ? 6 : 10
        case .cancelled: return OperatorSignals.exitCode
        }
    case let system as SystemError: return system.code == .locked ? 9 : 8  // locked: another agent uses the image
    case let transport as TransportError:
        switch transport.code {
        case .address: return 9
        case .unauthenticated: return 3  // refused: the keys do not match
        default: return 5
        }
    case is KVMError: return 8
    case is ProtocolError: return 9
    case is GuestError: return 9
    case is TransparencyFailure: return 11
    default: return 1
    }
}

struct TransparencyFailure: Error, CustomStringConvertible {
    var description: String
}

/// Runs `body`, and on error prints one line and exits with the error's code.
func runReportingErrors(_ body: () throws -> Void) -> Never {
    do {
        try body()
        exit(0)
    } catch {
        Terminal.error("\(error)")
        exit(exitCode(for: error))
    }
}
