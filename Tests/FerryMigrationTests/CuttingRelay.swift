import Foundation
import Glibc
import Synchronization

/// A TCP relay between a source and a destination that can cut the network: it accepts
/// connections on a loopback port, connects each to `target`, and forwards bytes both ways. Once
/// armed with `cut(afterSourceBytes:)`, it cuts every open connection (shutdown of both sockets,
/// the source's and the destination's) when that many more bytes have gone from the source to the
/// destination, counted over all connections; new connections after the cut are relayed again,
/// unless `refuseAfterCut` is set (a destination that stays unreachable).
///
/// Real sockets and threads; `@unchecked Sendable`: the state is guarded by `lock` or atomic.
final class CuttingRelay: @unchecked Sendable {
    let port: UInt16
    private let targetPort: UInt16
    private let listenFD: Int32
    private let lock = NSLock()
    /// Open pairs (source side, destination side).
    private var pairs: [(Int32, Int32)] = []
    private var cutAt: Int?
    /// Further cuts after `cutAt`.
    private var cutPoints: [Int] = []
    private var stopped = false
    /// Bytes forwarded source → destination, over all connections.
    private var forwarded = 0
    private(set) var cuts = 0
    private let refusing = Atomic<Bool>(false)
    /// After the next cut, close new connections at once (the destination stays unreachable).
    let refuseAfterCut = Atomic<Bool>(false)
    private let acceptDone = DispatchSemaphore(value: 0)

    init(targetPort: UInt16) throws {
        self.targetPort = targetPort
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw RelayError("socket: errno \(errno)") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = Self.loopback(port: 0)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 64) == 0 else {
            Glibc.close(fd)
            throw RelayError("bind/listen: errno \(errno)")
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        listenFD = fd
        port = UInt16(bigEndian: address.sin_port)
        let thread = Thread { [self] in
            acceptLoop()
            acceptDone.signal()
        }
        thread.name = "relay-accept"
        thread.start()
    }

    /// Cuts every connection once `bytes` more bytes have gone from the source to the destination.
    func cut(afterSourceBytes bytes: Int) {
        cut(afterSourceBytes: [bytes])
    }

    /// Cuts every connection at each of these counts of bytes (from now, increasing).
    func cut(afterSourceBytes counts: [Int]) {
        lock.lock()
        cutPoints = counts.map { forwarded + $0 }.sorted()
        cutAt = cutPoints.first
        if !cutPoints.isEmpty { cutPoints.removeFirst() }
        lock.unlock()
    }

    /// Cuts every open connection now.
    func cutNow() {
        lock.lock()
        let open = pairs
        cuts += 1
        if refuseAfterCut.load(ordering: .relaxed) { refusing.store(true, ordering: .relaxed) }
        lock.unlock()
        for (a, b) in open {
            shutdown(a, Int32(SHUT_RDWR))
            shutdown(b, Int32(SHUT_RDWR))
        }
    }

    var cutCount: Int {
        lock.lock()
        defer { lock.unlock() }
        return cuts
    }

    func stop() {
        lock.lock()
        stopped = true
        lock.unlock()
        shutdown(listenFD, Int32(SHUT_RDWR))
        acceptDone.wait()
        Glibc.close(listenFD)
        cutNow()
    }

    private static func loopback(port: UInt16) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        return address
    }

    private func acceptLoop() {
        while true {
            let client = accept(listenFD, nil, nil)
            if client < 0 {
                if errno == EINTR { continue }
                return
            }
            lock.lock()
            let done = stopped
            lock.unlock()
            if done || refusing.load(ordering: .relaxed) {
                Glibc.close(client)
                if done { return }
                continue
            }
            let server = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            var address = Self.loopback(port: targetPort)
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(server, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            if server < 0 || connected != 0 {
                Glibc.close(client)
                if server >= 0 { Glibc.close(server) }
                continue
            }
            var one: Int32 = 1
            setsockopt(client, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(server, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            lock.lock()
            pairs.append((client, server))
            lock.unlock()
            let finished = Atomic<Int>(0)
            for (from, to, counted) in [(client, server, true), (server, client, false)] {
                let thread = Thread { [self] in
                    pump(from: from, to: to, counted: counted)
                    // The second pump to end closes both sockets.
                    if finished.add(1, ordering: .acquiringAndReleasing).newValue == 2 {
                        lock.lock()
                        pairs.removeAll { $0.0 == client }
                        lock.unlock()
                        Glibc.close(client)
                        Glibc.close(server)
                    }
                }
                thread.name = "relay-pump"
                thread.start()
            }
        }
    }

    private func pump(from: Int32, to: Int32, counted: Bool) {
        let size = 64 << 10
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            var n = recv(from, buffer, size, 0)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            var cutNowAfter = false
            if counted {
                lock.lock()
                if let limit = cutAt, forwarded + n >= limit {
                    n = limit - forwarded
                    cutAt = cutPoints.first
                    if !cutPoints.isEmpty { cutPoints.removeFirst() }
                    cutNowAfter = true
                }
                forwarded += n
                lock.unlock()
            }
            var offset = 0
            while offset < n {
                let written = send(to, buffer + offset, n - offset, Int32(MSG_NOSIGNAL))
                if written < 0 && errno == EINTR { continue }
                if written <= 0 { break }
                offset += written
            }
            if cutNowAfter {
                cutNow()
                break
            }
            if offset < n { break }
        }
        shutdown(from, Int32(SHUT_RDWR))
        shutdown(to, Int32(SHUT_RDWR))
    }
}

struct RelayError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
