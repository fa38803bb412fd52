import FerryMigration
import Foundation
import Glibc
import Synchronization

/// Where `--json` sends a command's report: nowhere, standard output (`--json -`) or a file.
/// A file is checked when the command line is parsed (`OutputOptions.validate()`), before any
/// guest starts or any destination is contacted; with `-`, what is meant for people (the text
/// report, the per-migration lines of `--serve`, a KVM guest's console) goes to stderr instead,
/// so that stdout is the JSON document alone.
enum JSONTarget: Equatable {
    case none
    case standardOutput
    case file(String)

    init(_ option: String?) {
        switch option {
        case nil: self = .none
        case "-": self = .standardOutput
        case let path?: self = .file(path)
        }
    }

    /// Why `path` cannot take the report, or nil: a missing directory, a directory, a path that
    /// cannot be opened for writing. Opening creates nothing that was not there: a file made by
    /// the check is removed again, an existing one is not truncated.
    static func problem(writing path: String) -> String? {
        if path.isEmpty { return "an empty path; give a file, or - for stdout" }
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            return "is a directory; give a file in it (like \(path)/report.json), or - for stdout"
        }
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        if !FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) {
            return "directory \(directory) does not exist; create it first, or give another path"
        }
        if !isDirectory.boolValue { return "\(directory) is not a directory" }
        let existed = FileManager.default.fileExists(atPath: path)
        let descriptor = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        if descriptor < 0 {
            return "cannot be opened for writing (\(String(cString: strerror(errno)))); give a path you may write"
        }
        close(descriptor)
        if !existed { unlink(path) }
        return nil
    }

    /// Writes `report` (one JSON document and a newline). Throws why it could not.
    func write(_ data: Data) throws {
        var bytes = data
        if bytes.last != UInt8(ascii: "\n") { bytes.append(UInt8(ascii: "\n")) }
        switch self {
        case .none: return
        case .standardOutput:
            // Throws (EPIPE) rather than trapping when the reader has gone.
            try FileHandle.standardOutput.write(contentsOf: bytes)
        case .file(let path):
            let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard descriptor >= 0 else { throw ReportWriteError(path: path, call: "open", errno: errno) }
            defer { close(descriptor) }
            var written = 0
            while written < bytes.count {
                let count = bytes.withUnsafeBytes { buffer in
                    Glibc.write(descriptor, buffer.baseAddress! + written, buffer.count - written)
                }
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else { throw ReportWriteError(path: path, call: "write", errno: errno) }
                written += count
            }
        }
    }

    /// Writes `data`; a report that cannot be written is a warning, never the command's exit
    /// status (that says how the migration went and where the guest is).
    func writeOrWarn(_ data: () throws -> Data) {
        guard self != .none else { return }
        do {
            try write(try data())
        } catch {
            Terminal.note("warning: the JSON report could not be written: \(error)")
        }
    }

    /// Writes the report of a command that succeeded; see `writeOrWarn`.
    func writeAfterSuccess(_ report: MigrationReport) {
        guard self != .none else { return }
        do {
            try write(try report.json())
        } catch {
            Terminal.note(
                "warning: the migration succeeded, but its JSON report could not be written: \(error); the exit status stays 0"
            )
        }
    }
}

struct ReportWriteError: Error, CustomStringConvertible {
    var path: String
    var call: String
    var errno: Int32
    var description: String { "\(call) \(path): \(String(cString: strerror(errno)))" }
}

extension MigrationReport {
    /// The report with the steps per vCPU at which the guest was stopped on this side.
    func stoppedAt(_ steps: [UInt64]) -> MigrationReport {
        var report = self
        report.vcpuSteps = steps
        return report
    }
}

/// Text for people: stdout, or stderr when `--json -` has stdout.
enum HumanOutput {
    private static let toStandardError = Mutex(false)

    static func route(for target: JSONTarget) {
        toStandardError.withLock { $0 = target == .standardOutput }
    }

    /// Clears a progress line on the terminal first, so the text starts on a line of its own.
    static func print(_ text: String) {
        let line = Data((text + "\n").utf8)
        Terminal.clearProgress()
        if toStandardError.withLock({ $0 }) {
            try? FileHandle.standardError.write(contentsOf: line)
        } else {
            try? FileHandle.standardOutput.write(contentsOf: line)  // like print: a reader that went away is no error
        }
    }
}

