import Foundation
import Glibc
import Testing

/// A migration between two hosts: network namespaces `src` and `dst` joined by a Linux bridge in a
/// third namespace. The migration crosses the bridge, and after resume the destination's
/// gratuitous ARPs move the guest's MAC from the source's bridge port to the destination's.
@Suite(.serialized) struct NetworkMigrationTests {
    static func tool(_ name: String) -> String? {
        ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    @discardableResult
    static func sh(_ arguments: [String], mustSucceed: Bool = true) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        if mustSucceed && process.terminationStatus != 0 {
            throw NamespaceSetupError(description: "\(arguments.joined(separator: " ")): \(text)")
        }
        return text
    }

    struct NamespaceSetupError: Error, CustomStringConvertible { var description: String }

    /// The bridge port the forwarding table lists for `mac`.
    static func port(of mac: String, bridge: String, namespace: String, bridgeTool: String) throws -> String? {
        for line in try sh([bridgeTool, "-n", namespace, "fdb", "show", "br", bridge]).split(separator: "\n") {
            let fields = line.split(separator: " ").map(String.init)
            if fields.first == mac, let dev = fields.firstIndex(of: "dev"), dev + 1 < fields.count { return fields[dev + 1] }
        }
        return nil
    }

    @Test(.enabled(if: getuid() == 0 && tool("ip") != nil && tool("bridge") != nil,
                   "needs root and iproute2 (ip, bridge) to build network namespaces"))
    func guestMACMovesToTheDestinationPort() throws {
        let ip = try #require(Self.tool("ip")), bridgeTool = try #require(Self.tool("bridge"))
        let id = getpid() % 100_000
        let br = "fcb-\(id)", src = "fcs-\(id)", dst = "fcd-\(id)"
        defer { for ns in [src, dst, br] { _ = try? Self.sh([ip, "netns", "del", ns], mustSucceed: false) } }
        for ns in [br, src, dst] { try Self.sh([ip, "netns", "add", ns]) }
        try Self.sh([ip, "-n", br, "link", "add", "br0", "type", "bridge"])
        try Self.sh([ip, "-n", br, "link", "set", "br0", "up"])
        for (ns, port, inner, address) in [(src, "ps", "s0", "10.77.0.1/24"), (dst, "pd", "d0", "10.77.0.2/24")] {
            try Self.sh([ip, "-n", br, "link", "add", port, "type", "veth", "peer", "name", inner, "netns", ns])
            try Self.sh([ip, "-n", br, "link", "set", port, "master", "br0", "up"])
            try Self.sh([ip, "-n", ns, "addr", "add", address, "dev", inner])
            try Self.sh([ip, "-n", ns, "link", "set", inner, "up"])
            try Self.sh([ip, "-n", ns, "link", "set", "lo", "up"])
        }

        let mac = "02:fe:77:00:00:09", guestIP = "10.77.0.50"
        let scratch = ScratchDirectory("netns")
        let image = scratch.file("source.img"), received = scratch.file("received.img")
        #expect(try FerryProcess.run(["image", "create", image, "--size", "32M"]).status == 0)

        // The guest lives on the source host: the bridge learns its MAC on the source port.
        let before = try FerryProcess.run(["announce", "--dev", "s0", "--guest-mac", mac, "--guest-ip", guestIP, "--rounds", "1"],
                                          prefix: [ip, "netns", "exec", src])
        #expect(before.status == 0, "\(before.stderr)")
        #expect(try Self.port(of: mac, bridge: "br0", namespace: br, bridgeTool: bridgeTool) == "ps")

        let receiver = try FerryProcess(["receive", "--listen", "10.77.0.2:7700", "--image", received, "--announce-dev", "d0",
                                         "--accept-timeout", "60s"], prefix: [ip, "netns", "exec", dst])
        #expect(receiver.waitForStderrLine(containing: "listening on") != nil)
        let sender = try FerryProcess.run(["send", "--image", image, "--to", "10.77.0.2:7700", "--workload", "uniform:20MB/s",
                                           "--guest-mac", mac, "--guest-ip", guestIP], prefix: [ip, "netns", "exec", src])
        let receiverOutcome = receiver.wait()
        #expect(sender.status == 0, "\(sender.stderr)")
        #expect(receiverOutcome.status == 0, "\(receiverOutcome.stderr)")
        #expect(receiverOutcome.stdout.contains("gratuitous ARP frames for \(mac)"))
        #expect(try Self.port(of: mac, bridge: "br0", namespace: br, bridgeTool: bridgeTool) == "pd",
                "after the migration the bridge must forward the guest's MAC to the destination's port")
        #expect(try filesEqual(image, received))
    }
}
