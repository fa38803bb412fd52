import ArgumentParser
import FerryGuest
import FerryGuestMigration
import FerryKVMMigration
import FerryMigration
import FerryProtocol
import FerrySystem
import FerryTransport
import FerryVMM
import Foundation
import Logging

struct ReceiveCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "receive",
        abstract: "Receive live migrations, verify them, and run the guests here.",
        discussion: """
            Pages are written to IMAGE.partial; only after every page hash and the image digest verify \
            and the source commits is it renamed to IMAGE and the guest resumed. On failure the partial \
            image is removed.

            With --image, one guest is received; other sources that connect meanwhile are refused as \
            busy. With --serve DIR, up to --max-sessions guests are received at a time, each into \
            DIR/NAME.img (NAME from ferry send --name); the agent runs until --sessions migrations \
            have ended (default: forever) and prints one line per migration.
            """)

    @Option(
        help: ArgumentHelp(
            "Address to listen on: 0.0.0.0:PORT for every interface; a port alone means 127.0.0.1.",
            valueName: "host:port"))
    var listen = "127.0.0.1:7700"

    @Option(help: "Where the guest's memory image goes (receive one guest).")
    var image: String?

    @Option(help: ArgumentHelp("Receive several guests into this directory, each as NAME.img.", valueName: "dir"))
    var serve: String?

    @Flag(help: "Overwrite an existing image.")
    var force = false

    @Option(
        help:
            "Create and fault in an image of this size before listening (like QEMU's prealloc=on), so the migration does not pay for fresh memory; e.g. 2G.",
        transform: SizeOption.within(1, 1 << 50, "a positive size up to 1 PiB, like 2G"))
    var prealloc: SizeOption?

    @OptionGroup(title: "Serving several guests") var serving: ServeOptions

    @OptionGroup(title: "The guest after its resume") var resumed: ResumedGuestOptions

    @OptionGroup(title: "Timeouts") var timeouts: ReceiveTimeoutOptions

    @OptionGroup(title: "Security") var receiveSecurity: ReceiveSecurityOptions

    @OptionGroup(title: "Output") var output: OutputOptions

    /// Options that do not go together and addresses that do not parse are usage errors (exit 2),
    /// before anything listens or is created.
    func validate() throws {
        guard (image == nil) != (serve == nil) else {
            throw ValidationError("give either --image PATH (one guest) or --serve DIR (several guests)")
        }
        if serve != nil && prealloc != nil { throw ValidationError("--prealloc works with --image only") }
        if timeouts.stallTimeout.seconds < 0.1 {
            throw ValidationError("--stall-timeout \(timeouts.stallTimeout.text): give at least 100ms (e.g. 60s)")
        }
        try SecurityOptions.validate(
            keyFile: receiveSecurity.keyFile, encrypt: receiveSecurity.requireEncryption, cipher: "auto",
            encryptFlag: "--require-encryption")
        try usageCheck("--listen", listen) { _ = try Endpoint.parse($0, defaultHost: EndpointOption.defaultHost) }
        if let guestMAC = resumed.guestMAC { try usageCheck("--guest-mac", guestMAC) { _ = try MACAddress.parse($0) } }
        if let guestIP = resumed.guestIP { try usageCheck("--guest-ip", guestIP) { _ = try IPv4Address.parse($0) } }
    }

    func run() throws {
        runReporting(output, role: "destination") { draft in
            let logger = output.makeLogger("ferry.receive")
            let cancellation = OperatorSignals.cancelMigration(role: .destination)
            draft.minimal.image = image ?? ""
            if let image {
                try checkWritableDirectory(ImageFile.parentDirectory(of: image), for: "--image \(image)")
            }
            if let serve { try checkWritableDirectory(serve, for: "--serve \(serve)") }
            let connectionSecurity = try SecurityOptions.make(
                keyFile: receiveSecurity.keyFile, encrypt: receiveSecurity.requireEncryption, cipher: "auto",
                encryptFlag: "--require-encryption")
            var options = DestinationOptions(
                listen: try Endpoint.parse(listen, defaultHost: EndpointOption.defaultHost), imagePath: image ?? "",
                force: force,
                runFor: resumed.runFor.duration, announceInterface: resumed.announceDev,
                guestMAC: try resumed.guestMAC.map { try MACAddress.parse($0) },
                guestIPv4: try resumed.guestIP.map { try IPv4Address.parse($0) },
                acceptTimeout: timeouts.acceptTimeout?.duration, receiveTimeout: timeouts.stallTimeout.duration,
                name: hostName(), preallocateBytes: prealloc?.bytes,
                resumeTimeout: timeouts.resumeTimeout.duration, guestKinds: .ferry)
            options.handoffTimeout = timeouts.handoffTimeout.duration
            options.security = connectionSecurity
            options.cancellation = cancellation
            if let warning = Self.keylessWarning(listen: options.listen, security: connectionSecurity) {
                Terminal.note(warning)
            }
            // A guest's console (the KVM guest's) continues here after its resume.
            options.consoleLine = { line in HumanOutput.print(line.text) }
            if let serve {
                try runServer(options: options, directory: serve, logger: logger, draft: draft)
                return nil
            }
            let agent = DestinationAgent(
                options: options, logger: logger, progress: Terminal.progressHandler(quiet: output.quiet))
            draft.engineReport = { agent.lastReport }
            if let prealloc { Terminal.note("preallocating \(prealloc) at \(options.imagePath).partial ...") }
            let port = try agent.bind()
            if prealloc != nil { Terminal.note(String(format: "preallocated in %.0f ms", agent.prepareSeconds * 1000)) }
            Terminal.note("listening on \(options.listen.host):\(port), image \(options.imagePath)")
            let result = try agent.run()
            Terminal.clearProgress()
            HumanOutput.print(result.report.text())
            OperatorSignals.noteLateSignal(role: .destination)
            return result.report
        }
    }

    /// Without `--key-file`, on an address other hosts can reach: anyone who can connect may send
    /// this agent a guest, query it, or settle a handoff (issue 11). Nil on loopback or with a key.
    static func keylessWarning(listen: Endpoint, security: ConnectionSecurity) -> String? {
        guard security.key == nil else { return nil }
        let host =
            listen.host.hasPrefix("[") && listen.host.hasSuffix("]")
            ? String(listen.host.dropFirst().dropLast()) : listen.host
        let loopback =
            host == "localhost" || host == "::1" || (try? IPv4Address.parse(host)).map { $0.bytes[0] == 127 } == true
        guard !loopback else { return nil }
        return
            "warning: listening on \(host) without --key-file: anyone who can reach this port can send this agent a guest, "
            + "ask it with ferry status where migrations stand, or commit or discard one (like QEMU's migration without TLS); "
            + "give --key-file (make one with ferry keygen) and --require-encryption on networks you do not control"
    }

    private func runServer(options: DestinationOptions, directory: String, logger: Logger, draft: ReportDraft) throws {
        let document = ServeDocument(directory: directory, target: output.jsonTarget)
        draft.writesItsOwnReport = true
        do {
            let server = DestinationServer(
                options: options, directory: directory, maxSessions: serving.maxSessions, logger: logger)
            let port = try server.bind()
            Terminal.note(
                "listening on \(options.listen.host):\(port), serving \(directory) (at most \(serving.maxSessions) at a time)"
            )
            let outcomes = try server.run(count: serving.sessions) { outcome in
                switch outcome.result {
                case .success(let result):
                    let report = result.report
                    HumanOutput.print(
                        String(
                            format:
                                "guest %@: migrated into %@, downtime %.2f ms, total %.0f ms, %d rounds, verified, digest %@",
                            outcome.guestName, outcome.imagePath, report.downtimeMs, report.totalMs, report.rounds,
                            report.digest))
                case .failure(let error):
                    HumanOutput.print("guest \(outcome.guestName): failed: \(error)")
                }
                document.add(outcome.report, exitCode: outcome.result.failureExitCode)
            }
            if let failure = outcomes.compactMap({ if case .failure(let error) = $0.result { error } else { nil } })
                .first
            {
                throw failure
            }
        } catch {
            document.finish(failure: error, exitCode: ferry.exitCode(for: error))
            throw error
        }
        document.finish(failure: nil, exitCode: 0)
    }
}

