import FerryMigration

/// A command's own failure before any guest ran or any migration began: a bad setting, a missing
/// file, a key that cannot be written. Its line names the problem and the fix and carries no
/// "where the guest is" trailer, which belongs to migrations (`MigrationError`).
struct CommandError: Error, CustomStringConvertible {
    var description: String
    var exitCode: Int32
    /// The migration's failure this one retells, if any (its outcome and the guest's place for
    /// the JSON report).
    var migration: MigrationError? = nil

    /// Bad configuration (exit 9).
    static func configuration(_ message: String) -> CommandError {
        CommandError(description: message, exitCode: 9)
    }

    /// A system call failed (exit 8).
    static func system(_ message: String) -> CommandError {
        CommandError(description: message, exitCode: 8)
    }

    /// A migration's failure with the guest's whereabouts said by the command, which knows more
    /// than the library: the exit code stays the migration's.
    static func failed(_ error: MigrationError, where location: String) -> CommandError {
        CommandError(
            description: "\(error.message) (\(location))", exitCode: migrationExitCode(error), migration: error)
    }
}

/// `exitCode(for:)` under a name that no command's or error's member shadows.
private func migrationExitCode(_ error: MigrationError) -> Int32 { exitCode(for: error) }
