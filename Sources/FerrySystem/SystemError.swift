import Glibc

/// A failed system call or an unusable system facility: FerrySystem's one error, and the error
/// of `valueOrErrno`, which every module's system calls go through (their own errors keep it as
/// their `cause`). `description` names the call, its argument, the errno (by name) and, where
/// there is one, the fix, e.g. `mprotect(0x7f1200000000, 4096): ENOMEM (Cannot allocate memory)`.
public struct SystemError: Error, CustomStringConvertible, Hashable, Sendable {
    public enum Code: String, Sendable {
        /// A system call failed; `errno` says how.
        case syscall
        /// The kernel or the memory type cannot do what was asked (e.g. no PAGEMAP_SCAN).
        case unsupported
        /// The caller passed something unusable (unaligned range, empty file, ...).
        case invalidArgument
        /// The facility is in use (e.g. a second mprotect tracker in the same process).
        case busy
        /// A system file (e.g. /proc/meminfo) did not have the expected content.
        case unexpectedContent
        /// Another agent holds the file's lock (`ImageLock`); `detail` names the holder.
        case locked
    }

    public var code: Code
    /// The call with its arguments, e.g. `open("/dev/shm/guest.img")`.
    public var call: String
    /// What the call said, nil when the error is not from a system call.
    public var errno: Errno?
    /// What went wrong and what to do about it, for people.
    public var detail: String

    public init(code: Code = .syscall, call: String, errno: Errno?, detail: String = "") {
        self.code = code
        self.call = call
        self.errno = errno
        self.detail = detail
    }

    /// The error of the libc call `call` that just failed with `errno` (use it right after the
    /// call, for calls whose result `valueOrErrno` cannot check, e.g. mmap's MAP_FAILED).
    public static func lastError(_ call: String, detail: String = "") -> SystemError {
        SystemError(call: call, errno: .current, detail: detail)
    }

    public var description: String {
        var text = call
        if let errno { text += ": \(errno)" }
        if !detail.isEmpty { text += errno != nil ? " - \(detail)" : ": \(detail)" }
        return text
    }
}

/// How a C function reports failure.
public enum FailureConvention: Sendable {
    /// libc's (and the kernel's system call wrappers'): -1, with the code in `errno`.
    case minusOneAndErrno
    /// Ferry's C shims' (CFerryShims, CKVM): the code negated as the result, `errno` unused.
    case negatedErrno
}

/// Runs a system call (`body`) and returns its non-failing result; on failure throws a
/// `SystemError` naming `call` and the errno. EINTR is retried unless `retryOnInterrupt` is false
/// (then it is thrown like any other code, for calls whose interruption means something).
///
/// The one way Ferry's Swift code calls into the system. Inlined and allocation-free: `call` is
/// only evaluated, and the message only built, when the call has failed.
@inlinable @inline(__always) @discardableResult
public func valueOrErrno<Value: FixedWidthInteger & SignedInteger>(
    _ call: @autoclosure () -> String,
    _ convention: FailureConvention = .minusOneAndErrno,
    retryOnInterrupt: Bool = true,
    _ body: () -> Value
) throws(SystemError) -> Value {
    while true {
        let result = body()
        let code: Errno
        switch convention {
        case .minusOneAndErrno:
            if result != -1 { return result }
            code = .current
        case .negatedErrno:
            if result >= 0 { return result }
            code = Errno(Int32(truncatingIfNeeded: -result))
        }
        if retryOnInterrupt && code == .interrupted { continue }
        throw SystemError(call: call(), errno: code)
    }
}

/// Formats an address the way error messages show it (0x7f12...).
func hexAddress(_ pointer: UnsafeRawPointer) -> String {
    "0x" + String(UInt(bitPattern: pointer), radix: 16)
}
