import FerryProtocol
import FerryTestSupport
import FerryTransport
import Foundation
import Glibc
import Logging
import Testing

/// Announces a MAC from two network namespaces joined by a Linux bridge and checks that the
/// bridge's forwarding database moves the MAC to the port the latest announce came from: what
/// a switch does when a migrated guest resumes on another host.
@Suite(.serialized, .tags(.namespaces), .skippable(.namespaces)) struct NetworkNamespaceAnnounceTests {
    @Test(.timeLimit(.minutes(1)), .enabled(if: Requirement.namespaces.met, Requirement.namespaces.why))
    func announceMovesTheMACToTheNewBridgePort() throws {
        let pid = getpid()
        let bridgeNS = "ferry-br-\(pid)"
        let sourceNS = "ferry-src-\(pid)"
        let destinationNS = "ferry-dst-\(pid)"
        let hosts = try NetworkNamespaces([bridgeNS, sourceNS, destinationNS])
        defer { hosts.remove() }

        // Bridge namespace: br0 with ports s0 (to the source host) and d0 (to the destination);
        // each host sees its end of the cable as ferry0.
        try hosts.ip(["-n", bridgeNS, "link", "add", "br0", "type", "bridge"])
        try hosts.ip(["-n", bridgeNS, "link", "add", "s0", "type", "veth", "peer", "name", "ferry0", "netns", sourceNS])
        try hosts.ip([
            "-n", bridgeNS, "link", "add", "d0", "type", "veth", "peer", "name", "ferry0", "netns", destinationNS,
        ])
        for port in ["s0", "d0"] {
            try hosts.ip(["-n", bridgeNS, "link", "set", port, "master", "br0"])
            try hosts.ip(["-n", bridgeNS, "link", "set", port, "up"])
        }
        try hosts.ip(["-n", bridgeNS, "link", "set", "br0", "up"])
        try hosts.ip(["-n", sourceNS, "link", "set", "ferry0", "up"])
        try hosts.ip(["-n", destinationNS, "link", "set", "ferry0", "up"])
        try hosts.waitForForwarding(ports: ["s0", "d0"], in: bridgeNS)

        let mac = try MACAddress.parse("02:fe:00:00:00:07")
        let guestIP = try IPv4Address.parse("192.0.2.7")
        let logger = Logger(label: "ferry.test.announce")
        #expect(try hosts.learnedPort(of: mac.description, bridge: "br0", in: bridgeNS) == nil)

        let sentFromSource = try NetworkNamespaces.run(in: sourceNS) {
            try GratuitousARP.announce(
                interface: "ferry0", mac: mac, ip: guestIP, rounds: 2, initialDelayMs: 20, stepMs: 20, logger: logger)
        }
        #expect(sentFromSource == 2)
        #expect(try hosts.waitForLearnedPort(of: mac.description, bridge: "br0", in: bridgeNS, port: "s0") == "s0")

        let start = Date()
        let sentFromDestination = try NetworkNamespaces.run(in: destinationNS) {
            try GratuitousARP.announce(
                interface: "ferry0", mac: mac, ip: guestIP, rounds: 3, initialDelayMs: 20, stepMs: 30, logger: logger)
        }
        let elapsedMs = Date().timeIntervalSince(start) * 1000
        #expect(sentFromDestination == 3)
        #expect(elapsedMs >= 65, "gaps of 20 and 50 ms between the three frames; took \(elapsedMs) ms")
        #expect(try hosts.waitForLearnedPort(of: mac.description, bridge: "br0", in: bridgeNS, port: "d0") == "d0")

        // The test process itself never left its own namespace.
        #expect(if_nametoindex("ferry0") == 0)
    }
}
