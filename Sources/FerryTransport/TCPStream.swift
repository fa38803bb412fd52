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
        _ = try? valueOrErrno("setsockopt(TCP_NODELAY)") {
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        }
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
        throw TransportError(
            .connect, "connect to \(endpoint): every address failed: " + failures.joined(separator: "; "))
    }

    private static func connect(to address: SocketAddress, deadline: Int, timeoutMs: Int) throws(TransportError)
        -> TCPStream
    {
        let fd: Int32
        do throws(SystemError) {
            fd = try valueOrErrno("socket") {
                socket(
                    address.family,
                    Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            }
        } catch {
            throw TransportError(.connect, "socket() for \(address)", failed: error)
        }
        var ok = false
        defer { if !ok { Glibc.close(fd) } }

        // Non-blocking: the connection is made in the background (EINPROGRESS, or EINTR: the
        // kernel goes on with it too) and waited for with poll, so the timeout holds.
        var failure: SystemError?
        do throws(SystemError) {
            try valueOrErrno("connect(\(address))", retryOnInterrupt: false) {
                address.withSockaddr { Glibc.connect(fd, $0, $1) }
            }
        } catch {
            failure = error
        }
        if let pending = failure?.errno, pending == .inProgress || pending == .interrupted {
            let ready: Bool
            do throws(SystemError) {
                ready =
                    try pollReady(
                        fd, events: Int16(POLLOUT), timeoutMs: max(0, deadline - MonotonicClock.milliseconds())) != nil
            } catch {
                throw TransportError(.connect, "connect to \(address): poll", failed: error)
            }
            guard ready else {
                throw TransportError(
                    .connect,
                    "connect to \(address): no answer within \(timeoutMs) ms; check the address, that the destination runs and that no firewall drops the connection"
                )
            }
            var soError: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            do throws(SystemError) {
                try valueOrErrno("getsockopt(SO_ERROR)") { getsockopt(fd, SOL_SOCKET, SO_ERROR, &soError, &length) }
                failure = soError == 0 ? nil : SystemError(call: "connect(\(address))", errno: Errno(soError))
            } catch {
                failure = error
            }
        }
        if let failure {
            throw TransportError(.connect, "connect to \(address)", failed: failure, hint: connectHint(failure.errno))
        }
        do throws(SystemError) {
            let flags = try valueOrErrno("fcntl(F_GETFL)") { fcntl(fd, F_GETFL) }
            try valueOrErrno("fcntl(F_SETFL)") { fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) }
        } catch {
            throw TransportError(.connect, "fcntl(F_SETFL) on the socket to \(address)", failed: error)
        }
        ok = true
        return TCPStream(adopting: fd)
    }

    private static func connectHint(_ code: Errno?) -> String {
        switch code {
        case .connectionRefused?: return "; nothing listens on that port: start the destination first or check the port"
        case .networkUnreachable?, .hostUnreachable?:
            return "; no route to that host: check the address and the network"
        case .timedOut?: return "; the host did not answer: check the address and firewalls"
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
                    vectors[used] = iovec(
                        iov_base: UnsafeMutableRawPointer(mutating: part.baseAddress), iov_len: part.count)
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
            let written: Int
            do throws(SystemError) {
                written = try valueOrErrno("sendmsg") { sendmsg(fd, &header, Int32(MSG_NOSIGNAL)) }
            } catch {
                throw writeError(error)
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

    private func writeError(_ failure: SystemError) -> TransportError {
        switch failure.errno {
        case .brokenPipe?, .connectionReset?:
            return TransportError(
                .peerClosed, "peer \(peerDescription) closed the connection while we were sending (\(failure.errno!))",
                cause: failure)
        case .wouldBlock?:
            return TransportError(
                .timeout, "sending to \(peerDescription) timed out: the peer stopped reading", cause: failure)
        default:
            return TransportError(.io, "send to \(peerDescription)", failed: failure)
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
            let count: Int
            do throws(SystemError) {
                count = try valueOrErrno("recv") { recv(fd, base + received, buffer.count - received, 0) }
            } catch {
                throw readError(error, progress: "\(received) of \(buffer.count) bytes received")
            }
            if count == 0 {
                throw endOfStream(nothingYet: received == 0, progress: "\(received) of \(buffer.count) bytes received")
            }
            received += count
        }
    }

    /// Reads what has arrived, up to `buffer.count` bytes, waiting for at least one; returns how
    /// many, 0 at the end of the stream (for protocols whose messages carry their own ends, such
    /// as HTTP). A receive timeout is `.timeout`.
    public func readAvailable(into buffer: UnsafeMutableRawBufferPointer) throws(TransportError) -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        do throws(SystemError) {
            return try valueOrErrno("recv") { recv(fd, base, buffer.count, 0) }
        } catch {
            throw readError(error, progress: "waiting for data")
        }
    }

    /// The error for a read that found the end of the stream; `progress` says how far it got.
    private func endOfStream(nothingYet: Bool, progress: String) -> TransportError {
        if closed.load(ordering: .relaxed) {
            return TransportError(.peerClosed, "connection to \(peerDescription) was closed locally")
        }
        if nothingYet {
            return TransportError(.peerClosed, "peer \(peerDescription) closed the connection")
        }
        return TransportError(
            .peerClosed, "peer \(peerDescription) closed the connection in the middle of a read (\(progress))")
    }

    /// The error for a read call that failed; `progress` says how far the read got.
    private func readError(_ failure: SystemError, progress: String) -> TransportError {
        switch failure.errno {
        case .wouldBlock?:
            return TransportError(
                .timeout, "no data from \(peerDescription) within the receive timeout (\(progress))", cause: failure)
        case .connectionReset?:
            return TransportError(
                .peerClosed, "peer \(peerDescription) reset the connection (\(failure.errno!))", cause: failure)
        default:
            return TransportError(.io, "\(failure.call) from \(peerDescription)", failed: failure)
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
            let count: Int
            do throws(SystemError) {
                count = try valueOrErrno("recvmsg") { recvmsg(fd, &header, 0) }
            } catch {
                throw readError(error, progress: "\(missing(vectors[first...])) bytes missing")
            }
            if count == 0 {
                throw endOfStream(nothingYet: false, progress: "\(missing(vectors[first...])) bytes missing")
            }
            received += count
            Self.advance(vectors, first: &first, by: count)
        }
    }

    private func missing(_ vectors: Slice<UnsafeMutableBufferPointer<iovec>>) -> Int {
        vectors.reduce(0) { $0 + $1.iov_len }
    }

    /// Copies up to `buffer.count` bytes that wait unread in the receive buffer, without
    /// consuming them or blocking; returns how many (0 when none, or on error).
    public func peek(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        guard let base = buffer.baseAddress else { return 0 }
        return
            (try? valueOrErrno("recv(MSG_PEEK)") { recv(fd, base, buffer.count, Int32(MSG_PEEK) | Int32(MSG_DONTWAIT)) })
            ?? 0
    }

    /// Bytes waiting unread in the receive buffer (FIONREAD).
    public var unreadBytes: Int {
        var count: Int32 = 0
        return (try? valueOrErrno("ioctl(FIONREAD)") { ioctl(fd, UInt(FIONREAD), &count) }) != nil ? Int(count) : 0
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
        do throws(SystemError) {
            try valueOrErrno("setsockopt") {
                setsockopt(fd, SOL_SOCKET, option, &value, socklen_t(MemoryLayout<timeval>.size))
            }
        } catch {
            throw TransportError(
                .io, "setsockopt(\(option == SO_RCVTIMEO ? "SO_RCVTIMEO" : "SO_SNDTIMEO"))", failed: error)
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
        // Best effort: the kernel's limits decide, and `bufferSizes` tells what came of it.
        _ = try? valueOrErrno("setsockopt") { setsockopt(fd, SOL_SOCKET, option, &value, size) }
        if Int(intOption(option)) < bytes {
            _ = try? valueOrErrno("setsockopt") { setsockopt(fd, SOL_SOCKET, force, &value, size) }
        }
    }

    /// An integer socket option, 0 when it cannot be read.
    private func intOption(_ option: Int32) -> Int32 {
        var value: Int32 = 0
        var size = socklen_t(MemoryLayout<Int32>.size)
        _ = try? valueOrErrno("getsockopt") { getsockopt(fd, SOL_SOCKET, option, &value, &size) }
        return value
    }

    /// Bytes written to this connection that the peer's kernel has not acknowledged yet (the
    /// send queue, `SIOCOUTQ`); 0 when it cannot be read. A queue that shrinks means the peer, or
    /// the link to it, is still taking data.
    public var unacknowledgedBytes: Int {
        var bytes: Int32 = 0
        return (try? valueOrErrno("ioctl(SIOCOUTQ)", .negatedErrno) { ferry_socket_unacked_bytes(fd, &bytes) }) != nil
            ? Int(bytes) : 0
    }

    /// Bytes of this connection the peer's kernel has acknowledged so far (`TCP_INFO`); nil when
    /// it cannot be read. While data waits in the send queue, a count that stops moving means the
    /// peer stopped taking data (a zero window: a stopped or wedged process), or the path is down.
    public var acknowledgedBytes: UInt64? {
        var bytes: UInt64 = 0
        return (try? valueOrErrno("getsockopt(TCP_INFO)", .negatedErrno) { ferry_socket_bytes_acked(fd, &bytes) })
            != nil ? bytes : nil
    }

    // MARK: Closing

    /// Sends FIN after the data already written; reads still work.
    public func shutdownWrite() {
        _ = shutdown(fd, Int32(SHUT_WR))
    }

    /// Shuts the connection down for reading only: a thread blocked in a read returns (end of
    /// stream) while this side can still write (an `ABORT` that says why).
    public func shutdownRead() {
        _ = shutdown(fd, Int32(SHUT_RD))
    }

    /// Shuts the connection down in both directions; a thread blocked in a read or write returns.
    /// Idempotent. The descriptor is released when the object goes away.
    public func close() {
        if closed.exchange(true, ordering: .relaxed) { return }
        _ = shutdown(fd, Int32(SHUT_RDWR))
    }

    public var isClosed: Bool { closed.load(ordering: .relaxed) }
}
