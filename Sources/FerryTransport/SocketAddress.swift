import FerrySystem
import Glibc

/// A resolved IPv4 or IPv6 socket address.
struct SocketAddress: CustomStringConvertible {
    var storage = sockaddr_storage()
    var length: socklen_t = 0

    var family: Int32 { Int32(storage.ss_family) }

    /// The address of `fd`'s own end (`getsockname`) or its peer's (`getpeername`).
    static func of(_ fd: Int32, peer: Bool) -> SocketAddress? {
        var address = SocketAddress()
        address.length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        var length = address.length
        let named = try? valueOrErrno(peer ? "getpeername" : "getsockname") {
            withUnsafeMutablePointer(to: &address.storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    peer ? getpeername(fd, $0, &length) : getsockname(fd, $0, &length)
                }
            }
        }
        address.length = length
        return named != nil ? address : nil
    }

    /// Resolves an endpoint with getaddrinfo (numeric service; names through the resolver).
    static func resolve(_ endpoint: Endpoint, passive: Bool) throws(TransportError) -> [SocketAddress] {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0)
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(endpoint.host, String(endpoint.port), &hints, &list)
        guard rc == 0, let list else {
            // getaddrinfo has codes of its own; only EAI_SYSTEM means "see errno".
            let failure = rc == EAI_SYSTEM ? SystemError.lastError("getaddrinfo(\(endpoint.host))") : nil
            let reason = failure?.errno.map { "\($0)" } ?? String(cString: gai_strerror(rc))
            throw TransportError(
                .address, "cannot resolve host '\(endpoint.host)': \(reason); check the name or give an IP address",
                cause: failure)
        }
        defer { freeaddrinfo(list) }
        var addresses: [SocketAddress] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = list
        while let entry = cursor {
            let family = entry.pointee.ai_family
            if family == AF_INET || family == AF_INET6, let source = entry.pointee.ai_addr {
                var address = SocketAddress()
                address.length = entry.pointee.ai_addrlen
                withUnsafeMutableBytes(of: &address.storage) {
                    $0.copyMemory(from: UnsafeRawBufferPointer(start: source, count: Int(entry.pointee.ai_addrlen)))
                }
                addresses.append(address)
            }
            cursor = entry.pointee.ai_next
        }
        guard !addresses.isEmpty else {
            throw TransportError(.address, "host '\(endpoint.host)' has no IPv4 or IPv6 address")
        }
        return addresses
    }

    func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        withUnsafePointer(to: storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, length) }
        }
    }

    var port: UInt16 {
        withUnsafePointer(to: storage) { pointer in
            let raw = UnsafeRawPointer(pointer)
            if family == AF_INET6 {
                return UInt16(bigEndian: raw.assumingMemoryBound(to: sockaddr_in6.self).pointee.sin6_port)
            }
            return UInt16(bigEndian: raw.assumingMemoryBound(to: sockaddr_in.self).pointee.sin_port)
        }
    }

    var host: String {
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        withUnsafePointer(to: storage) { pointer in
            let raw = UnsafeRawPointer(pointer)
            if family == AF_INET6 {
                var address = raw.assumingMemoryBound(to: sockaddr_in6.self).pointee.sin6_addr
                _ = inet_ntop(AF_INET6, &address, &text, socklen_t(text.count))
            } else {
                var address = raw.assumingMemoryBound(to: sockaddr_in.self).pointee.sin_addr
                _ = inet_ntop(AF_INET, &address, &text, socklen_t(text.count))
            }
        }
        return String(decoding: text.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    var description: String { Endpoint(host: host, port: port).description }
}
