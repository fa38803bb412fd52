import ArgumentParser
import FerryCodec
import FerryGuest
import FerryGuestMigration
import FerryKVM
import FerryKVMMigration
import FerryMigration
import FerryProtocol
import FerrySystem
import FerryTransport
import Foundation
import Logging

struct SendCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "send",
        abstract: "Run a guest on an image and live-migrate it to a destination agent.",
        discussion: """
            The guest's vCPUs start writing to the image right away and keep running during pre-copy. \
            If the migration fails before the destination has verified everything, the guest keeps running \
            here; ferry then stops it cleanly (its image stays consistent) and exits non-zero.
            """)

    @Option(help: "Guest memory image (mapped shared; the guest writes to it).")
    var image: String

    @Option(
        help: ArgumentHelp(
            "The destination agent (its ferry receive --listen); a port alone means 127.0.0.1.", valueName: "host:port")
    )
    var to: String

    @OptionGroup(title: "Guest") var guestOptions: SendGuestOptions

    @OptionGroup(title: "Disk") var disk: DiskOptions

    @OptionGroup(title: "Convergence") var convergence: ConvergenceOptions

    @OptionGroup(title: "Transfer") var transfer: TransferOptions

    @OptionGroup(title: "Faults and timeouts") var faults: FaultOptions

    @OptionGroup(title: "Security") var security: SecurityOptions

    @OptionGroup(title: "Output") var output: OutputOptions

    /// The workload's form, the destination's address, the guest's name and identity are checked
    /// with the other options (a usage error, exit 2), before the image is mapped or the guest starts.
    func validate() throws {
        try usageCheck("--to", to) { _ = try Endpoint.parse($0, defaultHost: EndpointOption.defaultHost) }
        if let guestMAC = guestOptions.guestMAC {
            try usageCheck("--guest-mac", guestMAC) { _ = try MACAddress.parse($0) }
        }
        if let guestIP = guestOptions.guestIP {
            try usageCheck("--guest-ip", guestIP) { _ = try IPv4Address.parse($0) }
        }
        if let name = guestOptions.name, let problem = GuestName.problem(name) {
            throw ValidationError("--name \(name): \(problem)")
        }
        if let blackoutTimeout = faults.blackoutTimeout, blackoutTimeout.milliseconds < 1 {
            throw ValidationError(
                "--blackout-timeout \(blackoutTimeout): must be more than 0 (it bounds the blackout; a guest cannot pause for no time)"
            )
        }
        switch guestOptions.guest {
        case "builtin":
            try validateWorkload(guestOptions.workload)
        case "kvm":
            do throws(KVMError) {
                _ = try KVMGuestParameters(
                    workload: guestOptions.workload == "idle" ? "kvm" : guestOptions.workload, seed: guestOptions.seed,
                    vcpus: guestOptions.vcpus)
            } catch {
                throw ValidationError("--workload \(guestOptions.workload): \(error.message)")
            }
        default:
            throw ValidationError("--guest \(guestOptions.guest): give builtin or kvm")
        }
    }

    func run() throws {
        runReporting(output, role: "source") { draft in
            let logger = output.makeLogger("ferry.send")
            let cancellation = OperatorSignals.cancelMigration(role: .source)
            draft.describe(image: image, vcpus: guestOptions.vcpus, workload: guestOptions.workload)
            let endpoint = try Endpoint.parse(to, defaultHost: EndpointOption.defaultHost)
            let guestName = guestOptions.name ?? GuestName.sanitized(defaultGuestName(image: image))
            if let problem = GuestName.problem(guestName) {
                throw CommandError.configuration("--name \(guestName): \(problem)")
            }
            let connectionSecurity = try security.make()
            let mac = try guestOptions.guestMAC.map { try MACAddress.parse($0) } ?? .none
            let ip = try guestOptions.guestIP.map { try IPv4Address.parse($0) }
            guard ImageFile.exists(path: image) else {
                throw CommandError.configuration(
                    "--image \(image): no such file; create a test image with `ferry image create \(image) --size 1G`")
            }
            let size = try ImageFile.size(path: image)
            draft.minimal.imageBytes = UInt64(max(size, 0))
            guard size > 0, size % systemPageSize == 0 else {
                throw CommandError.configuration(
                    "image \(image) is \(size) bytes: must be a positive multiple of the page size \(systemPageSize)")
            }
            let lock = try ImageLock.acquire(path: image)  // before the guest writes a byte
            defer { lock.release() }
            let region = try MappedRegion.mapFile(path: image, writable: true)
            // Like a VMM's guest RAM, the image is resident before the guest runs: its pages are
            // faulted in once here instead of one fault per page during round 0.
            let holes = try SourceAgent.faultIn(region, path: image, pageSize: systemPageSize)
            let migratable = try startGuest(memory: region.base, size: size, logger: logger)
            // The guest's rate before the migration is measured over --run-before.
            let progressBefore = GuestProgressSample.now(migratable.progressSteps)
            if guestOptions.runBefore.seconds > 0 { cancellation.sleep(seconds: guestOptions.runBefore.seconds) }
            var options = SourceOptions(
                destination: endpoint, settings: convergence.settings, compression: transfer.compress,
                tracker: transfer.tracker,
                batchBytes: transfer.batchBytes.bytes, guestName: guestName, guestMAC: mac, guestIPv4: ip?.value ?? 0,
                name: hostName(),
                maxBandwidth: transfer.maxBandwidth?.bytesPerSecond(pageSize: systemPageSize),
                streams: transfer.streams,
                resume: !faults.noResume, reconnectAttempts: faults.reconnectAttempts)
            options.handoffTimeout = faults.handoffTimeout.duration
            options.stallTimeout = faults.stallTimeout.duration
            options.blackoutTimeout = faults.blackoutTimeout?.duration
            options.security = connectionSecurity
            options.imageHoles = holes
            options.cancellation = cancellation
            options.progressBefore = progressBefore
            let agent = SourceAgent(
                guest: migratable, imagePath: image, options: options, logger: logger,
                progress: Terminal.progressHandler(quiet: output.quiet))
            draft.engineReport = { agent.lastReport }
            do {
                let report = try agent.migrate()
                HumanOutput.print(report.text())  // clears the progress line first
                OperatorSignals.noteLateSignal(role: .source)
                return report
            } catch let error as MigrationError where error.guest == .source {
                let steps =
                    try (migratable as? BuiltinMigratableGuest)?.shutdown() ?? (migratable as? KVMMigratableGuest)?
                    .shutdown() ?? migratable.stopForHandover()
                draft.engineReport = { agent.lastReport.map { $0.stoppedAt(steps) } }
                try region.sync()
                // The library's "the guest keeps running on the source" holds until this process
                // exits; ferry then stops the guest, so the line says what is true once it is gone.
                throw CommandError.failed(
                    error,
                    where: (error.code == .cancelled ? "the destination was told to discard (ABORT cancelled); " : "")
                        + "the guest ran on the source until now and was stopped cleanly after \(steps.reduce(0, +)) steps; \(image) is consistent"
                )
            }
        }
    }
}

