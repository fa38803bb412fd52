import ArgumentParser
import FerryGuest
import FerryMigration
import FerryProtocol
import FerrySystem
import FerryTransport
import Foundation

struct ReceiveCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "receive",
        abstract: "Wait for one live migration, verify it, and run the guest here.",
        discussion: """
            Pages are written to IMAGE.partial; only after every page hash and the image digest verify \
            and the source commits is it renamed to IMAGE and the guest resumed. On failure the partial \
            image is removed.
            """)

    @Option(help: ArgumentHelp("Address to listen on.", valueName: "host:port"))
    var listen = "127.0.0.1:7700"

    @Option(help: "Where the guest's memory image goes.")
    var image: String

    @Flag(help: "Overwrite an existing image.")
    var force = false

    @Option(name: .customLong("run-for"), help: "Run the guest this long after resume, then stop it cleanly and flush the image (0: stop right after resume).")
    var runFor = "0"

    @Option(name: .customLong("announce-dev"), help: "Interface to announce the guest on with gratuitous ARP after resume.")
    var announceDev: String?

    @Option(name: .customLong("guest-mac"), help: "Override the guest MAC sent by the source.")
    var guestMAC: String?

    @Option(name: .customLong("guest-ip"), help: "Override the guest IPv4 address sent by the source.")
    var guestIP: String?

    @Option(help: "Create and fault in an image of this size before listening (like QEMU's prealloc=on), so the migration does not pay for fresh memory; e.g. 2G.")
    var prealloc: String?

    @Option(name: .customLong("accept-timeout"), help: "Give up if no source connects within this time (default: wait forever).")
    var acceptTimeout: String?

    @OptionGroup var output: OutputOptions

    func run() throws {
        runReportingErrors {
            let logger = output.makeLogger("ferry.receive")
            signal(SIGPIPE, SIG_IGN)
            let options = DestinationOptions(
                listen: try Endpoint.parse(listen), imagePath: image, force: force,
                runFor: try parseDuration(runFor, option: "--run-for"), announceInterface: announceDev,
                guestMAC: try guestMAC.map { try MACAddress.parse($0) }, guestIPv4: try guestIP.map { try IPv4Address.parse($0) },
                acceptTimeoutMs: try acceptTimeout.map { Int(try parseDuration($0, option: "--accept-timeout") * 1000) },
                name: hostName(), preallocateBytes: try prealloc.map { try parseByteSize($0) })
            let agent = DestinationAgent(options: options, logger: logger, progress: Terminal.progressHandler(quiet: output.quiet))
            if let prealloc { Terminal.note("preallocating \(prealloc) at \(image).partial ...") }
            let port = try agent.bind()
            if prealloc != nil { Terminal.note(String(format: "preallocated in %.0f ms", agent.prepareSeconds * 1000)) }
            Terminal.note("listening on \(options.listen.host):\(port), image \(image)")
            let result = try agent.run()
            Terminal.clearProgress()
            print(result.report.text())
            try Terminal.writeJSON(result.report, to: output.jsonPath)
        }
    }
}
