import FerryVMM

/// Why the agent's migration machinery could not do what it was asked: a code the routes map to
/// an HTTP status, a message that names the problem and the fix, and the cause kept as a value.
public struct MigrationDriverError: Error, @unchecked Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        /// The guest's `ferry vmm` does not answer (its process is gone): 409, the guest is not running.
        case vmmUnreachable = "vmm_unreachable"
        /// The vmm refused (`wrong_state`: not running; `bad_request`: an option): 409 or 422.
        case refused
        /// The migration already ended (cancel after the outcome): 409.
        case ended
        /// A cancel after the source passed its last point of cancel (COMMIT is written): 409
        /// `too_late`; the migration completes, or its handoff is resolved.
        case tooLate = "too_late"
        /// A process could not be started or did not become ready: 500.
        case spawn
    }

    public var code: Code
    public var message: String
    public var cause: (any Error)?

    public init(_ code: Code, _ message: String, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    /// A control-socket failure, named after what was being done.
    static func vmm(_ error: VMMError, doing what: String) -> MigrationDriverError {
        switch error.code {
        case .refused: MigrationDriverError(.refused, "\(what): \(error.message)", cause: error)
        default: MigrationDriverError(.vmmUnreachable, "\(what): \(error.message)", cause: error)
        }
    }

    public var description: String { message }
}