/// Refuses, before an agent listens, a directory its images cannot be written into: a source
/// would otherwise be accepted and then fail on a reason nobody sees at the start.
func checkWritableDirectory(_ directory: String, for option: String) throws {
    var info = stat()
    guard stat(directory, &info) == 0 else {
        let reason = Errno.current
        throw CommandError.configuration(
            "\(option): the directory \(directory) cannot be used (\(reason)); create it or give another path")
    }
    guard info.st_mode & S_IFMT == S_IFDIR else {
        throw CommandError.configuration("\(option): \(directory) is not a directory")
    }
    guard access(directory, W_OK) == 0 else {
        let reason = Errno.current
        throw CommandError.configuration(
            "\(option): this agent cannot write into \(directory) (\(reason)); fix its permissions or give another path"
        )
    }
}

/// `ferry receive`'s options: several guests (--serve).
struct ServeOptions: ParsableArguments {
    @Option(
        name: .customLong("max-sessions"),
        help: "With --serve: migrations received at the same time (1-64); more sources are refused as busy.",
        transform: NumberOption.count(1...64))
    var maxSessions = 4

    @Option(
        help: "With --serve: exit after this many migrations have ended (default: run until stopped).",
        transform: NumberOption.count(1...Int.max))
    var sessions: Int?
}

