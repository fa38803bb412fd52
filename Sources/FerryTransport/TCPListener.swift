import FerrySystem
import Glibc
import Synchronization

/// A listening TCP socket.
///
/// `@unchecked Sendable`: the descriptor is immutable; `close()` from another thread shuts the
/// socket down, which wakes a thread waiting in `accept`, and the descriptor is released in
/// `deinit`, so it is never reused under a waiting thread.
public final class TCPListener: @unchecked Sendable {
    private let fd: Int32
    private let closed = Atomic<Bool>(false)
    /// The port actually bound (the kernel's choice when the endpoint asked for port 0).
    public let port: UInt16
    /// The bound address, e.g. `0.0.0.0:7700`.
    public let localDescription: String

    public init(_ endpoint: Endpoint, backlog: Int32 = 8) throws(TransportError) {
        let addresses = try SocketAddress.resolve(endpoint, passive: true)
        let address = addresses[0]
        let fd = socket(address.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else {
            throw TransportError(.listen, "socket() to listen on \(endpoint): \(errnoDescription(errno))")
        }
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        if address.withSockaddr({ bind(fd, $0, $1) }) != 0 {
            let code = errno
            Glibc.close(fd)
            let hint: String
            switch code {
            case EADDRINUSE: hint = "; another process listens on that port: pick another port or stop it"
            case EADDRNOTAVAIL: hint = "; that address does not belong to this host"
            case EACCES: hint = "; ports below 1024 need root"
            default: hint = ""
            }
            throw TransportError(.listen, "bind to \(address): \(errnoDescription(code))\(hint)")
        }
        if listen(fd, backlog) != 0 {
            let code = errno
            Glibc.close(fd)
            throw TransportError(.listen, "listen on \(address): \(errnoDescription(code))")
        }
        let bound = SocketAddress.of(fd, peer: false) ?? address
        self.fd = fd
        self.port = bound.port
        self.localDescription = bound.description
    }

    deinit {
        Glibc.close(fd)
    }

    /// Waits up to `timeoutMs` (nil: forever) for a connection and returns it as a blocking stream.
    public func accept(timeoutMs: Int?) throws(TransportError) -> TCPStream {
        let deadline = timeoutMs.map { MonotonicClock.milliseconds() + max(0, $0) }
        while true {
            if closed.load(ordering: .relaxed) {
                throw TransportError(.accept, "listener on \(localDescription) was closed")
            }
            let left = deadline.map { max(0, $0 - MonotonicClock.milliseconds()) }
            let waited = pollReady(fd, events: Int16(POLLIN), timeoutMs: left)
            if waited.errno != 0 {
                throw TransportError(.accept, "poll on listener \(localDescription): \(errnoDescription(waited.errno))")
            }
            guard waited.ready else {
                throw TransportError(.timeout, "no connection arrived on \(localDescription) within \(timeoutMs ?? 0) ms")
            }
            if closed.load(ordering: .relaxed) {
                throw TransportError(.accept, "listener on \(localDescription) was closed")
            }
            // The listening socket is non-blocking, so a connection that vanished between poll
            // and accept cannot block us; Linux does not pass O_NONBLOCK on to the new socket.
            let client = Glibc.accept(fd, nil, nil)
            if client >= 0 {
                _ = fcntl(client, F_SETFD, FD_CLOEXEC)
                return TCPStream(adopting: client)
            }
            let code = errno
            switch code {
            case EINTR, EAGAIN, ECONNABORTED, EPROTO:
                continue
            case EINVAL where closed.load(ordering: .relaxed):
                throw TransportError(.accept, "listener on \(localDescription) was closed")
            case EMFILE, ENFILE:
                throw TransportError(.accept, "accept on \(localDescription): \(errnoDescription(code)); too many open files: raise the limit (ulimit -n)")
            default:
                throw TransportError(.accept, "accept on \(localDescription): \(errnoDescription(code))")
            }
        }
    }

    /// Stops listening; a thread waiting in `accept` returns with an error. Idempotent.
    public func close() {
        if closed.exchange(true, ordering: .relaxed) { return }
        _ = shutdown(fd, Int32(SHUT_RDWR))
    }
}
