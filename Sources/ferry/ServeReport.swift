import FerryMigration
import Foundation
import Synchronization

/// `ferry receive --serve --json`: one document for the agent, holding every migration's report
/// (successes and failures, in the order they ended). A file is rewritten after each migration
/// ends, so that an agent that runs until stopped always leaves a current one; with `-` the
/// document goes to stdout once, when the agent ends. It holds the most recent `kept` reports (an
/// agent that runs for ever must not grow for ever; `earlier_migrations` counts the others), and
/// none without `--json`.
final class ServeDocument: Sendable {
    static let kept = 256

    struct Document: Codable {
        var schemaVersion = MigrationReport.currentSchemaVersion
        var role = "server"
        var outcome = MigrationOutcome.running
        var directory: String
        var startedAt = ReportTimestamp()
        var finishedAt: ReportTimestamp?
        var error: ReportedError?
        var migrations: [MigrationReport] = []
        /// Migrations that ended before the ones in `migrations` (beyond `kept`).
        var earlierMigrations = 0

        enum CodingKeys: String, CodingKey {
            case role, outcome, directory, error, migrations
            case earlierMigrations = "earlier_migrations"
            case schemaVersion = "schema_version"
            case startedAt = "started_at"
            case finishedAt = "finished_at"
        }
    }

    private let state: Mutex<Document>
    private let target: JSONTarget

    init(directory: String, target: JSONTarget) {
        state = Mutex(Document(directory: directory))
        self.target = target
    }

    /// A migration ended (on its own thread); `exitCode` is what a one-shot `ferry receive` would
    /// have exited with (0: it succeeded).
    func add(_ report: MigrationReport, exitCode: Int32) {
        guard target != .none else { return }
        state.withLock { document in
            var entry = report
            if var error = entry.error, exitCode != 0 {
                error.exitCode = exitCode
                entry.error = error
            }
            document.migrations.append(entry)
            if document.migrations.count > Self.kept {
                document.migrations.removeFirst()
                document.earlierMigrations += 1
            }
            if case .file = target { write(document) }
        }
    }

    /// The agent ends: after `--sessions` migrations (`failure` nil, or the first migration's
    /// error), or because it could not serve.
    func finish(failure: (any Error)?, exitCode: Int32) {
        state.withLock { document in
            document.finishedAt = ReportTimestamp()
            if let failure {
                document.outcome = ReportDraft.outcome(exitCode: exitCode)
                document.error = ReportedError(
                    message: "\(failure)", code: ReportDraft.codeName(exitCode: exitCode), exitCode: exitCode)
            } else {
                document.outcome = .succeeded
            }
            write(document)
        }
    }

    private func write(_ document: Document) {
        target.writeOrWarn { try MigrationReport.json(document) }
    }
}

extension Result where Failure == MigrationError {
    /// The exit code a failure maps to; 0 for a success.
    var failureExitCode: Int32 {
        if case .failure(let error) = self { return exitCode(for: error) }
        return 0
    }
}
