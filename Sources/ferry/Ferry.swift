import ArgumentParser
import FerryMigration
import FerryProtocol
import FerryTransport
import Foundation
import Glibc
import Logging

@main
struct Ferry: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ferry",
        abstract: "Live-migrate a running guest between hosts over TCP, every page verified.",
        discussion: """
            Start `ferry receive` on the destination, then `ferry send` on the source. `ferry demo` runs \
            both on loopback with a generated image and checks the migrated guest against a run that \
            never migrated. Exit codes: 0 success, 2 usage (an unknown option, a value that does not parse or is \
            out of range, options that do not go together, a --json path that cannot be written), 3 refused by the destination, 4 did not \
            converge, 5 connection failed, 6 verification failed, 7 protocol violation, 8 system call \
            failed, 9 bad configuration (also an image another agent holds locked), 10 aborted by the peer, 11 \
            transparency check failed, 130/143 cancelled by SIGINT (Ctrl-C)/SIGTERM (before the handoff: the \
            peer is told, a source's guest is stopped cleanly; after COMMIT the migration completes). With --key-file \
            both sides prove to each other that they hold the same key before anything else; keys that \
            differ, or a key on one side only, are refused (exit 3).
            """,
        version: FerryVersion.description,
        subcommands: [
            ImageCommand.self, DiskCommand.self, SendCommand.self, ReceiveCommand.self, RunCommand.self,
            DemoCommand.self,
            AnnounceCommand.self,
            StatusCommand.self, KeygenCommand.self, VMMCommand.self, AgentCommand.self, HostCommand.self,
            GuestCommand.self, MigrateCommand.self, MigrationCommand.self, ControlCommand.self, CloudCommand.self,
        ])

    /// ArgumentParser's `main`, except that a usage error (an unknown option, a value that does not
    /// parse or is out of range, a failed `validate()`) exits 2 as documented, not 64 (EX_USAGE).
    /// Commands report their own failures and exit in `runReportingErrors`.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            if Self.exitCode(for: error) == .validationFailure {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Glibc.exit(usageExitCode)
            }
            exit(withError: error)
        }
    }

    static let usageExitCode: Int32 = 2
}

/// The version `ferry --version` prints, kept here only.
enum FerryVersion {
    static let release = "0.13.0"
    /// "ferry 0.13.0 (migration protocol 5)".
    static var description: String { "ferry \(release) (migration protocol \(ProtocolLimits.version))" }
}

/// Options every command that migrates or runs a guest shares.
struct OutputOptions: ParsableArguments {
    @Option(
        name: .customLong("json"),
        help: ArgumentHelp(
            "Also write the report as JSON to this file, whatever the outcome (- for stdout: the text report then goes to stderr; keys in docs/json-report.md).",
            valueName: "path"))
    var jsonPath: String?

    var jsonTarget: JSONTarget { JSONTarget(jsonPath) }

    /// A report file that cannot be written is a usage error before anything starts (exit 2),
    /// not a surprise after the migration.
    func validate() throws {
        if case .file(let path) = jsonTarget, let problem = JSONTarget.problem(writing: path) {
            throw ValidationError("--json \(path): \(problem)")
        }
    }

    @Flag(name: .shortAndLong, help: "Log what happens at info level on stderr.")
    var verbose = false

    @Flag(help: "Log per-event detail (debug level) on stderr.")
    var debug = false

    @Flag(name: .shortAndLong, help: "No progress line.")
    var quiet = false

    func makeLogger(_ label: String) -> Logger {
        let level: Logger.Level = debug ? .debug : (verbose ? .info : .warning)
        LoggingBootstrap.once(level: level)
        return Logger(label: label)
    }
}

enum LoggingBootstrap {
    nonisolated(unsafe) private static var done = false

    static func once(level: Logger.Level) {
        guard !done else { return }
        done = true
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}

/// Checks an option's value with `parse` in a `validate()`: what it throws becomes a usage
/// error (exit 2) naming the option and the value.
func usageCheck(_ option: String, _ value: String, _ parse: (String) throws -> Void) throws {
    do {
        try parse(value)
    } catch let error as TransportError {
        throw ValidationError("\(option) \(error.message)")  // the message quotes the value
    } catch let error as ProtocolError {
        throw ValidationError("\(option) \(error.message)")
    } catch {
        throw ValidationError("\(option) \(value): \(error)")
    }
}
