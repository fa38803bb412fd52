import ArgumentParser
import FerryCodec
import FerryGuest
import FerryGuestMigration
import FerryKVMMigration
import FerryMigration
import FerrySystem
import FerryTransport
import FerryVMM
import Foundation
import Logging

struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Migrate a running guest on loopback and check that it equals a guest that never migrated.",
        discussion: """
            Generates an image, starts a destination agent and a source agent in this process, runs a \
            guest that keeps dirtying memory, migrates it, lets it run on at the destination, then replays \
            the same workload for the same steps per vCPU on a fresh copy of the image (no migration) and \
            compares the two images byte for byte.
            """)

    @Option(
        help: "Image size (a multiple of the page size, at most 1 TiB).",
        transform: SizeOption.within(1, 1 << 40, "a positive size up to 1 TiB, like 1G"))
    var size = SizeOption(bytes: 1 << 30, text: "1G")

    @Option(help: "Guest workload while migrating.")
    var workload = "uniform:200MB/s"

    @Option(help: "Number of vCPUs (1-64).", transform: NumberOption.count(1...64))
    var vcpus = 2

    @Option(help: "Directory for the images (tmpfs is best).")
    var dir = "/dev/shm/ferry-demo"

    @Option(
        name: .customLong("downtime-ms"), help: "Downtime target in milliseconds (0 to 3600000, i.e. 1 h).",
        transform: NumberOption.real(0...3_600_000, unit: "ms"))
    var downtimeMs = 50.0

    @Option(help: "Dirty tracker: auto, uffd or mprotect.")
    var tracker: TrackerChoice = .auto

    @Option(help: "Page compression: auto (per batch, whichever of LZ4 and raw measures cheaper), lz4 or none.")
    var compress: CompressionChoice = .auto

    @Option(
        name: .customLong("run-before"), help: "Let the guest run this long before migrating (at most 30 days).",
        transform: { try DurationOption.parse($0) })
    var runBefore = DurationOption(seconds: 0.5, text: "500ms")

    @Option(
        name: .customLong("run-for"),
        help: "Let the guest run this long on the destination after resume (at most 30 days).",
        transform: { try DurationOption.parse($0) })
    var runFor = DurationOption(seconds: 0.5, text: "500ms")

    @Flag(
        help:
            "Authenticate and encrypt the connections with a fresh random key (cipher chosen as for ferry send --encrypt)."
    )
    var encrypt = false

    @Flag(help: "Keep the images afterwards.")
    var keep = false

    @Option(
        help:
            "Which guest: builtin (vCPU threads writing the image) or kvm (a KVM VM running Tools/kvm-guest, tracked by KVM's dirty log; needs /dev/kvm)."
    )
    var guest = "builtin"

    @Option(
        help: "With --guest kvm: pages the guest dirties per second (e.g. 120MB/s).",
        transform: { text in
            _ = try RateOption.parse(text)
            return text
        })
    var rate = "120MB/s"

    @Option(
        help:
            "With --guest kvm: steps per vCPU before the guest halts (default: from the rate, so it runs ~2 s on the destination).",
        transform: { UInt64(try NumberOption.count(1...Int.max)($0)) })
    var steps: UInt64?

    @Option(
        help: "With --guest kvm: steps between console lines.",
        transform: { UInt64(try NumberOption.count(1...Int.max)($0)) })
    var interval: UInt64 = 4096

    func validate() throws {
        if guest != "builtin" && guest != "kvm" { throw ValidationError("--guest must be builtin or kvm") }
        if guest == "builtin" { try validateWorkload(workload) }
    }

    @OptionGroup var output: OutputOptions

    func run() throws {
        runReporting(output, role: "source") { draft in
            let logger = output.makeLogger("ferry.demo")
            let bytes = size.bytes
            draft.describe(image: "", vcpus: vcpus, workload: guest == "kvm" ? "kvm:\(rate)" : workload)
            draft.minimal.imageBytes = UInt64(bytes)
            if guest == "kvm" {
                return try KVMDemo(
                    bytes: bytes, rate: rate, vcpus: vcpus, dir: dir, downtimeMs: downtimeMs, compress: compress,
                    runBefore: runBefore.seconds,
                    runAfter: 2, steps: steps, interval: interval, keep: keep, quiet: output.quiet
                ).run(logger: logger, draft: draft)
            }
            guard bytes > 0, bytes % systemPageSize == 0 else {
                throw GuestError(
                    .invalidSize, "--size \(size): must be a positive multiple of the page size \(systemPageSize)")
            }
            let files = try DemoImages(directory: dir, prefix: "")
            defer { files.finish(removing: !keep) }
            let (source, destination, reference) = (files.source, files.destination, files.reference)
            draft.minimal.image = source

            Terminal.note(
                "demo: \(size) image in \(dir), workload \(workload) on \(vcpus) vCPU(s), downtime target \(Int(downtimeMs)) ms"
            )
            try files.generate(bytes: bytes)

            // Destination agent on its own thread.
            let security = encrypt ? ConnectionSecurity(key: SharedKey.random(), encrypt: true) : .none
            var destinationOptions = DestinationOptions(
                listen: try Endpoint.parse("127.0.0.1:0"), imagePath: destination,
                runFor: runFor.duration, acceptTimeout: .milliseconds(30_000),
                preallocateBytes: bytes, guestKinds: .ferry)
            destinationOptions.security = security
            let destinationAgent = DestinationAgent(options: destinationOptions, logger: logger, progress: nil)
            let port = try destinationAgent.bind()
            let destinationOutcome = BackgroundThread { try destinationAgent.run() }

            // Source: the guest starts dirtying memory, then migrates.
            let region = try MappedRegion.mapFile(path: source, writable: true)
            let holes = try SourceAgent.faultIn(region, path: source, pageSize: systemPageSize)
            let setup = try GuestSetup.make(
                workload: workload, vcpus: vcpus, seed: 7, pageSize: systemPageSize,
                pageCount: bytes / systemPageSize)
            let guest = try Guest(memory: region.base, size: bytes, configuration: setup.configuration, logger: logger)
            guest.start()
            MonotonicClock.sleep(seconds: runBefore.seconds)
            var sourceOptions = SourceOptions(
                destination: try Endpoint.parse("127.0.0.1:\(port)"),
                settings: ConvergenceSettings(downtimeTarget: .milliseconds(downtimeMs)),
                compression: compress, tracker: tracker)
            sourceOptions.security = security
            sourceOptions.imageHoles = holes
            let sourceAgent = SourceAgent(
                memory: region.base, size: bytes, imagePath: source, guest: guest, guestSetup: setup,
                options: sourceOptions,
                logger: logger, progress: Terminal.progressHandler(quiet: output.quiet))
            draft.engineReport = { sourceAgent.lastReport }
            let sourceReport: MigrationReport
            do {
                sourceReport = try sourceAgent.migrate()
            } catch {
                _ = guest.stop()
                _ = try? destinationOutcome.wait()
                throw error
            }
            let result = try destinationOutcome.wait()
            Terminal.clearProgress()
            HumanOutput.print(sourceReport.text())
            HumanOutput.print("")
            HumanOutput.print(result.report.text())

            try checkTransparency(
                setup: setup, steps: result.outcome.vcpuSteps, reference: reference, destination: destination,
                bytes: bytes, logger: logger)
            printSummary(bytes: bytes, sourceReport: sourceReport)
            return sourceReport
        }
    }

    /// Transparency: the same workload, the same steps per vCPU, no migration; the destination's
    /// image must equal the reference's byte for byte.
    private func checkTransparency(
        setup: GuestSetup, steps: [UInt64], reference: String, destination: String, bytes: Int, logger: Logger
    ) throws {
        let checkStart = MonotonicClock.now()
        try Transparency.runReference(imagePath: reference, setup: setup, steps: steps, logger: logger)
        let difference = try Transparency.difference(between: destination, and: reference)
        HumanOutput.print("")
        let seconds = String(format: "%.2f s", MonotonicClock.seconds(since: checkStart))
        if let difference {
            throw TransparencyFailure(description: "transparency check FAILED: \(difference)")
        }
        HumanOutput.print(
            "transparency check: passed — \(destination) equals a guest that never migrated (\(bytes) bytes, vCPU steps \(steps.map(String.init).joined(separator: ",")), checked in \(seconds))"
        )
    }

    private func printSummary(bytes: Int, sourceReport: MigrationReport) {
        let verdict = sourceReport.downtimeMs <= downtimeMs ? "within" : "OVER"
        HumanOutput.print(
            String(
                format:
                    "demo: migrated %.2f GB in %.0f ms, %d rounds, downtime %.2f ms (%@ the %.0f ms target), %.1f MB on the wire",
                Double(bytes) / 1e9, sourceReport.totalMs, sourceReport.rounds, sourceReport.downtimeMs,
                verdict, downtimeMs, Double(sourceReport.wireBytes) / 1e6))
    }
}

