import FerryTransport
import Glibc

/// The `Host` headers that name this agent: a signed request is meant for the agent its client
/// addressed, and the MAC covers that `Host` (`RequestSignature`), so a request captured on its
/// way to one agent and replayed to another that shares the key is refused (`wrong_audience`).
///
/// A request names this agent when its `Host` is one of the API's addresses at its port:
/// - listening on one address: that address (or name) only, and when it is a loopback address
///   (`127.x.x.x`, `::1`, `localhost`) any of `127.0.0.1`, `localhost`, `[::1]`;
/// - listening on a wildcard (`0.0.0.0`, `::`): the host's interface addresses, its host name,
///   and the loopback names.
///
/// Hosts are compared as addresses when they are IP literals (`[0:0::1]` is `[::1]`), else as
/// lower-case names; a `Host` without a port means port 80, as in HTTP.
public struct RequestAudience: Sendable, Equatable {
    public let port: UInt16
    /// The hosts accepted (normalised, IPv6 without brackets).
    public let hosts: Set<String>
    /// Whether the API listens on a wildcard address (its interfaces may change: see `refreshed`).
    public let wildcard: Bool

    static let loopbackNames: Set<String> = ["127.0.0.1", "localhost", "::1"]

    /// The audience of an API bound to `listen` (its real port), reading the host's interface
    /// addresses and name when it listens on a wildcard.
    public init(listen: Endpoint) {
        self.init(listen: listen, interfaces: Self.interfaceAddresses(), hostname: Self.hostname())
    }

    /// The same with the interfaces and the host name given (for tests).
    public init(listen: Endpoint, interfaces: [String], hostname: String?) {
        port = listen.port
        let host = Self.normalised(listen.host)
        wildcard = host.isEmpty || host == "0.0.0.0" || host == "::"
        var hosts: Set<String>
        if wildcard {
            hosts = Set(interfaces.map(Self.normalised)).union(Self.loopbackNames)
            if let hostname, !hostname.isEmpty { hosts.insert(Self.normalised(hostname)) }
        } else {
            hosts = [host]
            if Self.isLoopback(host) { hosts.formUnion(Self.loopbackNames) }
        }
        self.hosts = hosts
    }

    /// The audience again with the interfaces as they are now (a wildcard listener's addresses
    /// may have changed since the agent started); itself when it listens on one address.
    func refreshed() -> RequestAudience {
        guard wildcard else { return self }
        return RequestAudience(listen: Endpoint(host: "0.0.0.0", port: port))
    }

    /// Whether `host` (a `Host` header's value) names this agent.
    public func accepts(_ host: String) -> Bool {
        guard let (name, port) = Self.authority(host) else { return false }
        return port == self.port && hosts.contains(Self.normalised(name))
    }

    /// The addresses served, as a client would write them in `Host` (for messages).
    public var served: [String] {
        hosts.sorted().map { Endpoint(host: $0, port: port).description }
    }

    /// A `Host` value's host and port (`[::1]:7460`, `node-1:7460`, `node-1` meaning port 80);
    /// nil when it is not one.
    static func authority(_ text: String) -> (String, UInt16)? {
        guard !text.isEmpty, !text.contains(where: { $0 == " " || $0 == "/" || $0 == "@" }) else { return nil }
        let portless = text.hasPrefix("[") ? !text.contains("]:") : !text.contains(":")
        if portless {
            let host = text.hasPrefix("[") && text.hasSuffix("]") ? String(text.dropFirst().dropLast()) : text
            return host.isEmpty ? nil : (host, 80)
        }
        guard let endpoint = try? Endpoint.parse(text) else { return nil }
        return (endpoint.host, endpoint.port)
    }

    /// An IP literal in its canonical text, else the name in lower case without a final dot.
    static func normalised(_ host: String) -> String {
        var buffer = [UInt8](repeating: 0, count: 16)
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        for family in [AF_INET, AF_INET6] where inet_pton(family, host, &buffer) == 1 {
            if inet_ntop(family, buffer, &text, socklen_t(text.count)) != nil {
                return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            }
        }
        var name = host.lowercased()
        if name.hasSuffix(".") { name.removeLast() }
        return name
    }

    static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    /// The host's IPv4 and IPv6 interface addresses (`getifaddrs`); none when it fails.
    public static func interfaceAddresses() -> [String] {
        var first: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&first) == 0 else { return [] }
        defer { freeifaddrs(first) }
        var addresses: [String] = []
        var next = first
        while let entry = next {
            next = entry.pointee.ifa_next
            guard let address = entry.pointee.ifa_addr else { continue }
            let family = Int32(address.pointee.sa_family)
            var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
            let written: UnsafePointer<CChar>?
            if family == AF_INET {
                written = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { inet4 in
                    withUnsafePointer(to: inet4.pointee.sin_addr) {
                        inet_ntop(AF_INET, $0, &text, socklen_t(text.count))
                    }
                }
            } else if family == AF_INET6 {
                written = address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { inet6 in
                    withUnsafePointer(to: inet6.pointee.sin6_addr) {
                        inet_ntop(AF_INET6, $0, &text, socklen_t(text.count))
                    }
                }
            } else {
                continue
            }
            if written != nil {
                addresses.append(String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
            }
        }
        return addresses
    }

    static func hostname() -> String? {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count) == 0 else { return nil }
        let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return name.isEmpty ? nil : name
    }
}
