import ArgumentParser
import FerryProtocol
import FerryTransport
import Foundation

struct AnnounceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "announce",
        abstract: "Send gratuitous ARPs for a guest by hand (what `ferry receive --announce-dev` does after resume).")

    @Option(help: "Interface to send on.")
    var dev: String

    @Option(name: .customLong("guest-mac"), help: "The guest's MAC address.")
    var guestMAC: String

    @Option(name: .customLong("guest-ip"), help: "The guest's IPv4 address.")
    var guestIP: String

    @Option(
        help: "Number of frames (1-100; gaps grow from 50 ms by 100 ms, as QEMU's announce).",
        transform: NumberOption.count(1...100))
    var rounds = 5

    @OptionGroup var output: OutputOptions

    func validate() throws {
        try usageCheck("--guest-mac", guestMAC) { _ = try MACAddress.parse($0) }
        try usageCheck("--guest-ip", guestIP) { _ = try IPv4Address.parse($0) }
    }

    func run() throws {
        runReportingErrors {
            let logger = output.makeLogger("ferry.announce")
            let mac = try MACAddress.parse(guestMAC)
            let ip = try IPv4Address.parse(guestIP)
            let sent = try GratuitousARP.announce(interface: dev, mac: mac, ip: ip, rounds: rounds, logger: logger)
            print("sent \(sent) gratuitous ARP frame(s) for \(mac) / \(ip) on \(dev)")
        }
    }
}