/// The demo's three images in its directory: the source's, the destination's and the reference
/// (a copy of the original for the run that never migrates). The source and the reference are
/// locked (`ImageLock`) before anything in the directory is touched, so a second demo in the
/// same directory is refused, naming the first; the destination agent locks the destination's.
/// Leftovers of an earlier demo are removed when it is made.
struct DemoImages {
    let source: String
    let destination: String
    let reference: String
    private let locks: [ImageLock]

    init(directory: String, prefix: String) throws {
        mkdir(directory, 0o755)
        source = directory + "/\(prefix)source.img"
        destination = directory + "/\(prefix)destination.img"
        reference = directory + "/\(prefix)reference.img"
        let sourceLock = try ImageLock.acquire(path: source, create: true)
        do {
            locks = [sourceLock, try ImageLock.acquire(path: reference, create: true)]
            for path in [destination + ".partial", destination] where ImageFile.exists(path: path) {
                if let conflict = ImageLock.conflict(path: path) { throw conflict }
                try ImageFile.remove(path: path)
            }
        } catch {
            sourceLock.release(removingFile: sourceLock.createdFile)
            throw error
        }
    }

    /// Writes the same deterministic image to the source and the reference (over the locked,
    /// empty files: the same inodes, truncated and filled).
    func generate(bytes: Int) throws {
        for path in [source, reference] {
            try ImageGenerator.create(
                path: path, size: bytes, mix: .standard, seed: 1, pageSize: systemPageSize, overwrite: true
            ) { done in
                Terminal.progress(String(format: "[image] %@ %.0f%%", path, Double(done) * 100 / Double(bytes)))
            }
        }
        Terminal.clearProgress()
    }

    /// Removes the images when `removing` (else keeps them), then gives the locks up.
    func finish(removing: Bool) {
        if removing {
            for path in [source, destination, reference] { try? ImageFile.remove(path: path) }
        }
        for lock in locks { lock.release() }
    }
}
