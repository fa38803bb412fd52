import FerryGuest
import Glibc

/// Command-line options of `microbench`.
struct Options {
    /// Pages of the harvest region (default 1 GiB of 4 KiB pages).
    var pages = 262_144
    /// Pages of each codec image; nil = min(pages, 16384).
    var codecPages: Int?
    /// Timed repetitions per benchmark.
    var repetitions = 5
    /// Case-insensitive substrings; a benchmark runs when its label contains any of them.
    var filters: [String] = []
    /// Tracker benchmark: seconds measured per run, after `trackerWarmupMs`.
    var trackerSeconds = 1.0
    var trackerWarmupMs = 100.0
    /// Tracker benchmark: harvest interval while tracked (a migration round).
    var harvestMs = 50.0
    /// Tracker benchmark: runs per variant (alternating none, uffd, mprotect).
    var trackerRepetitions = 3
    /// Tracker benchmark: writer threads (vCPUs).
    var trackerThreads = 1
    var trackerWriters: [TrackedWriterKind] = TrackedWriterKind.allCases
    /// Tracker benchmark: pace the guest writer at this rate (nil: as fast as it can).
    var trackerRate: Rate?
    /// Tracker benchmark: the image file (MAP_SHARED), created and removed by the run.
    var trackerImage = "/dev/shm/ferry-microbench-tracker.img"

    var imagePages: Int { codecPages ?? min(pages, 16_384) }

    static let usage = """
        usage: microbench [--pages N] [--codec-pages N] [--reps N] [--filter NAME[,NAME...]]
                          [--tracker-seconds S] [--harvest-ms MS] [--tracker-reps N] [--vcpus N]
                          [--writers guest,page] [--tracker-rate RATE] [--tracker-image PATH]

          --pages N        pages of the harvest region (default 262144 = 1 GiB of 4 KiB pages);
                           the codec images are min(N, 16384) pages unless --codec-pages is given
          --codec-pages N  pages of each generated image for encode/decode/batch benchmarks
          --reps N         timed repetitions per benchmark (default 5); median, min and max are shown
          --filter NAME    run only benchmarks whose label contains NAME (case-insensitive), e.g.
                           encode, hash, zero-test, decode, batch, harvest, uffd, mprotect, text,
                           tracker, "tracker guest", "tracker page uniform", framed, receive

        Tracker benchmark (label "tracker WRITER PATTERN VARIANT"): write throughput of unpaced
        writers on a --pages image on /dev/shm (MAP_SHARED, faulted in), untracked vs uffd vs mprotect.
          --tracker-seconds S  measured seconds per run (default 1, after 100 ms of warm-up)
          --harvest-ms MS      harvest interval while tracked, like a migration round (default 50)
          --tracker-reps N     runs per variant, alternating none/uffd/mprotect (default 3)
          --vcpus N            writer threads (default 1)
          --writers LIST       guest (FerryGuest vCPUs, 16 bytes per page write) and/or page
                               (memset of the whole page per write) (default guest,page)
          --tracker-rate RATE  pace the guest at RATE (e.g. 500MB/s) instead of unpaced: the rates then
                               match and the cost shows as writer CPU ns/page (the page writer is skipped)
          --tracker-image PATH the image file (default /dev/shm/ferry-microbench-tracker.img)
        """

    static func parse(_ arguments: [String]) -> Options {
        var options = Options()
        var index = 0
        func value(_ flag: String) -> String {
            index += 1
            guard index < arguments.count else { fail("\(flag) needs a value") }
            return arguments[index]
        }
        func number(_ flag: String) -> Double {
            let text = value(flag)
            guard let number = Double(text), number > 0, number.isFinite else {
                fail("\(flag) \(text): expected a positive number")
            }
            return number
        }
        func count(_ flag: String) -> Int {
            let text = value(flag)
            guard let number = Int(text), number > 0 else { fail("\(flag) \(text): expected a positive integer") }
            return number
        }
        while index < arguments.count {
            switch arguments[index] {
            case "--pages": options.pages = count("--pages")
            case "--codec-pages": options.codecPages = count("--codec-pages")
            case "--reps": options.repetitions = count("--reps")
            case "--filter":
                options.filters += value("--filter").split(separator: ",").map { String($0).lowercased() }
            case "--tracker-seconds": options.trackerSeconds = number("--tracker-seconds")
            case "--harvest-ms": options.harvestMs = number("--harvest-ms")
            case "--tracker-reps": options.trackerRepetitions = count("--tracker-reps")
            case "--vcpus": options.trackerThreads = count("--vcpus")
            case "--tracker-rate":
                let text = value("--tracker-rate")
                do { options.trackerRate = try Rate.parse(text) } catch {
                    fail("--tracker-rate \(text): \(error.message)")
                }
            case "--tracker-image": options.trackerImage = value("--tracker-image")
            case "--writers":
                let text = value("--writers")
                options.trackerWriters = text.split(separator: ",").map { name in
                    guard let kind = TrackedWriterKind(rawValue: String(name)) else {
                        fail("--writers \(text): expected guest and/or page")
                    }
                    return kind
                }
            case "-h", "--help":
                Output.out(usage)
                exit(0)
            default:
                fail("unknown argument '\(arguments[index])'")
            }
            index += 1
        }
        return options
    }

    /// Whether the benchmark labelled `label` is selected.
    func selects(_ label: String) -> Bool {
        guard !filters.isEmpty else { return true }
        let lowered = label.lowercased()
        return filters.contains { lowered.contains($0) }
    }

    /// Whether any of `labels` is selected.
    func selectsAny(_ labels: [String]) -> Bool { labels.contains(where: selects) }

    private static func fail(_ message: String) -> Never {
        Output.error("microbench: \(message)\n\(usage)")
        exit(2)
    }
}
