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
        /// A system call failed.
        case system
    }

    public var code: Code
    public var message: String
    /// errno of a failed system call, 0 otherwise.
    public var errno: Int32

    public init(_ code: Code, _ message: String, errno: Int32 = 0) {
        self.code = code
        self.message = message
        self.errno = errno
    }

    public var description: String { message }

    /// `call: ENAME (strerror)`, optionally followed by a hint on how to fix it.
    static func system(_ call: String, errno err: Int32, hint: String? = nil) -> GuestError {
        var text = "\(call): \(errnoName(err)) (\(String(cString: strerror(err))))"
        if let hint { text += "; \(hint)" }
        return GuestError(.system, text, errno: err)
    }
}

