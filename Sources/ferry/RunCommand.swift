import ArgumentParser
import FerryGuest
import FerryGuestMigration
import FerryKVMMigration
import FerryMigration
import FerrySystem
import Foundation

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the built-in guest on an image without migrating it (the reference for transparency checks).",
        discussion: """
            With --steps, each vCPU stops after exactly that many writes: give it the vCPU steps from \
            the destination's report, run it on a copy of the original image, and the result must equal \
            the migrated image byte for byte (cmp).
            """)

    @Option(help: "Guest memory image.")
    var image: String

    @Option(help: "Guest workload (as for ferry send).")
    var workload = "idle"

    @Option(help: "Number of vCPUs (1-64).", transform: NumberOption.count(1...64))
    var vcpus = 2

    @Option(help: "Workload seed.")
    var seed: UInt64 = 1

    @Option(help: "Steps per vCPU, comma-separated (one per vCPU).")
    var steps: String?

    @Option(
        help: "Run this long instead of a step count (e.g. 2s; at most 30 days).",
        transform: { try DurationOption.parse($0) })
    var duration: DurationOption?

    @Option(
        help:
            "Which guest: builtin (vCPU threads writing the image) or kvm (a KVM VM running Tools/kvm-guest; --steps is then one count for every vCPU)."
    )
    var guest = "builtin"

    @Option(
        help: "With --guest kvm: create the image with this size if it does not exist (e.g. 256MiB).",
        transform: SizeOption.within(1, 1 << 40, "a positive size up to 1 TiB, like 256MiB"))
    var size: SizeOption?

    @Option(
        help: "With --guest kvm: pages dirtied per second by the whole guest (e.g. 100MB/s); default: unpaced.",
        transform: RateOption.parse)
    var rate: Rate?

    @OptionGroup(title: "Disk") var disk: DiskOptions

    @OptionGroup var output: OutputOptions

    func validate() throws {
        if (steps == nil) == (duration == nil) {
            throw ValidationError("give exactly one of --steps and --duration")
        }
        if guest != "builtin" && guest != "kvm" { throw ValidationError("--guest must be builtin or kvm") }
        if guest == "builtin" && (size != nil || rate != nil) {
            throw ValidationError("--size and --rate are for --guest kvm")
        }
        if guest == "builtin" { try validateWorkload(workload) }
        if disk.disk != nil && steps != nil {
            if guest == "builtin" {
                throw ValidationError("--disk needs --duration (a reference run with --steps has no disk)")
            }
        }
    }

    func run() throws {
        runReporting(output, role: "run") { draft in
            draft.describe(image: image, vcpus: vcpus, workload: workload)
            if guest == "kvm" {
                return try KVMRun(
                    image: image, size: size, rate: rate, vcpus: vcpus, seed: seed, steps: steps, duration: duration,
                    disk: disk
                )
                .run(logger: output.makeLogger("ferry.run"), draft: draft)
            }
            let logger = output.makeLogger("ferry.run")
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
            let lock = try ImageLock.acquire(path: image)
            defer { lock.release() }
            let setup = try GuestSetup.make(
                workload: workload, vcpus: vcpus, seed: seed, pageSize: systemPageSize,
                pageCount: size / systemPageSize, attachTrace: false)
            let start = MonotonicClock.now()
            var finalSteps: [UInt64]
            if let steps {
                let limits = steps.split(separator: ",").compactMap { UInt64($0.trimmingCharacters(in: .whitespaces)) }
                guard limits.count == vcpus else {
                    throw CommandError.configuration(
                        "--steps '\(steps)': expected \(vcpus) comma-separated counts, one per vCPU")
                }
                try Transparency.runReference(imagePath: image, setup: setup, steps: limits, logger: logger)
                finalSteps = limits
            } else {
                let seconds = duration?.seconds ?? 0
                let region = try MappedRegion.mapFile(path: image, writable: true)
                let guest = try Guest(
                    memory: region.base, size: size, configuration: setup.configuration, logger: logger)
                let writer = try disk.boot(for: guest, seed: seed, logger: logger)
                guest.start()
                writer?.start()
                MonotonicClock.sleep(seconds: seconds)
                // Graceful shutdown: the vCPUs stop, the disk finishes its record, writes the
                // clean-shutdown record and is flushed.
                writer?.pause()
                finalSteps = guest.stop().map(\.step)
                if let writer {
                    let cursor = try writer.shutdown()
                    HumanOutput.print(
                        "disk: clean shutdown at record \(cursor.nextSeq - 1) (boot \(cursor.bootCount), \(writer.recordsWritten) step records this boot)"
                    )
                }
                try region.sync()
            }
            let seconds = MonotonicClock.seconds(since: start)
            HumanOutput.print(
                "ran \(workload) on \(image) with \(vcpus) vCPU(s) in \(String(format: "%.2f", seconds)) s; vCPU steps \(finalSteps.map(String.init).joined(separator: ","))"
            )
            return draft.ran(seconds: seconds, steps: finalSteps, pageSize: systemPageSize)
        }
    }
}