/// `ferry receive`'s options: the guest after its resume.
struct ResumedGuestOptions: ParsableArguments {
    @Option(
        name: .customLong("run-for"),
        help:
            "Run the guest this long after resume, then stop it cleanly and flush the image (0: stop right after resume; a KVM guest is then not started at all). A KVM guest with a step limit (kvm:…,steps=N) ends earlier once all its vCPUs halted; its console lines go to stdout. At most 30 days.",
        transform: { try DurationOption.parse($0) })
    var runFor = DurationOption(seconds: 0)

    @Option(
        name: .customLong("announce-dev"), help: "Interface to announce the guest on with gratuitous ARP after resume.")
    var announceDev: String?

    @Option(name: .customLong("guest-mac"), help: "Override the guest MAC sent by the source.")
    var guestMAC: String?

    @Option(name: .customLong("guest-ip"), help: "Override the guest IPv4 address sent by the source.")
    var guestIP: String?
}

/// `ferry receive`'s options: timeouts.
struct ReceiveTimeoutOptions: ParsableArguments {
    @Option(
        name: .customLong("accept-timeout"),
        help: "Give up if no source connects within this time (default: wait forever; at most 30 days).",
        transform: { try DurationOption.parse($0) })
    var acceptTimeout: DurationOption?

    @Option(
        name: .customLong("resume-timeout"),
        help:
            "How long a migration whose connections were lost during pre-copy waits for its source to reconnect before it is discarded (0: discard at once; at most 30 days).",
        transform: { try DurationOption.parse($0) })
    var resumeTimeout = DurationOption(seconds: 30, text: "30s")

    @Option(
        name: .customLong("handoff-timeout"),
        help:
            "After the image verified, how long to wait for a source that lost its connection to come back with its COMMIT (or ABORT) before discarding the image (default 300s; longer than ferry send's --handoff-timeout, and time for an operator to decide with ferry status --commit/--discard; at most 30 days).",
        transform: { try DurationOption.parse($0) })
    var handoffTimeout = DurationOption(seconds: 300, text: "300s")

    @Option(
        name: .customLong("stall-timeout"),
        help:
            "How long the source may send nothing at all before its connection counts as lost (default 60s). During post-copy a source that stopped (SIGSTOP, a frozen host) is noticed so, and then has --resume-timeout to come back before the guest is lost.",
        transform: { try DurationOption.parse($0) })
    var stallTimeout = DurationOption(seconds: 60, text: "60s")
}

/// `ferry receive`'s options: security.
struct ReceiveSecurityOptions: ParsableArguments {
    @Option(
        name: .customLong("key-file"),
        help: ArgumentHelp(
            "Shared secret: a file of exactly 64 hex digits or 32 raw bytes, not all zero, mode 0600 (make one with `ferry keygen`). Sources must prove they hold the same key; others are refused.",
            valueName: "path"))
    var keyFile: String?

    @Flag(
        name: .customLong("require-encryption"),
        help: "Encrypt every connection even when the source did not ask for it (needs --key-file).")
    var requireEncryption = false
}
