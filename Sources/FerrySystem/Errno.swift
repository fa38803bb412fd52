import Glibc

/// An errno code as a value: what a failed system call said, kept with the error that reports it
/// so callers match on it (`error.errno == .wouldBlock`) instead of on text.
///
/// `description` names it the way every Ferry error message does, `EINTR (Interrupted system
/// call)`: the symbolic name, then the C library's text for it.
public struct Errno: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32

    @inlinable
    public init(rawValue: Int32) { self.rawValue = rawValue }

    @inlinable
    public init(_ rawValue: Int32) { self.rawValue = rawValue }

    /// The calling thread's `errno` now: read it right after the call that failed.
    @inlinable
    public static var current: Errno { Errno(Glibc.errno) }

    /// `EINTR (Interrupted system call)`.
    public var description: String { "\(name) (\(message))" }

    /// The C library's text for the code (`strerror`, through the thread-safe XSI `strerror_r`).
    public var message: String {
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: 128) { buffer in
            guard strerror_r(rawValue, buffer.baseAddress!, buffer.count) == 0 else { return "unknown error" }
            return String(cString: buffer.baseAddress!)
        }
    }

    /// The symbolic name (`EINVAL`), or `errno N` for a code not listed here.
    public var name: String { Self.names[rawValue] ?? "errno \(rawValue)" }

    private static let names: [Int32: String] = [
        EPERM: "EPERM", ENOENT: "ENOENT", ESRCH: "ESRCH", EINTR: "EINTR", EIO: "EIO", ENXIO: "ENXIO",
        E2BIG: "E2BIG", EBADF: "EBADF", ECHILD: "ECHILD", EAGAIN: "EAGAIN", ENOMEM: "ENOMEM",
        EACCES: "EACCES", EFAULT: "EFAULT", EBUSY: "EBUSY", EEXIST: "EEXIST", EXDEV: "EXDEV",
        ENODEV: "ENODEV", ENOTDIR: "ENOTDIR", EISDIR: "EISDIR", EINVAL: "EINVAL", ENFILE: "ENFILE",
        EMFILE: "EMFILE", ENOTTY: "ENOTTY", ETXTBSY: "ETXTBSY", EFBIG: "EFBIG", ENOSPC: "ENOSPC",
        ESPIPE: "ESPIPE", EROFS: "EROFS", EPIPE: "EPIPE", ERANGE: "ERANGE", EDEADLK: "EDEADLK",
        ENAMETOOLONG: "ENAMETOOLONG", ENOSYS: "ENOSYS", ENOTEMPTY: "ENOTEMPTY", ELOOP: "ELOOP",
        EOVERFLOW: "EOVERFLOW", EPROTO: "EPROTO", ENOTSOCK: "ENOTSOCK", EMSGSIZE: "EMSGSIZE",
        EPROTONOSUPPORT: "EPROTONOSUPPORT", EOPNOTSUPP: "EOPNOTSUPP", EAFNOSUPPORT: "EAFNOSUPPORT",
        EADDRINUSE: "EADDRINUSE", EADDRNOTAVAIL: "EADDRNOTAVAIL", ENETDOWN: "ENETDOWN",
        ENETUNREACH: "ENETUNREACH", ECONNABORTED: "ECONNABORTED", ECONNRESET: "ECONNRESET",
        ENOBUFS: "ENOBUFS", ENOTCONN: "ENOTCONN", ETIMEDOUT: "ETIMEDOUT", ECONNREFUSED: "ECONNREFUSED",
        EHOSTDOWN: "EHOSTDOWN", EHOSTUNREACH: "EHOSTUNREACH", EALREADY: "EALREADY",
        EINPROGRESS: "EINPROGRESS", EDQUOT: "EDQUOT", ENOLCK: "ENOLCK",
    ]
}

// The codes Ferry looks at. Computed, so that a comparison in inlined code is a constant.
extension Errno {
    @inlinable public static var notPermitted: Errno { Errno(EPERM) }
    @inlinable public static var noSuchFileOrDirectory: Errno { Errno(ENOENT) }
    @inlinable public static var interrupted: Errno { Errno(EINTR) }
    @inlinable public static var noSuchDeviceOrAddress: Errno { Errno(ENXIO) }
    @inlinable public static var argumentListTooLong: Errno { Errno(E2BIG) }
    /// EAGAIN (= EWOULDBLOCK): a non-blocking call found nothing to do, or a socket timeout ran out.
    @inlinable public static var wouldBlock: Errno { Errno(EAGAIN) }
    @inlinable public static var noMemory: Errno { Errno(ENOMEM) }
    @inlinable public static var permissionDenied: Errno { Errno(EACCES) }
    @inlinable public static var busy: Errno { Errno(EBUSY) }
    @inlinable public static var fileExists: Errno { Errno(EEXIST) }
    @inlinable public static var invalidArgument: Errno { Errno(EINVAL) }
    @inlinable public static var tooManyOpenFilesInSystem: Errno { Errno(ENFILE) }
    @inlinable public static var tooManyOpenFiles: Errno { Errno(EMFILE) }
    @inlinable public static var notATerminal: Errno { Errno(ENOTTY) }
    @inlinable public static var fileTooLarge: Errno { Errno(EFBIG) }
    @inlinable public static var noSpace: Errno { Errno(ENOSPC) }
    @inlinable public static var brokenPipe: Errno { Errno(EPIPE) }
    @inlinable public static var notImplemented: Errno { Errno(ENOSYS) }
    @inlinable public static var protocolError: Errno { Errno(EPROTO) }
    @inlinable public static var addressInUse: Errno { Errno(EADDRINUSE) }
    @inlinable public static var addressNotAvailable: Errno { Errno(EADDRNOTAVAIL) }
    @inlinable public static var networkDown: Errno { Errno(ENETDOWN) }
    @inlinable public static var networkUnreachable: Errno { Errno(ENETUNREACH) }
    @inlinable public static var connectionAborted: Errno { Errno(ECONNABORTED) }
    @inlinable public static var connectionReset: Errno { Errno(ECONNRESET) }
    @inlinable public static var timedOut: Errno { Errno(ETIMEDOUT) }
    @inlinable public static var connectionRefused: Errno { Errno(ECONNREFUSED) }
    @inlinable public static var hostUnreachable: Errno { Errno(EHOSTUNREACH) }
    @inlinable public static var inProgress: Errno { Errno(EINPROGRESS) }
}