extension SendCommand {
    /// Starts the `--guest` kind on the image's mapping `memory`: its vCPUs write from now on.
    func startGuest(memory: UnsafeMutableRawPointer, size: Int, logger: Logger) throws -> any MigratableGuest {
        if guestOptions.guest == "kvm" {
            if disk.disk != nil {
                throw CommandError.configuration(
                    "--disk is for --guest builtin in ferry send (the KVM guest's disk: docs/disk.md)")
            }
            let parameters = try KVMGuestParameters(
                workload: guestOptions.workload == "idle" ? "kvm" : guestOptions.workload, seed: guestOptions.seed,
                vcpus: guestOptions.vcpus)
            let kvm = try KVMGuest(memory: memory, size: size, parameters: parameters, logger: logger) { line in
                HumanOutput.print(line.text)
            }
            kvm.start()
            return KVMMigratableGuest(kvm)
        }
        guard guestOptions.guest == "builtin" else {
            throw CommandError.configuration("--guest \(guestOptions.guest): give builtin or kvm")
        }
        let setup = try GuestSetup.make(
            workload: guestOptions.workload, vcpus: guestOptions.vcpus, seed: guestOptions.seed,
            pageSize: systemPageSize, pageCount: size / systemPageSize)
        let builtin = try Guest(memory: memory, size: size, configuration: setup.configuration, logger: logger)
        let writer = try disk.boot(for: builtin, seed: guestOptions.seed, logger: logger)
        builtin.start()
        writer?.start()
        return BuiltinMigratableGuest(builtin, setup: setup, memory: memory, disk: writer)
    }
}

