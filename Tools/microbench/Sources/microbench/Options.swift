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

    var imagePages: Int { codecPages ?? min(pages, 16_384) }

    static let usage = """
        usage: microbench [--pages N] [--codec-pages N] [--reps N] [--filter NAME[,NAME...]]

          --pages N        pages of the harvest region (default 262144 = 1 GiB of 4 KiB pages);
                           the codec images are min(N, 16384) pages unless --codec-pages is given
          --codec-pages N  pages of each generated image for encode/decode/batch benchmarks
          --reps N         timed repetitions per benchmark (default 5); median, min and max are shown
          --filter NAME    run only benchmarks whose label contains NAME (case-insensitive), e.g.
                           encode, hash, zero-test, decode, batch, harvest, uffd, mprotect, text
        """

    static func parse(_ arguments: [String]) -> Options {
        var options = Options()
        var index = 0
        func value(_ flag: String) -> String {
            index += 1
            guard index < arguments.count else { fail("\(flag) needs a value") }
            return arguments[index]
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
