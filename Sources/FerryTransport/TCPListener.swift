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
        let fd: Int32
        do throws(SystemError) {
            fd = try valueOrErrno("socket") {
                socket(
                    address.family,
                    Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            }
        } catch {
            throw TransportError(.listen, "socket() to listen on \(endpoint)", failed: error)
        }
        var one: Int32 = 1
        _ = try? valueOrErrno("setsockopt(SO_REUSEADDR)") {
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        do throws(SystemError) {
            try valueOrErrno("bind(\(address))") { address.withSockaddr { bind(fd, $0, $1) } }
        } catch {
            Glibc.close(fd)
            let hint: String
            switch error.errno {
            case .addressInUse?: hint = "; another process listens on that port: pick another port or stop it"
            case .addressNotAvailable?: hint = "; that address does not belong to this host"
            case .permissionDenied?: hint = "; ports below 1024 need root"
            default: hint = ""
            }
            throw TransportError(.listen, "bind to \(address)", failed: error, hint: hint)
        }
        do throws(SystemError) {
            try valueOrErrno("listen") { listen(fd, backlog) }
        } catch {
            Glibc.close(fd)
            throw TransportError(.listen, "listen on \(address)", failed: error)
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
            let ready: Bool
            do throws(SystemError) {
                ready = try pollReady(fd, events: Int16(POLLIN), timeoutMs: left) != nil
            } catch {
                throw TransportError(.accept, "poll on listener \(localDescription)", failed: error)
            }
            guard ready else {
                throw TransportError(
                    .timeout, "no connection arrived on \(localDescription) within \(timeoutMs ?? 0) ms")
            }
            if closed.load(ordering: .relaxed) {
                throw TransportError(.accept, "listener on \(localDescription) was closed")
            }
            // The listening socket is non-blocking, so a connection that vanished between poll
            // and accept cannot block us; Linux does not pass O_NONBLOCK on to the new socket.
            do throws(SystemError) {
                let client = try valueOrErrno("accept") { Glibc.accept(fd, nil, nil) }
                _ = try? valueOrErrno("fcntl(F_SETFD, FD_CLOEXEC)") { fcntl(client, F_SETFD, FD_CLOEXEC) }
                return TCPStream(adopting: client)
            } catch {
                switch error.errno {
                case .wouldBlock?, .connectionAborted?, .protocolError?:
                    continue
                case .invalidArgument? where closed.load(ordering: .relaxed):
                    throw TransportError(.accept, "listener on \(localDescription) was closed")
                case .tooManyOpenFiles?, .tooManyOpenFilesInSystem?:
                    throw TransportError(
                        .accept, "accept on \(localDescription)", failed: error,
                        hint: "; too many open files: raise the limit (ulimit -n)")
                default:
                    throw TransportError(.accept, "accept on \(localDescription)", failed: error)
                }
            }
        }
    }

    /// Stops listening; a thread waiting in `accept` returns with an error. Idempotent.
    public func close() {
        if closed.exchange(true, ordering: .relaxed) { return }
        _ = shutdown(fd, Int32(SHUT_RDWR))
    }
}