/// The report a failing command writes when no engine report exists: what the command knew.
final class ReportDraft {
    /// Filled in by the command as it learns the image, the guest and so on.
    var minimal: MigrationReport
    /// The engine's report as far as it got (`SourceAgent.lastReport`, …), once there is an engine.
    var engineReport: (() -> MigrationReport?)?
    /// The command writes its own JSON document (`ferry receive --serve`), whatever the outcome.
    var writesItsOwnReport = false

    init(role: String) {
        minimal = MigrationReport(role: role, image: "", imageBytes: 0, pageSize: 0, vcpus: 0, workload: "")
        minimal.guestLocation = role == "source" ? .source : .notHere
    }

    /// What the command knows before anything runs.
    func describe(image: String, vcpus: Int, workload: String) {
        minimal.image = image
        minimal.vcpus = vcpus
        minimal.workload = workload
    }

    /// The report of a `ferry run` that ran the guest for `seconds` to `steps` per vCPU.
    func ran(seconds: Double, steps: [UInt64], pageSize: Int) -> MigrationReport {
        var report = minimal
        report.pageSize = pageSize
        report.pagesTotal = pageSize > 0 ? Int(report.imageBytes / UInt64(pageSize)) : 0
        report.outcome = .succeeded
        report.vcpuSteps = steps
        report.runForMs = seconds * 1000
        report.totalMs = seconds * 1000
        report.finishedAt = ReportTimestamp()
        return report
    }

    /// The report after `error` ended the command with `exitCode`.
    func failed(_ error: any Error, exitCode: Int32) -> MigrationReport {
        var report = engineReport?() ?? minimal
        let migration = (error as? MigrationError) ?? (error as? CommandError)?.migration
        report.outcome = migration.map { MigrationOutcome(failure: $0) } ?? Self.outcome(exitCode: exitCode)
        if let migration { report.guestLocation = migration.guest }
        report.error = ReportedError(message: "\(error)", code: Self.codeName(exitCode: exitCode), exitCode: exitCode)
        report.finishedAt = ReportTimestamp()
        return report
    }

    /// The outcome for an exit status (for errors that are not the engine's).
    static func outcome(exitCode: Int32) -> MigrationOutcome {
        switch exitCode {
        case 3: return .refused
        case 4: return .notConverged
        case 10: return .aborted
        case 130, 143: return .cancelled
        default: return .failed
        }
    }

    /// The error's code name for an exit status: one name per exit code in `ferry --help`.
    static func codeName(exitCode: Int32) -> String {
        switch exitCode {
        case 2: return "usage"
        case 3: return MigrationError.Code.refused.name
        case 4: return MigrationError.Code.notConverged.name
        case 5: return MigrationError.Code.transport.name
        case 6: return MigrationError.Code.verification.name
        case 7: return MigrationError.Code.protocolViolation.name
        case 8: return MigrationError.Code.system.name
        case 9: return MigrationError.Code.configuration.name
        case 10: return MigrationError.Code.peerAborted.name
        case 11: return "transparency"
        case 130, 143: return MigrationError.Code.cancelled.name
        default: return "internal"
        }
    }
}

/// Runs a command whose result is a report: `body` returns it on success (the command has
/// printed it for people); on failure the engine's report as far as it got, or the draft's, is
/// marked with the error. Either way it goes to `--json`, then the command exits: 0, or the
/// error's code after one line on stderr.
func runReporting(_ output: OutputOptions, role: String, _ body: (ReportDraft) throws -> MigrationReport?) -> Never {
    let target = output.jsonTarget
    HumanOutput.route(for: target)
    signal(SIGPIPE, SIG_IGN)  // a peer that goes away is an error to report, not a signal
    let draft = ReportDraft(role: role)
    do {
        if let report = try body(draft) {
            var finished = report
            if finished.finishedAt == nil { finished.finishedAt = ReportTimestamp() }
            target.writeAfterSuccess(finished)
        }
        exit(0)
    } catch {
        Terminal.error("\(error)")
        let code = exitCode(for: error)
        if !draft.writesItsOwnReport {
            let report = draft.failed(error, exitCode: code)
            target.writeOrWarn { try report.json() }
        }
        exit(code)
    }
}
