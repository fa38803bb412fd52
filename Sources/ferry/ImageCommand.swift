import ArgumentParser
import FerryGuest
import FerryMigration
import FerrySystem
import Foundation

struct ImageCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "image", abstract: "Make guest memory images.", subcommands: [Create.self])

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a deterministic test image of zero, sparse, text-like and random pages.",
            discussion:
                "The same size, mix and seed always give the same bytes. Zero pages are left as holes (the file is sparse)."
        )

        @Argument(help: "Image file to write.")
        var path: String

        @Option(
            help:
                "Image size: a positive multiple of the page size, like 1G, 512M or 4096 (binary units; at most 1 PiB).",
            transform: SizeOption.within(1, 1 << 50, "a positive size up to 1 PiB, like 1G, 512M or 4096"))
        var size: SizeOption

        @Option(help: "Percentages of page kinds.")
        var mix = "zero=35,sparse=10,text=30,random=25"

        @Option(help: "Seed of the page contents.")
        var seed: UInt64 = 1

        @Flag(help: "Overwrite an existing file.")
        var force = false

        /// A size the page size does not divide and a mix that does not parse are usage errors (exit 2).
        func validate() throws {
            if size.bytes % systemPageSize != 0 {
                throw ValidationError("--size \(size): must be a positive multiple of the page size \(systemPageSize)")
            }
            do {
                _ = try ImageMix.parse(mix)
            } catch {
                throw ValidationError("--mix \(mix): \(error.message)")
            }
        }

        func run() throws {
            runReportingErrors {
                let bytes = size.bytes
                guard bytes > 0, bytes % systemPageSize == 0 else {
                    throw GuestError(
                        .invalidSize, "--size \(size): must be a positive multiple of the page size \(systemPageSize)")
                }
                let parsedMix = try ImageMix.parse(mix)
                // --force truncates: not an image another agent uses (ImageLock names it).
                let lock = force && ImageFile.exists(path: path) ? try ImageLock.acquire(path: path) : nil
                defer { lock?.release() }
                let start = MonotonicClock.now()
                try ImageGenerator.create(
                    path: path, size: bytes, mix: parsedMix, seed: seed, pageSize: systemPageSize,
                    overwrite: force
                ) { done in
                    Terminal.progress(
                        String(
                            format: "[image] %.0f%% of %.1f MB", Double(done) * 100 / Double(bytes), Double(bytes) / 1e6
                        ))
                }
                Terminal.clearProgress()
                let seconds = MonotonicClock.seconds(since: start)
                print(
                    "created \(path): \(bytes) bytes (\(bytes / systemPageSize) pages of \(systemPageSize) B), mix \(parsedMix), seed \(seed) in "
                        + String(format: "%.2f s (%.0f MB/s)", seconds, Double(bytes) / seconds / 1e6))
            }
        }
    }
}
