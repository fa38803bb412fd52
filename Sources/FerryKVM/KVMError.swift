import CKVM
import FerrySystem
import Glibc

/// A failure of the KVM guest or its VMM. `description` names the problem and the fix; `cause`
/// is the failed system call behind it, if one is (its errno as a value).
public struct KVMError: Error, CustomStringConvertible, Sendable {
    public enum Code: String, Sendable {
        /// /dev/kvm does not open or lacks a capability Ferry needs.
        case unavailable
        /// A KVM ioctl or other system call failed.
        case syscall
        /// The caller passed something unusable (memory too small, too many vCPUs, ...).
        case invalidConfiguration
        /// The guest stopped in a way it never should (triple fault, entry failure, unknown register).
        case guestFailed
        /// A vCPU state record is malformed or does not fit this VMM.
        case invalidState
    }

    public var code: Code
    public var message: String
    /// The system call that failed, set when one did (from `valueOrErrno`).
    public var cause: SystemError?

    public init(_ code: Code, _ message: String, cause: SystemError? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    /// The failed call as the message (`ioctl(KVM_CREATE_VM): ENOMEM (Cannot allocate memory)`),
    /// followed by `detail` when there is one.
    init(_ code: Code, failed failure: SystemError, detail: String = "") {
        self.init(code, detail.isEmpty ? failure.description : "\(failure.description) - \(detail)", cause: failure)
    }

    public var description: String { "kvm: \(message)" }
}

/// Runs a CKVM call (a non-negative result or -errno) through `valueOrErrno`, retrying EINTR;
/// a failure is a `.syscall` KVMError naming `call`, with the call's error as the cause.
@inline(__always) @discardableResult
func kvmCall(_ call: @autoclosure () -> String, _ body: () -> Int32) throws(KVMError) -> Int32 {
    do throws(SystemError) {
        return try valueOrErrno(call(), .negatedErrno, retryOnInterrupt: true, body)
    } catch {
        throw KVMError(.syscall, failed: error)
    }
}
