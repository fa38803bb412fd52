import FerryGuest
import FerryGuestMigration
import FerryKVM
import FerryKVMMigration
import FerryMigration
import FerrySystem
import FerryTransport
import FerryVMM
import Foundation
import Logging

/// `ferry demo --guest kvm`: a KVM guest dirtying memory migrates over loopback into a VM built
/// by the destination agent, runs there to its step limit, and is checked against the same
/// guest program run without migration (`KVMGuestReference`) on a fresh copy of the image: the
/// console lines (none lost or repeated, by step number), the final checksums and the working
/// area must be equal.
struct KVMDemo {
    var bytes: Int
    var rate: String
    var vcpus: Int
    var dir: String
    var downtimeMs: Double
    var compress: CompressionChoice
    var runBefore: Double
    /// Seconds the guest runs on at the destination before it reaches its step limit (roughly:
    /// the step limit is set from the rate and an estimate of the migration's length).
    var runAfter: Double
    var steps: UInt64?
    var interval: UInt64
    var keep: Bool
    var quiet: Bool

    /// Returns the source's report (`--json` writes it); `draft` learns the engine's as soon as there is one.
    func run(logger: Logger, draft: ReportDraft) throws -> MigrationReport {
        if let why = KVMDevice.unavailableReason() {
            throw CommandError.configuration("ferry demo --guest kvm needs KVM: \(why)")
        }
        guard bytes >= KVMGuestLayout.minMemory, bytes % KVMGuestLayout.pageSize == 0 else {
            throw CommandError.configuration(
                "--size \(bytes) bytes: the KVM guest needs a multiple of 4096 of at least \(KVMGuestLayout.minMemory)")
        }
        let writesPerSecond = try Rate.parse(rate).pagesPerSecond(pageSize: KVMGuestLayout.pageSize)
        // Steps per vCPU until it halts: its share of the rate over the warm-up, the migration
        // (estimated at 1 GB/s on loopback plus half a second) and the run at the destination.
        let estimate = runBefore + Double(bytes) / 1e9 + 0.5 + runAfter
        let stepLimit = steps ?? UInt64(writesPerSecond / Double(vcpus) * estimate)
        let parameters = KVMGuestParameters(
            seed: 7, vcpus: vcpus, writesPerSecond: writesPerSecond, stepLimit: stepLimit,
            printInterval: interval)

        let files = try DemoImages(directory: dir, prefix: "kvm-")
        defer { files.finish(removing: !keep) }
        let (source, destination, reference) = (files.source, files.destination, files.reference)
        draft.minimal.image = source
        Terminal.note(
            "demo: KVM guest, \(bytes >> 20) MiB image in \(dir), \(vcpus) vCPU(s) dirtying \(rate) (workload \(parameters.workload)), downtime target \(Int(downtimeMs)) ms"
        )
        try files.generate(bytes: bytes)

        let (port, destinationOutcome) = try startDestination(imagePath: destination, logger: logger)

        // Source: the KVM guest boots on the image and dirties memory, then migrates.
        let region = try MappedRegion.mapFile(path: source, writable: true)
        let holes = try SourceAgent.faultIn(region, path: source, pageSize: systemPageSize)
        let guest = try KVMGuest(memory: region.base, size: bytes, parameters: parameters, logger: logger)
        guest.start()
        warmUp(guest)
        var sourceOptions = SourceOptions(
            destination: try Endpoint.parse("127.0.0.1:\(port)"),
            settings: ConvergenceSettings(downtimeTarget: .milliseconds(downtimeMs)), compression: compress)
        sourceOptions.imageHoles = holes
        let sourceAgent = SourceAgent(
            guest: KVMMigratableGuest(guest), imagePath: source,
            options: sourceOptions,
            logger: logger, progress: Terminal.progressHandler(quiet: quiet))
        draft.engineReport = { sourceAgent.lastReport }
        let sourceReport: MigrationReport
        do {
            sourceReport = try sourceAgent.migrate()
        } catch {
            guest.stop()
            _ = try? destinationOutcome.wait()
            throw error
        }
        let sourceLines = guest.consoleLines
        let result = try destinationOutcome.wait()
        Terminal.clearProgress()
        HumanOutput.print(sourceReport.text())
        HumanOutput.print("")
        HumanOutput.print(result.report.text())
        if let error = result.report.error { throw MigrationError(.system, error.message, guest: .destination) }

        try checkTransparency(
            parameters: parameters, stepLimit: stepLimit, sourceReport: sourceReport, result: result,
            sourceLines: sourceLines, reference: reference, destination: destination)
        printSummary(sourceReport: sourceReport, result: result)
        return sourceReport
    }

