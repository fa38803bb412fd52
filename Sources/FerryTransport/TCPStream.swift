import CFerryShims
import FerrySystem
import Glibc
import Synchronization

/// A connected TCP socket with blocking reads and writes.
///
/// `@unchecked Sendable`: the descriptor is immutable for the object's life and the kernel
/// serializes calls on it; one thread may write while another reads. `close()` only shuts the
/// socket down (waking blocked threads); the descriptor itself is released in `deinit`, so a
/// thread still inside a call never touches a reused descriptor number.
public final class TCPStream: @unchecked Sendable {
    let fd: Int32
    private let closed = Atomic<Bool>(false)
    /// The peer's address, e.g. `127.0.0.1:7700`, fixed when the connection is made.
    public let peerDescription: String

    init(adopting fd: Int32) {
        self.fd = fd
        self.peerDescription = SocketAddress.of(fd, peer: true)?.description ?? "unknown peer"
        var one: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    deinit {
        Glibc.close(fd)
    }

    /// Connects to `endpoint`, trying each address the name resolves to until one answers,
    /// all within `timeoutMs`. The socket is blocking afterwards, with TCP_NODELAY set.
    public static func connect(_ endpoint: Endpoint, timeoutMs: Int) throws(TransportError) -> TCPStream {
        let addresses = try SocketAddress.resolve(endpoint, passive: false)
        let deadline = MonotonicClock.milliseconds() + max(0, timeoutMs)
        var failures: [String] = []
        var lastError: TransportError?
        for address in addresses {
            do {
                return try connect(to: address, deadline: deadline, timeoutMs: timeoutMs)
            } catch {
                failures.append(error.message)
                lastError = error
            }
        }
        if failures.count == 1, let lastError { throw lastError }
        throw TransportError(.connect, "connect to \(endpoint): every address failed: " + failures.joined(separator: "; "))
    }

    private static func connect(to address: SocketAddress, deadline: Int, timeoutMs: Int) throws(TransportError) -> TCPStream {
        let fd = socket(address.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else {
            throw TransportError(.connect, "socket() for \(address): \(errnoDescription(errno))")
        }
        var ok = false
        defer { if !ok { Glibc.close(fd) } }

        var rc = address.withSockaddr { Glibc.connect(fd, $0, $1) }
        var code: Int32 = rc == 0 ? 0 : errno
        if rc != 0 && (code == EINPROGRESS || code == EINTR) {
            let waited = pollReady(fd, events: Int16(POLLOUT), timeoutMs: max(0, deadline - MonotonicClock.milliseconds()))
            if waited.errno != 0 {
                throw TransportError(.connect, "connect to \(address): poll: \(errnoDescription(waited.errno))")
            }
            guard waited.ready else {
                throw TransportError(.connect, "connect to \(address): no answer within \(timeoutMs) ms; check the address, that the destination runs and that no firewall drops the connection")
            }
            var soError: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            rc = getsockopt(fd, SOL_SOCKET, SO_ERROR, &soError, &length)
            code = rc == 0 ? soError : errno
        }
        if code != 0 {
            throw TransportError(.connect, "connect to \(address): \(errnoDescription(code))\(connectHint(code))")
        }
        let flags = fcntl(fd, F_GETFL)
        guard flags >= 0, fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) == 0 else {
            throw TransportError(.connect, "fcntl(F_SETFL) on the socket to \(address): \(errnoDescription(errno))")
        }
        ok = true
        return TCPStream(adopting: fd)
    }

    private static func connectHint(_ code: Int32) -> String {
        switch code {
        case ECONNREFUSED: return "; nothing listens on that port: start the destination first or check the port"
        case ENETUNREACH, EHOSTUNREACH: return "; no route to that host: check the address and the network"
        case ETIMEDOUT: return "; the host did not answer: check the address and firewalls"
        default: return ""
        }
    }

    // MARK: Writing

    /// Writes all of `bytes`, retrying partial writes and EINTR.
    public func writeAll(_ bytes: UnsafeRawBufferPointer) throws(TransportError) {
        try writeAll(CollectionOfOne(bytes))
    }

    /// Writes all parts in order with as few `sendmsg` calls as the kernel allows (gather write).
    public func writeAll(_ parts: UnsafeRawBufferPointer...) throws(TransportError) {
        try writeAll(parts)
    }

    /// Writes all parts in order with as few `sendmsg` calls as the kernel allows (gather write).
    public func writeAll(_ parts: some Collection<UnsafeRawBufferPointer>) throws(TransportError) {
        let maxVectors = 1024  // IOV_MAX on Linux
        let count = min(parts.count, maxVectors)
        guard count > 0 else { return }
        let result: TransportError? = withUnsafeTemporaryAllocation(of: iovec.self, capacity: count) { vectors in
            var index = parts.startIndex
            while index != parts.endIndex {
                var used = 0
                while used < count && index != parts.endIndex {
                    let part = parts[index]
                    vectors[used] = iovec(iov_base: UnsafeMutableRawPointer(mutating: part.baseAddress), iov_len: part.count)
                    used += 1
                    parts.formIndex(after: &index)
                }
                do throws(TransportError) {
                    try writeVectors(UnsafeMutableBufferPointer(rebasing: vectors[0..<used]))
                } catch {
                    return error
                }
            }
            return nil
        }
        if let result { throw result }
    }

    /// Writes every byte the vectors describe; advances them in place on partial writes.
    func writeVectors(_ vectors: UnsafeMutableBufferPointer<iovec>) throws(TransportError) {
        var first = 0
        Self.advance(vectors, first: &first, by: 0)
        while first < vectors.count {
            var header = msghdr()
            header.msg_iov = vectors.baseAddress! + first
            header.msg_iovlen = vectors.count - first
            let written = sendmsg(fd, &header, Int32(MSG_NOSIGNAL))
            if written < 0 {
                let code = errno
                if code == EINTR { continue }
                throw writeError(code)
            }
            Self.advance(vectors, first: &first, by: written)
        }
    }

    /// Consumes `count` transferred bytes from the vectors starting at `first`: skips the ones
    /// done (and empty ones), trims the one a partial transfer stopped in.
    private static func advance(_ vectors: UnsafeMutableBufferPointer<iovec>, first: inout Int, by count: Int) {
        var remaining = count
        while first < vectors.count && remaining >= vectors[first].iov_len {
            remaining -= vectors[first].iov_len
            first += 1
        }
        if remaining > 0 {
            vectors[first].iov_base += remaining
            vectors[first].iov_len -= remaining
        }
        while first < vectors.count && vectors[first].iov_len == 0 { first += 1 }
    }

    private func writeError(_ code: Int32) -> TransportError {
        switch code {
        case EPIPE, ECONNRESET:
            return TransportError(.peerClosed, "peer \(peerDescription) closed the connection while we were sending (\(errnoDescription(code)))")
        case EAGAIN:
            return TransportError(.timeout, "sending to \(peerDescription) timed out: the peer stopped reading")
        default:
            return TransportError(.io, "send to \(peerDescription): \(errnoDescription(code))")
        }
    }

    // MARK: Reading

    /// Fills `buffer` completely. End of stream before the last byte is `.peerClosed`;
    /// a receive timeout (see `setReceiveTimeout`) is `.timeout`.
    public func readExactly(into buffer: UnsafeMutableRawBufferPointer) throws(TransportError) {
        var received = 0
        try readExactly(into: buffer, received: &received)
    }

    /// Like `readExactly(into:)`, and tells how many bytes arrived before a failure, so a caller
    /// can tell a timeout between messages (stream still usable) from one inside a message.
    func readExactly(into buffer: UnsafeMutableRawBufferPointer, received: inout Int) throws(TransportError) {
        guard let base = buffer.baseAddress else { return }
        while received < buffer.count {
            let count = recv(fd, base + received, buffer.count - received, 0)
            if count > 0 {
                received += count
                continue
            }
            if let failure = readFailure(count, errno, nothingYet: received == 0, call: "recv",
                                         progress: "\(received) of \(buffer.count) bytes received") {
                throw failure
            }
        }
    }

    /// The error for a read that returned `result` ≤ 0 (`code`: errno when negative), or nil
    /// to retry (EINTR). `progress` says how far the read got.
    private func readFailure(_ result: Int, _ code: Int32, nothingYet: Bool, call: String, progress: String) -> TransportError? {
        if result == 0 {
            if closed.load(ordering: .relaxed) {
                return TransportError(.peerClosed, "connection to \(peerDescription) was closed locally")
            }
            if nothingYet {
                return TransportError(.peerClosed, "peer \(peerDescription) closed the connection")
            }
            return TransportError(.peerClosed, "peer \(peerDescription) closed the connection in the middle of a read (\(progress))")
        }
        switch code {
        case EINTR:
            return nil
        case EAGAIN:
            return TransportError(.timeout, "no data from \(peerDescription) within the receive timeout (\(progress))")
        case ECONNRESET:
            return TransportError(.peerClosed, "peer \(peerDescription) reset the connection (\(errnoDescription(code)))")
        default:
            return TransportError(.io, "\(call) from \(peerDescription): \(errnoDescription(code))")
        }
    }

    /// Fills every byte the vectors describe (scatter read), advancing them in place; at most
    /// 1024 vectors (IOV_MAX). Failures as for `readExactly`; `received` counts the bytes that
    /// arrived before one.
    func readVectors(_ vectors: UnsafeMutableBufferPointer<iovec>, received: inout Int) throws(TransportError) {
        var first = 0
        Self.advance(vectors, first: &first, by: 0)
        while first < vectors.count {
            var header = msghdr()
            header.msg_iov = vectors.baseAddress! + first
            header.msg_iovlen = vectors.count - first
            let count = recvmsg(fd, &header, 0)
            if count > 0 {
                received += count
                Self.advance(vectors, first: &first, by: count)
                continue
            }
            let code = errno
            let left = vectors[first...].reduce(0) { $0 + $1.iov_len }
            if let failure = readFailure(count, code, nothingYet: false, call: "recvmsg", progress: "\(left) bytes missing") {
                throw failure
            }
        }
    }

    /// Copies up to `buffer.count` bytes that wait unread in the receive buffer, without
    /// consuming them or blocking; returns how many (0 when none, or on error).
    public func peek(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        guard let base = buffer.baseAddress else { return 0 }
        return max(0, recv(fd, base, buffer.count, Int32(MSG_PEEK) | Int32(MSG_DONTWAIT)))
    }

    /// Bytes waiting unread in the receive buffer (FIONREAD).
    public var unreadBytes: Int {
        var count: Int32 = 0
        return ioctl(fd, UInt(FIONREAD), &count) == 0 ? Int(count) : 0
    }

    // MARK: Options

    /// Makes reads fail with `.timeout` after `ms` milliseconds without data; nil: wait forever.
    public func setReceiveTimeout(ms: Int?) throws(TransportError) {
        try setTimeout(SO_RCVTIMEO, ms: ms)
    }

    /// Makes writes fail with `.timeout` after `ms` milliseconds without progress; nil: wait forever.
    public func setSendTimeout(ms: Int?) throws(TransportError) {
        try setTimeout(SO_SNDTIMEO, ms: ms)
    }

    private func setTimeout(_ option: Int32, ms: Int?) throws(TransportError) {
        let total = max(0, ms ?? 0)
        // A zero timeval means "no timeout", so round a 0 ms request up to 1 ms.
        let effective = ms == nil ? 0 : max(total, 1)
        var value = timeval(tv_sec: effective / 1000, tv_usec: (effective % 1000) * 1000)
        guard setsockopt(fd, SOL_SOCKET, option, &value, socklen_t(MemoryLayout<timeval>.size)) == 0 else {
            throw TransportError(.io, "setsockopt(\(option == SO_RCVTIMEO ? "SO_RCVTIMEO" : "SO_SNDTIMEO")): \(errnoDescription(errno))")
        }
    }

    /// Asks for kernel socket buffers of the given sizes in bytes (nil: leave as is). The kernel
    /// caps requests at net.core.wmem_max / rmem_max unless the process has CAP_NET_ADMIN, which
    /// this tries next. Setting a size turns off the kernel's buffer auto-tuning for that direction.
    public func setBufferSizes(send: Int?, receive: Int?) {
        if let send { setBuffer(SO_SNDBUF, force: SO_SNDBUFFORCE, bytes: send) }
        if let receive { setBuffer(SO_RCVBUF, force: SO_RCVBUFFORCE, bytes: receive) }
    }

    /// The kernel's current buffer sizes (it reports twice the requested size: half is bookkeeping).
    public var bufferSizes: (send: Int, receive: Int) {
        (Int(intOption(SO_SNDBUF)), Int(intOption(SO_RCVBUF)))
    }

    private func setBuffer(_ option: Int32, force: Int32, bytes: Int) {
        var value = Int32(clamping: bytes)
        let size = socklen_t(MemoryLayout<Int32>.size)
        _ = setsockopt(fd, SOL_SOCKET, option, &value, size)
        if Int(intOption(option)) < bytes {
            _ = setsockopt(fd, SOL_SOCKET, force, &value, size)
        }
    }

    private func intOption(_ option: Int32) -> Int32 {
        var value: Int32 = 0
        var size = socklen_t(MemoryLayout<Int32>.size)
        _ = getsockopt(fd, SOL_SOCKET, option, &value, &size)
        return value
    }

    /// Bytes written to this connection that the peer's kernel has not acknowledged yet (the
    /// send queue, `SIOCOUTQ`); 0 when it cannot be read. A queue that shrinks means the peer, or
    /// the link to it, is still taking data.
    public var unacknowledgedBytes: Int {
        var bytes: Int32 = 0
        return ferry_socket_unacked_bytes(fd, &bytes) == 0 ? Int(bytes) : 0
    }

    /// Bytes of this connection the peer's kernel has acknowledged so far (`TCP_INFO`); nil when
    /// it cannot be read. While data waits in the send queue, a count that stops moving means the
    /// peer stopped taking data (a zero window: a stopped or wedged process), or the path is down.
    public var acknowledgedBytes: UInt64? {
        var bytes: UInt64 = 0
        return ferry_socket_bytes_acked(fd, &bytes) == 0 ? bytes : nil
    }

    // MARK: Closing

    /// Sends FIN after the data already written; reads still work.
    public func shutdownWrite() {
        _ = shutdown(fd, Int32(SHUT_WR))
    }

    /// Shuts the connection down in both directions; a thread blocked in a read or write returns.
    /// Idempotent. The descriptor is released when the object goes away.
    public func close() {
        if closed.exchange(true, ordering: .relaxed) { return }
        _ = shutdown(fd, Int32(SHUT_RDWR))
    }

    public var isClosed: Bool { closed.load(ordering: .relaxed) }
}