func hostName() -> String {
    var buffer = [CChar](repeating: 0, count: 256)
    gethostname(&buffer, buffer.count)
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

extension TrackerChoice: ExpressibleByArgument {}
extension CompressionChoice: ExpressibleByArgument {}

/// The file name of `image` without its directory and last extension ("/x/vm-1.img" → "vm-1").
func defaultGuestName(image: String) -> String {
    let file = image.split(separator: "/").last.map(String.init) ?? image
    guard let dot = file.lastIndex(of: "."), dot != file.startIndex else { return file }
    return String(file[..<dot])
}

/// `ferry send`'s guest options.
struct SendGuestOptions: ParsableArguments {
    @Option(
        help:
            "Which guest: builtin (vCPU threads writing the image) or kvm (a KVM VM booted on the image, running Tools/kvm-guest; its console lines go to stdout; needs /dev/kvm)."
    )
    var guest = "builtin"

    @Option(
        help:
            "Guest workload: idle, uniform:RATE, hotset:RATE,HOT%,SHARE%, sweep:RATE or trace:FILE (RATE like 200MB/s or 50000pages/s). With --guest kvm: kvm[:RATE][,steps=N][,interval=N][,journal=N] (e.g. kvm:120MB/s,steps=500000; journal=N: steps between disk records)."
    )
    var workload = "idle"

    @Option(help: "Number of vCPU threads (1-64).", transform: NumberOption.count(1...64))
    var vcpus = 2

    @Option(help: "Workload seed.")
    var seed: UInt64 = 1

    @Option(
        name: .customLong("run-before"),
        help: "Let the guest run this long before migrating (e.g. 1s; at most 30 days).",
        transform: { try DurationOption.parse($0) })
    var runBefore = DurationOption(seconds: 0)

    @Option(
        help:
            "The guest's name, sent to the destination (a destination started with --serve stores it as NAME.img; default: the image's file name without its extension)."
    )
    var name: String?

    @Option(name: .customLong("guest-mac"), help: "The guest's MAC address, announced by the destination after resume.")
    var guestMAC: String?

    @Option(name: .customLong("guest-ip"), help: "The guest's IPv4 address, announced with its MAC.")
    var guestIP: String?
}

/// `ferry send`'s convergence options.
struct ConvergenceOptions: ParsableArguments {
    @Option(
        name: .customLong("downtime-ms"), help: "Largest acceptable blackout in milliseconds (0 to 3600000, i.e. 1 h).",
        transform: NumberOption.real(0...3_600_000, unit: "ms"))
    var downtimeMs = 50.0

    @Option(
        name: .customLong("max-rounds"), help: "Give up after this many pre-copy rounds (1-10000).",
        transform: NumberOption.count(1...10_000))
    var maxRounds = 30

    @Option(
        help: "Give up after this long (e.g. 300s, 5m; at most 30 days).", transform: { try DurationOption.parse($0) })
    var timeout = DurationOption(seconds: 300, text: "300s")

    @Flag(
        name: .customLong("force-switchover"),
        help: "At --max-rounds or --timeout, switch over anyway instead of giving up.")
    var forceSwitchover = false

    @Flag(name: .customLong("no-auto-converge"), help: "Never slow the vCPUs down.")
    var noAutoConverge = false

    @Option(
        name: .customLong("max-throttle"),
        help: "Slow the vCPUs down by at most this many percent while they outpace the link (1-99).",
        transform: NumberOption.count(1...99))
    var maxThrottle = 99

    @Flag(
        name: .customLong("postcopy"),
        help: ArgumentHelp(
            "Allow post-copy: hand the guest over before its memory converged and send its stale pages after it, when that costs the guest less than throttling would, or instead of giving up.",
            discussion:
                "Only with a destination that offers it (its image on tmpfs). The blackout then holds no pages. A cut connection during post-copy is resumed; a source that dies or stays unreachable past the destination's --resume-timeout loses the guest: docs/postcopy.md."
        ))
    var postcopy = false

    @Option(
        name: .customLong("postcopy-after"),
        help: ArgumentHelp(
            "Allow post-copy (as --postcopy), and switch to it after this many pre-copy rounds without converging at the latest (1-10000).",
            discussion: "docs/postcopy.md."),
        transform: NumberOption.count(1...10_000))
    var postcopyAfter: Int?

    /// The settings these options give.
    var settings: ConvergenceSettings {
        ConvergenceSettings(
            downtimeTarget: .milliseconds(downtimeMs), maxRounds: maxRounds, timeout: timeout.duration,
            autoConverge: !noAutoConverge, forceSwitchover: forceSwitchover, throttleMax: maxThrottle,
            postcopy: postcopy || postcopyAfter != nil ? PostcopySettings(afterRounds: postcopyAfter) : nil)
    }
}

/// `ferry send`'s transfer options.
struct TransferOptions: ParsableArguments {
    @Option(
        help:
            "TCP connections carrying pages, each with its own encoding thread (1-16; default: one per core, at most 4).",
        transform: NumberOption.count(1...16))
    var streams = SourceOptions.defaultStreams

    @Option(
        name: .customLong("max-bandwidth"),
        help:
            "Most the page streams may put on the wire, in bytes or bits per second: 100MB/s, 1GB/s, 800Mbit/s, 100Mb/s (default: no limit).",
        transform: RateOption.bandwidth)
    var maxBandwidth: Rate?

    @Option(help: "Page compression: auto (per batch, whichever of LZ4 and raw measures cheaper), lz4 or none.")
    var compress: CompressionChoice = .auto

    @Option(help: "Dirty tracker: auto, uffd (userfaultfd write-protect + PAGEMAP_SCAN) or mprotect (SIGSEGV).")
    var tracker: TrackerChoice = .auto

    @Option(
        name: .customLong("batch-bytes"),
        help: ArgumentHelp(
            "Send a page batch once its payload reaches this size, like 512KiB or 2MiB (64KiB-16MiB).",
            valueName: "size"),
        transform: SizeOption.within(64 << 10, 16 << 20, "64KiB to 16MiB"))
    var batchBytes = SizeOption(bytes: 1 << 20, text: "1MiB")
}

/// `ferry send`'s faults and timeouts options.
struct FaultOptions: ParsableArguments {
    @Option(
        name: .customLong("reconnect-attempts"),
        help:
            "If the connection is lost during pre-copy, reconnect up to this many times (backoff 0.25 s doubling, at most 4 s) and resume with the pages the destination does not hold (1-1000).",
        transform: NumberOption.count(1...1000))
    var reconnectAttempts = 6

    @Flag(name: .customLong("no-resume"), help: "Give up at once when the connection is lost, instead of reconnecting.")
    var noResume = false

    @Option(
        name: .customLong("stall-timeout"),
        help:
            "A write to the destination that makes no progress for this long counts as a lost connection (a silent partition); during pre-copy the source then reconnects and resumes (default 10s; at most 30 days).",
        transform: { try DurationOption.parse($0) })
    var stallTimeout = DurationOption(seconds: 10, text: "10s")

    @Option(
        name: .customLong("handoff-timeout"),
        help:
            "When the destination's RESUMED does not arrive after COMMIT, how long to keep asking it where the guest is (and to re-send a lost COMMIT) before reporting the outcome as unresolved (default 60s; at most 30 days).",
        transform: { try DurationOption.parse($0) })
    var handoffTimeout = DurationOption(seconds: 60, text: "60s")

    @Option(
        name: .customLong("blackout-timeout"),
        help:
            "The hard limit on the blackout, from pausing the vCPUs to the destination's VERIFIED: when it passes, the guest resumes here and the destination is told to discard (default: 20 × --downtime-ms, at least 1s)."
    )
    var blackoutTimeout: DurationOption?
}