    /// The destination agent on its own thread: it builds the VM when the guest's configuration
    /// arrives and runs the guest after COMMIT until every vCPU halted at its step limit.
    private func startDestination(imagePath: String, logger: Logger) throws
        -> (port: UInt16, outcome: BackgroundThread<DestinationResult>)
    {
        var destinationOptions = DestinationOptions(
            listen: try Endpoint.parse("127.0.0.1:0"), imagePath: imagePath,
            runFor: .seconds(600), acceptTimeout: .milliseconds(30_000), preallocateBytes: bytes,
            guestKinds: .ferry)
        destinationOptions.handoffTimeout = .milliseconds(60_000)
        let destinationAgent = DestinationAgent(options: destinationOptions, logger: logger, progress: nil)
        let port = try destinationAgent.bind()
        return (port, BackgroundThread { try destinationAgent.run() })
    }

    /// Lets the guest run for `runBefore` seconds and reports the rate it dirties pages at over
    /// the last second of it.
    private func warmUp(_ guest: KVMGuest) {
        let warmEnd = MonotonicClock.now()
        MonotonicClock.sleep(seconds: max(0, runBefore - 1))
        let before = guest.stepsPerVCPU.reduce(0, +)
        MonotonicClock.sleep(seconds: min(1, runBefore))
        let measured =
            Double(guest.stepsPerVCPU.reduce(0, +) - before) * Double(KVMGuestLayout.pageSize)
            / min(1, max(runBefore, 1e-3))
        Terminal.note(
            String(
                format: "demo: after %.1f s the guest writes %.0f MB/s of pages (target %@)",
                MonotonicClock.seconds(since: warmEnd), measured / 1e6, rate))
    }

