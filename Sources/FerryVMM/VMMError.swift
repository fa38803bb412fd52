import FerrySystem

/// What went wrong in a `ferry vmm` process or in talking to one: a code to match on, a message
/// that names the problem and the fix, and the cause kept as a value.
public struct VMMError: Error, @unchecked Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        /// A specification, option or file that cannot be used (exit 2 from the CLI).
        case configuration
        /// The control socket's path is in use by a live `ferry vmm`, or cannot be bound.
        case socketInUse = "socket_in_use"
        /// Nothing listens on the control socket any more: the process died (a stale file).
        case stale
        /// The control connection broke (the process exited or was killed mid-request).
        case disconnected
        /// The process answered with an error (the response's `error.code` is in the message).
        case refused
        /// A system call failed.
        case system
        /// The guest could not be built or run.
        case guest
    }

    public var code: Code
    public var message: String
    /// The error underneath, if any (a `SystemError`, `KVMError`, `MigrationError` …).
    public var cause: (any Error)?

    public init(_ code: Code, _ message: String, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    static func system(_ call: String, _ what: String) -> VMMError {
        let errno = Errno.current
        return VMMError(.system, "\(what): \(call) failed with \(errno)", cause: SystemError(call: call, errno: errno))
    }

    public var description: String { message }
}
