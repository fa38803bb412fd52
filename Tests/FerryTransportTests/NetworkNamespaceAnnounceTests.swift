import FerryTransport
import Foundation
import Glibc
import Logging
import FerryProtocol
import Testing

/// Announces a MAC from two network namespaces joined by a Linux bridge and checks that the
/// bridge's forwarding database moves the MAC to the port the latest announce came from: what
/// a switch does when a migrated guest resumes on another host.
@Suite(.serialized) struct NetworkNamespaceAnnounceTests {
    struct SetupError: Error, CustomStringConvertible {
        var description: String
    }

    static func tool(_ name: String) -> String? {
        ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map { "\($0)/\(name)" }
            .first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    @discardableResult
    static func run(_ executable: String, _ arguments: [String], mustSucceed: Bool = true) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        if mustSucceed && process.terminationStatus != 0 {
            throw SetupError(description: "\(executable) \(arguments.joined(separator: " ")) failed (\(process.terminationStatus)): \(text)")
        }
        return text
    }

    /// `setns` is not exported by the Glibc module (it needs _GNU_SOURCE), so look it up.
    typealias SetNamespace = @convention(c) (Int32, Int32) -> Int32
    static let setNamespace: SetNamespace? = dlsym(nil, "setns").map { unsafeBitCast($0, to: SetNamespace.self) }
    static let cloneNewNet: Int32 = 0x4000_0000

    /// Runs `body` on a fresh thread that has joined the named network namespace first; network
    /// namespace membership is per thread, so the rest of the process is unaffected.
    static func inNamespace<T>(_ name: String, _ body: @escaping @Sendable () throws -> T) throws -> T {
        let thread = JoinableThread { () throws -> T in
            let fd = open("/var/run/netns/\(name)", O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw SetupError(description: "open /var/run/netns/\(name): errno \(errno)") }
            defer { close(fd) }
            guard let setNamespace, setNamespace(fd, cloneNewNet) == 0 else {
                throw SetupError(description: "setns(\(name), CLONE_NEWNET): errno \(errno)")
            }
            return try body()
        }
        return try thread.join()
    }

    /// The bridge port the forwarding database lists for `mac`, if any.
    static func learnedPort(bridgeTool: String, namespace: String, bridge: String, mac: MACAddress) throws -> String? {
        let table = try run(bridgeTool, ["-n", namespace, "fdb", "show", "br", bridge])
        for line in table.split(separator: "\n") {
            let fields = line.split(separator: " ")
            if fields.first.map(String.init) == mac.description, let dev = fields.firstIndex(of: "dev"), dev + 1 < fields.count {
                return String(fields[dev + 1])
            }
        }
        return nil
    }

    static func waitForLearnedPort(bridgeTool: String, namespace: String, bridge: String, mac: MACAddress, port: String) throws -> String? {
        let deadline = Date().addingTimeInterval(2)
        var seen: String?
        repeat {
            seen = try learnedPort(bridgeTool: bridgeTool, namespace: namespace, bridge: bridge, mac: mac)
            if seen == port { return seen }
            usleep(20_000)
        } while Date() < deadline
        return seen
    }

    static func waitForForwarding(bridgeTool: String, namespace: String, ports: [String]) throws {
        let deadline = Date().addingTimeInterval(3)
        while true {
            let links = try run(bridgeTool, ["-n", namespace, "link", "show"])
            let forwarding = ports.allSatisfy { port in
                links.split(separator: "\n").contains { $0.contains(" \(port)@") && $0.contains("state forwarding") }
            }
            if forwarding { return }
            if Date() > deadline { throw SetupError(description: "bridge ports never reached forwarding:\n\(links)") }
            usleep(20_000)
        }
    }

    @Test(.timeLimit(.minutes(1)),
          .enabled(if: getuid() == 0, "needs root to build network namespaces"),
          .enabled(if: tool("ip") != nil && tool("bridge") != nil, "needs the iproute2 tools `ip` and `bridge`"))
    func announceMovesTheMACToTheNewBridgePort() throws {
        let ip = try #require(Self.tool("ip")), bridgeTool = try #require(Self.tool("bridge"))
        let pid = getpid()
        let bridgeNS = "ferry-br-\(pid)", sourceNS = "ferry-src-\(pid)", destinationNS = "ferry-dst-\(pid)"
        let namespaces = [bridgeNS, sourceNS, destinationNS]
        for name in namespaces { try Self.run(ip, ["netns", "del", name], mustSucceed: false) }
        defer {
            for name in namespaces { _ = try? Self.run(ip, ["netns", "del", name], mustSucceed: false) }
        }

        for name in namespaces { try Self.run(ip, ["netns", "add", name]) }
        // Bridge namespace: br0 with ports s0 (to the source host) and d0 (to the destination);
        // each host sees its end of the cable as ferry0.
        try Self.run(ip, ["-n", bridgeNS, "link", "add", "br0", "type", "bridge"])
        try Self.run(ip, ["-n", bridgeNS, "link", "add", "s0", "type", "veth", "peer", "name", "ferry0", "netns", sourceNS])
        try Self.run(ip, ["-n", bridgeNS, "link", "add", "d0", "type", "veth", "peer", "name", "ferry0", "netns", destinationNS])
        for port in ["s0", "d0"] {
            try Self.run(ip, ["-n", bridgeNS, "link", "set", port, "master", "br0"])
            try Self.run(ip, ["-n", bridgeNS, "link", "set", port, "up"])
        }
        try Self.run(ip, ["-n", bridgeNS, "link", "set", "br0", "up"])
        try Self.run(ip, ["-n", sourceNS, "link", "set", "ferry0", "up"])
        try Self.run(ip, ["-n", destinationNS, "link", "set", "ferry0", "up"])
        try Self.waitForForwarding(bridgeTool: bridgeTool, namespace: bridgeNS, ports: ["s0", "d0"])

        let mac = try MACAddress.parse("02:fe:00:00:00:07")
        let guestIP = try IPv4Address.parse("192.0.2.7")
        let logger = Logger(label: "ferry.test.announce")
        #expect(try Self.learnedPort(bridgeTool: bridgeTool, namespace: bridgeNS, bridge: "br0", mac: mac) == nil)

        let sentFromSource = try Self.inNamespace(sourceNS) {
            try GratuitousARP.announce(interface: "ferry0", mac: mac, ip: guestIP, rounds: 2, initialDelayMs: 20, stepMs: 20, logger: logger)
        }
        #expect(sentFromSource == 2)
        #expect(try Self.waitForLearnedPort(bridgeTool: bridgeTool, namespace: bridgeNS, bridge: "br0", mac: mac, port: "s0") == "s0")

        let start = Date()
        let sentFromDestination = try Self.inNamespace(destinationNS) {
            try GratuitousARP.announce(interface: "ferry0", mac: mac, ip: guestIP, rounds: 3, initialDelayMs: 20, stepMs: 30, logger: logger)
        }
        let elapsedMs = Date().timeIntervalSince(start) * 1000
        #expect(sentFromDestination == 3)
        #expect(elapsedMs >= 65, "gaps of 20 and 50 ms between the three frames; took \(elapsedMs) ms")
        #expect(try Self.waitForLearnedPort(bridgeTool: bridgeTool, namespace: bridgeNS, bridge: "br0", mac: mac, port: "d0") == "d0")

        // The test process itself never left its own namespace.
        #expect(if_nametoindex("ferry0") == 0)
    }
}
