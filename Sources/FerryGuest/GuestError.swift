import FerrySystem
import Glibc

/// Why a guest-side request could not be carried out: a malformed size, rate, mix, workload or
/// trace, an impossible configuration, or a failed system call. The message names the offending
/// text and the expected form (or the fix).
public struct GuestError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        /// A byte size (`--size`) is malformed or not a multiple of the page size.
        case invalidSize
        /// A rate (`200MB/s`) is malformed.
        case invalidRate
        /// A page-class mix (`zero=35,...`) is malformed.
        case invalidMix
        /// A workload spec (`uniform:200MB/s`) is malformed.
        case invalidWorkload
        /// A dirty-page trace file is malformed.
        case invalidTrace
        /// A guest configuration cannot run (vCPU count, page size, missing trace, ...).
        case invalidConfiguration
        /// A disk is too small, not a Ferry journal, or its journal cannot be continued.
        case invalidDisk
        /// A system call failed.
        case system
    }

    public var code: Code
    public var message: String
    /// The system call that failed, set for `.system` (from `valueOrErrno`).
    public var cause: SystemError?

    public init(_ code: Code, _ message: String, cause: SystemError? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    /// What the failed system call said, nil when no call failed.
    public var errno: Errno? { cause?.errno }

    public var description: String { message }

    /// `call: ENAME (strerror)`, optionally followed by a hint on how to fix it.
    static func system(_ failure: SystemError, hint: String? = nil) -> GuestError {
        var text = failure.description
        if let hint { text += "; \(hint)" }
        return GuestError(.system, text, cause: failure)
    }
}

/// Runs a system call through `valueOrErrno` (retrying EINTR); a failure is a `.system`
/// GuestError naming the call and errno, with `hint` (given the errno) appended when it has one.
@inline(__always) @discardableResult
func systemCall<Value: FixedWidthInteger & SignedInteger>(
    _ call: @autoclosure () -> String,
    hint: (Errno) -> String? = { _ in nil },
    _ body: () -> Value
) throws(GuestError) -> Value {
    do throws(SystemError) {
        return try valueOrErrno(call(), .minusOneAndErrno, retryOnInterrupt: true, body)
    } catch {
        throw GuestError.system(error, hint: error.errno.flatMap(hint))
    }
}
