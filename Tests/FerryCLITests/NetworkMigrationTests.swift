import FerryTestSupport
import Foundation
import Glibc
import Testing

/// A migration between two hosts: network namespaces `src` and `dst` joined by a Linux bridge in a
/// third namespace. The migration crosses the bridge, and after resume the destination's
/// gratuitous ARPs move the guest's MAC from the source's bridge port to the destination's.
@Suite(
    .serialized, .tags(.namespaces), .skippable(.namespaces),
    .enabled(if: FerryProcess.built.met, FerryProcess.built.why)) struct NetworkMigrationTests
{
    @Test(.enabled(if: Requirement.namespaces.met, Requirement.namespaces.why))
    func guestMACMovesToTheDestinationPort() throws {
        let id = getpid() % 100_000
        let br = "fcb-\(id)"
        let src = "fcs-\(id)"
        let dst = "fcd-\(id)"
        let (hosts, _) = try NetworkNamespaces.bridged(bridgeNamespace: br, hosts: [src, dst], subnet: "10.77.0")
        defer { hosts.remove() }

        let mac = "02:fe:77:00:00:09"
        let guestIP = "10.77.0.50"
        let scratch = Scratch("netns")
        let image = scratch.file("source.img")
        let received = scratch.file("received.img")
        #expect(try FerryProcess.run(["image", "create", image, "--size", "32M"]).status == 0)

        // The guest lives on the source host: the bridge learns its MAC on the source port.
        let before = try FerryProcess.run(
            ["announce", "--dev", "eth0", "--guest-mac", mac, "--guest-ip", guestIP, "--rounds", "1"],
            prefix: hosts.exec(in: src))
        #expect(before.status == 0, "\(before.stderr)")
        #expect(try hosts.learnedPort(of: mac, bridge: "br0", in: br) == "p0")

        let receiver = try FerryProcess(
            [
                "receive", "--listen", "10.77.0.2:7700", "--image", received, "--announce-dev", "eth0",
                "--accept-timeout", "60s",
            ], prefix: hosts.exec(in: dst))
        #expect(receiver.waitForStderrLine(containing: "listening on") != nil)
        let sender = try FerryProcess.run(
            [
                "send", "--image", image, "--to", "10.77.0.2:7700", "--workload", "uniform:20MB/s",
                "--guest-mac", mac, "--guest-ip", guestIP,
            ], prefix: hosts.exec(in: src))
        let receiverOutcome = receiver.wait()
        #expect(sender.status == 0, "\(sender.stderr)")
        #expect(receiverOutcome.status == 0, "\(receiverOutcome.stderr)")
        #expect(receiverOutcome.stdout.contains("gratuitous ARP frames for \(mac)"))
        #expect(
            try hosts.learnedPort(of: mac, bridge: "br0", in: br) == "p1",
            "after the migration the bridge must forward the guest's MAC to the destination's port")
        #expect(try filesEqual(image, received))
    }
}
