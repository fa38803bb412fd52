import Glibc

/// A failed system call or an unusable system facility. `description` names the call, its
/// argument, the errno (by name) and, where there is one, the fix, e.g.
/// `mprotect(0x7f1200000000, 4096): ENOMEM (Cannot allocate memory)`.
public struct SystemError: Error, CustomStringConvertible, Sendable {
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
    }

    public var code: Code
    /// The call with its arguments, e.g. `open("/dev/shm/guest.img")`.
    public var call: String
    /// The errno value, 0 when the error is not from a system call.
    public var errno: Int32
    /// What went wrong and what to do about it, for people.
    public var detail: String

    public init(code: Code = .syscall, call: String, errno: Int32, detail: String = "") {
        self.code = code
        self.call = call
        self.errno = errno
        self.detail = detail
    }

    /// The error of a system call that just failed with `errno`.
    static func lastError(_ call: String, detail: String = "") -> SystemError {
        SystemError(call: call, errno: Glibc.errno, detail: detail)
    }

    public var description: String {
        var text = call
        if errno != 0 { text += ": \(errnoName(errno)) (\(errnoMessage(errno)))" }
        if !detail.isEmpty { text += errno != 0 ? " - \(detail)" : ": \(detail)" }
        return text
    }
}

/// The symbolic name of an errno value ("EINVAL"), or "errno N" for rare ones. Shared by every
/// module that reports a failed system call.
public func errnoName(_ value: Int32) -> String {
    switch value {
    case EPERM: "EPERM"
    case ENOENT: "ENOENT"
    case EINTR: "EINTR"
    case EIO: "EIO"
    case EBADF: "EBADF"
    case EAGAIN: "EAGAIN"
    case ENOMEM: "ENOMEM"
    case EACCES: "EACCES"
    case EFAULT: "EFAULT"
    case EBUSY: "EBUSY"
    case EEXIST: "EEXIST"
    case EXDEV: "EXDEV"
    case ENODEV: "ENODEV"
    case ENOTDIR: "ENOTDIR"
    case EISDIR: "EISDIR"
    case EINVAL: "EINVAL"
    case ENFILE: "ENFILE"
    case EMFILE: "EMFILE"
    case ENOTTY: "ENOTTY"
    case EFBIG: "EFBIG"
    case ENOSPC: "ENOSPC"
    case EROFS: "EROFS"
    case ERANGE: "ERANGE"
    case ENAMETOOLONG: "ENAMETOOLONG"
    case ENOSYS: "ENOSYS"
    case ENOTEMPTY: "ENOTEMPTY"
    case ELOOP: "ELOOP"
    case EOVERFLOW: "EOVERFLOW"
    case EOPNOTSUPP: "EOPNOTSUPP"
    case ETXTBSY: "ETXTBSY"
    case EDQUOT: "EDQUOT"
    case ENXIO: "ENXIO"
    case EPIPE: "EPIPE"
    case ENOTSOCK: "ENOTSOCK"
    case EMSGSIZE: "EMSGSIZE"
    case EPROTONOSUPPORT: "EPROTONOSUPPORT"
    case EAFNOSUPPORT: "EAFNOSUPPORT"
    case EADDRINUSE: "EADDRINUSE"
    case EADDRNOTAVAIL: "EADDRNOTAVAIL"
    case ENETDOWN: "ENETDOWN"
    case ENETUNREACH: "ENETUNREACH"
    case ECONNABORTED: "ECONNABORTED"
    case ECONNRESET: "ECONNRESET"
    case ENOBUFS: "ENOBUFS"
    case ENOTCONN: "ENOTCONN"
    case ETIMEDOUT: "ETIMEDOUT"
    case ECONNREFUSED: "ECONNREFUSED"
    case EHOSTDOWN: "EHOSTDOWN"
    case EHOSTUNREACH: "EHOSTUNREACH"
    case EINPROGRESS: "EINPROGRESS"
    default: "errno \(value)"
    }
}

/// `ECONNREFUSED (Connection refused)`.
public func errnoDescription(_ value: Int32) -> String {
    "\(errnoName(value)) (\(errnoMessage(value)))"
}

/// strerror text, via the thread-safe (XSI) strerror_r.
public func errnoMessage(_ value: Int32) -> String {
    withUnsafeTemporaryAllocation(of: CChar.self, capacity: 128) { buffer in
        guard strerror_r(value, buffer.baseAddress!, buffer.count) == 0 else { return "unknown error" }
        return String(cString: buffer.baseAddress!)
    }
}

/// Runs a call returning -1/errno, retrying on EINTR; throws SystemError naming `call`.
@discardableResult
func retryingEINTR<T: BinaryInteger>(_ call: @autoclosure () -> String, _ body: () -> T) throws -> T {
    while true {
        let result = body()
        if result != -1 { return result }
        let error = Glibc.errno
        if error == EINTR { continue }
        throw SystemError(call: call(), errno: error)
    }
}

/// Formats an address the way error messages show it (0x7f12...).
func hexAddress(_ pointer: UnsafeRawPointer) -> String {
    "0x" + String(UInt(bitPattern: pointer), radix: 16)
}
