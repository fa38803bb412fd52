import CKVM
import FerrySystem
import Glibc

/// A failure of the KVM guest or its VMM. `description` names the problem and the fix.
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

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "kvm: \(message)" }
}

/// Runs a CKVM call returning a non-negative result or -errno, retrying EINTR; throws
/// `.syscall` naming `call`.
@discardableResult
func kvmCall(_ call: @autoclosure () -> String, _ body: () -> Int32) throws(KVMError) -> Int32 {
    while true {
        let result = body()
        if result >= 0 { return result }
        if result == -EINTR { continue }
        throw KVMError(.syscall, "\(call()): \(errnoDescription(-result))")
    }
}