    /// The guest as it would have run without migrating, on a fresh copy of the image: its
    /// console, final checksums and working area must equal the migrated guest's.
    private func checkTransparency(
        parameters: KVMGuestParameters, stepLimit: UInt64, sourceReport: MigrationReport,
        result: DestinationResult, sourceLines: [KVMConsoleLine], reference: String,
        destination: String
    ) throws {
        let pausedAt = sourceReport.vcpuSteps
        let checkStart = MonotonicClock.now()
        let referenceRegion = try MappedRegion.mapFile(path: reference, writable: true)
        let expected = KVMGuestReference(parameters: parameters, memory: referenceRegion.base, memorySize: bytes)
        let received = try MappedRegion.mapFile(path: destination, writable: false)
        HumanOutput.print("")
        let dirtyRates = sourceReport.perRound.filter { $0.dirtyRateMBps > 0 }.map {
            String(format: "%.0f", $0.dirtyRateMBps)
        }
        HumanOutput.print(
            "guest        \(vcpus) vCPU(s) dirtying \(rate), step limit \(stepLimit) per vCPU; dirty rate per pre-copy round (MB/s): \(dirtyRates.joined(separator: ", ")) (round 0 counts only the writes to pages it had protected already)"
        )
        HumanOutput.print(
            "paused at    steps \(pausedAt.map(String.init).joined(separator: ",")) on the source; halted at \(result.report.vcpuSteps.map(String.init).joined(separator: ",")) on the destination"
        )
        let console: [KVMConsoleLine] = result.console.map { KVMConsoleLine(vcpu: $0.vcpu, text: $0.text) }
        for vcpu in 0..<vcpus {
            let last = sourceLines.last { $0.vcpu == vcpu }?.text ?? "(none)"
            let after = console.filter { $0.vcpu == vcpu }
            HumanOutput.print("console      source:      \(last)")
            HumanOutput.print(
                "             destination: \(after.first?.text ?? "(none)")\(after.count > 1 ? " … \(after.last!.text)" : "")"
            )
        }
        var problems: [String] = []
        if let problem = expected.continuityProblem(before: sourceLines, after: console) {
            problems.append("console: \(problem)")
        } else {
            let counts = (0..<vcpus).map { vcpu in
                "vCPU \(vcpu) \(sourceLines.filter { $0.vcpu == vcpu }.count)+\(console.filter { $0.vcpu == vcpu }.count)"
            }
            HumanOutput.print(
                "console      continues: source + destination lines equal a run that never migrated (\(counts.joined(separator: ", ")) lines; none lost, none repeated)"
            )
        }
        let finalChecksums = (0..<vcpus).map { vcpu in
            console.last { $0.vcpu == vcpu && $0.text.contains(" done ") }?.text.split(separator: " ").last.map(
                String.init) ?? "(no final line)"
        }
        let expectedChecksums = expected.checksums.map {
            KVMGuestWalk.line(vcpu: 0, step: 0, checksum: $0).split(separator: " ").last.map(String.init)!
        }
        HumanOutput.print(
            "checksum     final \(finalChecksums.joined(separator: ", ")); reference \(expectedChecksums.joined(separator: ", "))"
        )
        if finalChecksums != expectedChecksums {
            problems.append("final checksums \(finalChecksums) differ from the reference's \(expectedChecksums)")
        }
        let work = KVMGuestLayout.workBase
        if memcmp(received.base + work, referenceRegion.base + work, bytes - work) != 0 {
            var page = work / KVMGuestLayout.pageSize
            while memcmp(
                received.base + page * KVMGuestLayout.pageSize, referenceRegion.base + page * KVMGuestLayout.pageSize,
                KVMGuestLayout.pageSize) == 0
            { page += 1 }
            problems.append("the working area differs from the reference's from page \(page)")
        }
        let seconds = String(format: "%.2f s", MonotonicClock.seconds(since: checkStart))
        if !problems.isEmpty {
            throw TransparencyFailure(description: "transparency check FAILED: " + problems.joined(separator: "; "))
        }
        HumanOutput.print(
            "transparency check: passed — console, final checksums and the \(bytes - work)-byte working area equal the guest program run without migration (checked in \(seconds))"
        )
    }

    /// Where the downtime went, and the one-line verdict.
    private func printSummary(sourceReport: MigrationReport, result: DestinationResult) {
        let parts = sourceReport.downtimeParts
        let restored = result.report.downtimeParts
        HumanOutput.print(
            String(
                format:
                    "downtime     %.2f ms: pause %.2f, final pages %.2f (harvest %.2f + send %.2f), device state %.2f, destination restore %.2f, verify %.2f, commit + resume %.2f (destination start %.2f)",
                sourceReport.downtimeMs, parts.pauseVcpusMs,
                parts.finalHarvestMs + parts.finalSendMs - parts.cpuStateMs,
                parts.finalHarvestMs, parts.finalSendMs - parts.cpuStateMs, parts.cpuStateMs, restored.restoreVcpusMs,
                parts.verifyMs, parts.commitResumeMs, parts.destinationResumeMs))
        let verdict = sourceReport.downtimeMs <= downtimeMs ? "within" : "OVER"
        HumanOutput.print(
            String(
                format:
                    "demo: migrated a running KVM guest (%.2f GB) in %.0f ms, %d rounds, downtime %.2f ms (%@ the %.0f ms target), %.1f MB on the wire",
                Double(bytes) / 1e9, sourceReport.totalMs, sourceReport.rounds, sourceReport.downtimeMs,
                verdict, downtimeMs, Double(sourceReport.wireBytes) / 1e6))
    }
}
