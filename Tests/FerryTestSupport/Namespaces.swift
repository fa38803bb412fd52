import Foundation
import Glibc

/// Network namespaces for a test (`ip netns add`), deleted again by `remove()` (stale ones of
/// the same names are deleted first). Needs `Requirement.namespaces`.
public final class NetworkNamespaces: Sendable {
    public let names: [String]
    /// The tools' paths.
    public let ip: String
    public let bridge: String

    public init(_ names: [String]) throws {
        guard let ip = Host.tool("ip"), let bridge = Host.tool("bridge") else {
            throw HostError(description: "iproute2 (ip, bridge) not found")
        }
        self.ip = ip
        self.bridge = bridge
        self.names = names
        for name in names { try Host.run([ip, "netns", "del", name], mustSucceed: false) }
        do {
            for name in names { try Host.run([ip, "netns", "add", name]) }
        } catch {
            remove()
            throw error
        }
    }

    /// Hosts on one LAN: a namespace `bridgeNamespace` holding the bridge `br0`, and one namespace
    /// per host joined to it by a veth pair (bridge port `p0`, `p1`, …; the host's end `eth0`)
    /// with the address `SUBNET.(index + 1)/24`, `lo` up. `hosts[i]` is the i-th host's namespace.
    public static func bridged(
        bridgeNamespace: String, hosts: [String], subnet: String
    ) throws -> (namespaces: NetworkNamespaces, addresses: [String]) {
        let namespaces = try NetworkNamespaces([bridgeNamespace] + hosts)
        do {
            try namespaces.ip(["-n", bridgeNamespace, "link", "add", "br0", "type", "bridge"])
            try namespaces.ip(["-n", bridgeNamespace, "link", "set", "br0", "up"])
            var addresses: [String] = []
            for (index, host) in hosts.enumerated() {
                let address = "\(subnet).\(index + 1)"
                try namespaces.ip([
                    "-n", bridgeNamespace, "link", "add", "p\(index)", "type", "veth", "peer", "name", "eth0", "netns",
                    host,
                ])
                try namespaces.ip(["-n", bridgeNamespace, "link", "set", "p\(index)", "master", "br0", "up"])
                try namespaces.ip(["-n", host, "addr", "add", address + "/24", "dev", "eth0"])
                try namespaces.ip(["-n", host, "link", "set", "eth0", "up"])
                try namespaces.ip(["-n", host, "link", "set", "lo", "up"])
                addresses.append(address)
            }
            return (namespaces, addresses)
        } catch {
            namespaces.remove()
            throw error
        }
    }

    /// Deletes the namespaces (and with them their links).
    public func remove() {
        for name in names { _ = try? Host.run([ip, "netns", "del", name], mustSucceed: false) }
    }

    /// `ip ARGS`.
    @discardableResult
    public func ip(_ arguments: [String]) throws -> String { try Host.run([ip] + arguments) }

    /// `bridge ARGS`.
    @discardableResult
    public func bridge(_ arguments: [String]) throws -> String { try Host.run([bridge] + arguments) }

    /// The command prefix that runs a program in `namespace`: `ip netns exec NAMESPACE`.
    public func exec(in namespace: String) -> [String] { [ip, "netns", "exec", namespace] }

    /// The bridge port the forwarding database of `bridge` in `namespace` lists for `mac`
    /// (as `bridge fdb show` prints it, e.g. "02:fe:00:00:00:07"), if any.
    public func learnedPort(of mac: String, bridge name: String, in namespace: String) throws -> String? {
        for line in try bridge(["-n", namespace, "fdb", "show", "br", name]).split(separator: "\n") {
            let fields = line.split(separator: " ").map(String.init)
            if fields.first == mac, let dev = fields.firstIndex(of: "dev"), dev + 1 < fields.count {
                return fields[dev + 1]
            }
        }
        return nil
    }

    /// Waits (at most `timeout` seconds) until `mac` is learnt on `port`; returns the port last seen.
    public func waitForLearnedPort(
        of mac: String, bridge name: String, in namespace: String, port: String,
        timeout: Double = 2
    ) throws -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        var seen: String?
        repeat {
            seen = try learnedPort(of: mac, bridge: name, in: namespace)
            if seen == port { return seen }
            usleep(20_000)
        } while Date() < deadline
        return seen
    }

    /// Waits (at most `timeout` seconds) until the bridge `ports` in `namespace` forward.
    public func waitForForwarding(ports: [String], in namespace: String, timeout: Double = 3) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let links = try bridge(["-n", namespace, "link", "show"])
            let forwarding = ports.allSatisfy { port in
                links.split(separator: "\n").contains { $0.contains(" \(port)@") && $0.contains("state forwarding") }
            }
            if forwarding { return }
            if Date() > deadline { throw HostError(description: "bridge ports never reached forwarding:\n\(links)") }
            usleep(20_000)
        }
    }

    /// `setns` is not exported by the Glibc module (it needs _GNU_SOURCE), so look it up.
    private typealias SetNamespace = @convention(c) (Int32, Int32) -> Int32
    private static let setNamespace: SetNamespace? = dlsym(nil, "setns").map {
        unsafeBitCast($0, to: SetNamespace.self)
    }
    private static let cloneNewNet: Int32 = 0x4000_0000

    /// Runs `body` on a fresh thread that has joined the network namespace `name` first; network
    /// namespace membership is per thread, so the rest of the process is unaffected.
    public static func run<T: Sendable>(in name: String, _ body: @escaping @Sendable () throws -> T) throws -> T {
        let result = Box<Result<T, any Error>>()
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            result.value = Result {
                let fd = open("/var/run/netns/\(name)", O_RDONLY | O_CLOEXEC)
                guard fd >= 0 else { throw HostError(description: "open /var/run/netns/\(name): errno \(errno)") }
                defer { close(fd) }
                guard let setNamespace, setNamespace(fd, cloneNewNet) == 0 else {
                    throw HostError(description: "setns(\(name), CLONE_NEWNET): errno \(errno)")
                }
                return try body()
            }
            done.signal()
        }
        thread.start()
        done.wait()
        return try result.value!.get()
    }
}
