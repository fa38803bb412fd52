import FerrySystem
import Glibc

/// A Unix stream socket's path as `sockaddr_un` wants it: at most 107 bytes (sun_path holds 108
/// with its terminating NUL). A `ferry vmm` names its socket `STATE_DIR/GUEST_ID.sock` (32 hex
/// digits + 5), so a state directory of up to 70 bytes always fits.
public enum UnixSocketPath {
    public static let maxBytes = 107

    /// `sockaddr_un` for `path`, or an error naming the limit and the fix.
    static func address(_ path: String) throws(VMMError) -> sockaddr_un {
        let bytes = Array(path.utf8)
        guard bytes.count <= maxBytes, !bytes.isEmpty else {
            throw VMMError(
                .configuration,
                "the control socket path \(path) is \(bytes.count) bytes; a Unix socket path holds at most \(maxBytes): use a shorter --state-dir"
            )
        }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.enumerated() { raw[index] = byte }
            raw[bytes.count] = 0
        }
        return address
    }

    static func withAddress<T>(
        _ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> T
    ) throws(VMMError) -> T {
        var address = try address(path)
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                body($0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
    }
}

/// One connected Unix stream socket carrying newline-delimited text (the control protocol).
/// Reads are bounded: a line longer than `maxLineBytes` is refused, not buffered.
public final class UnixLineConnection: @unchecked Sendable {
    public let fd: Int32
    private var buffer: [UInt8] = []
    private let writeLock = MonotonicCondition()

    init(fd: Int32) { self.fd = fd }

    deinit { close(fd) }

    /// Connects to `path`. A refused connection (nothing listens: the file is stale) and a missing
    /// file are `.stale` with a message that says so.
    public static func connect(path: String) throws(VMMError) -> UnixLineConnection {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw VMMError.system("socket(AF_UNIX)", "connecting to \(path)") }
        let result = try UnixSocketPath.withAddress(path) { Glibc.connect(fd, $0, $1) }
        if result != 0 {
            let errno = Errno.current
            close(fd)
            if errno.rawValue == ECONNREFUSED || errno.rawValue == ENOENT {
                throw VMMError(
                    .stale,
                    "nothing listens on the control socket \(path) (\(errno)): its ferry vmm process is gone; a new ferry vmm for this guest replaces the file",
                    cause: SystemError(call: "connect", errno: errno))
            }
            throw VMMError(
                .system, "connect to the control socket \(path) failed with \(errno)",
                cause: SystemError(call: "connect", errno: errno))
        }
        return UnixLineConnection(fd: fd)
    }

    public enum LineResult: Equatable {
        case line(String)
        /// More than `maxLineBytes` before a newline: the rest of the connection is not read.
        case tooLong
        case closed
    }

    /// The next line (without its newline); `.closed` at end of stream or on an error.
    public func readLine(maxLineBytes: Int) -> LineResult {
        while true {
            if let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                if newline > maxLineBytes { return .tooLong }
                let line = String(decoding: buffer[..<newline], as: UTF8.self)
                buffer.removeSubrange(...newline)
                return .line(line)
            }
            if buffer.count > maxLineBytes { return .tooLong }
            var chunk = [UInt8](repeating: 0, count: 16 << 10)
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 && Errno.current.rawValue == EINTR { continue }
            guard count > 0 else { return .closed }
            buffer.append(contentsOf: chunk[..<count])
        }
    }

    /// Writes `line` and a newline, whole; false when the peer is gone (no SIGPIPE: MSG_NOSIGNAL).
    @discardableResult
    public func writeLine(_ line: String) -> Bool {
        var bytes = Array(line.utf8)
        bytes.append(UInt8(ascii: "\n"))
        return writeLock.withLock {
            var offset = 0
            while offset < bytes.count {
                let sent = bytes.withUnsafeBytes {
                    send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL))
                }
                if sent < 0 && Errno.current.rawValue == EINTR { continue }
                guard sent > 0 else { return false }
                offset += sent
            }
            return true
        }
    }

    /// Ends both directions (a reader blocked in `readLine` returns `.closed`).
    public func shutdownBoth() { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }

    /// Bounds how long `readLine` waits (0: for ever).
    public func setReceiveTimeout(seconds: Double) {
        var value = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - Double(Int(seconds))) * 1e6))
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
    }
}

/// A listening Unix stream socket at a path, mode 0600. A file left there by a process that died
/// (connect refused) is replaced; one a live process serves is not.
final class UnixListener: @unchecked Sendable {
    let fd: Int32
    let path: String

    init(path: String) throws(VMMError) {
        self.path = path
        try Self.removeIfStale(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw VMMError.system("socket(AF_UNIX)", "listening on \(path)") }
        // umask so the file is created 0600 (no window in which others could connect).
        let previous = umask(0o177)
        let bound = try UnixSocketPath.withAddress(path) { bind(fd, $0, $1) }
        umask(previous)
        guard bound == 0, listen(fd, 64) == 0 else {
            let error = VMMError.system("bind/listen", "the control socket \(path)")
            Glibc.close(fd)
            throw error
        }
        chmod(path, 0o600)
        self.fd = fd
    }

    /// A socket file nobody listens on is removed; one somebody answers on is an error.
    static func removeIfStale(_ path: String) throws(VMMError) {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        guard info.st_mode & S_IFMT == S_IFSOCK else {
            throw VMMError(
                .socketInUse, "\(path) exists and is not a socket; move it away or use another --state-dir")
        }
        do {
            _ = try UnixLineConnection.connect(path: path)
        } catch  where error.code == .stale {
            unlink(path)
            return
        }
        throw VMMError(
            .socketInUse,
            "a live ferry vmm already serves \(path); ask it with hello, or stop it (shutdown/kill) before starting another for this guest"
        )
    }

    /// The next client; nil once the listener is closed.
    func accept() -> UnixLineConnection? {
        while true {
            let client = Glibc.accept(fd, nil, nil)
            if client >= 0 {
                _ = fcntl(client, F_SETFD, FD_CLOEXEC)
                return UnixLineConnection(fd: client)
            }
            let errno = Errno.current.rawValue
            if errno == EINTR || errno == ECONNABORTED { continue }
            return nil
        }
    }

    /// Stops accepting and removes the file (only if it is still this socket's).
    func close() {
        _ = Glibc.shutdown(fd, Int32(SHUT_RDWR))
        unlink(path)
    }
}
