import FerryDecisions

/// Issue 17's scaling target on a simulated group: a noisy wave of demand, Ferry's target tracking
/// with its defaults against a baseline without a scale-down window, a threshold pair, and an
/// oracle that knows the wave (see `ScalingOracle`), all on the same seeds. The target: on the
/// square wave, no more than 1.2 × the oracle's count changes, and no two opposite changes within
/// the stabilisation window.
struct ScalingBenchmark {
    struct Options {
        var wave = Wave.Shape.square
        var periodSeconds = 60
        var noise = 0.1
        var hours = 1.0
        var low = 4.0
        var high = 12.0
        var seeds = 20
        var cycleSeconds = 15
        var bootDelaySeconds = 2
        var svgPath: String?

        static let usage = """
            usage: cluster-sim scaling [--wave square|sawtooth|step] [--period S] [--noise F] [--hours H]
                                       [--low N] [--high N] [--seeds N] [--cycle S] [--boot-delay S] [--svg FILE]

              --wave W        square (low for half of each period, then high), sawtooth (low up to high
                              over each period) or step (low for one period, high after); default square
              --period S      the wave's period in seconds (default 60)
              --noise F       the metric's noise: each sample × (1 ± F), uniform (default 0.1)
              --hours H       simulated time (default 1), sampled every second
              --low N, --high N
                              demand in guests' worth of work at the target (default 4 and 12)
              --seeds N       runs, each with its own noise, the same for every policy (default 20)
              --cycle S       the policies are asked every S seconds (default 15)
              --boot-delay S  a guest added takes load S seconds after the decision (default 2)
              --svg FILE      a timeline of the first 10 minutes (first seed): demand and each count

            Exit status 1 if the oracle fails its self-check, or if Ferry's default policy makes more
            than 1.2 × the oracle's changes on the square wave or two opposite changes within its
            300 s scale-down window.

            """

        init(_ arguments: [String]) throws {
            var rest = arguments[...]
            while let flag = rest.popFirst() {
                guard let value = rest.popFirst() else { throw OptionError("\(flag) needs a value") }
                switch flag {
                case "--wave":
                    guard let shape = Wave.Shape(rawValue: value) else {
                        throw OptionError("--wave is square, sawtooth or step, not \(value)")
                    }
                    wave = shape
                case "--svg": svgPath = value
                case "--period": periodSeconds = try Self.whole(flag, value, atLeast: 2)
                case "--seeds": seeds = try Self.whole(flag, value, atLeast: 1)
                case "--cycle": cycleSeconds = try Self.whole(flag, value, atLeast: 1)
                case "--boot-delay": bootDelaySeconds = try Self.whole(flag, value, atLeast: 0)
                case "--noise": noise = try Self.number(flag, value, in: 0...0.9)
                case "--hours": hours = try Self.number(flag, value, in: 0.01...1000)
                case "--low": low = try Self.number(flag, value, in: 0...1000)
                case "--high": high = try Self.number(flag, value, in: 0...1000)
                default: throw OptionError("unknown option \(flag)")
                }
            }
            guard low <= high else { throw OptionError("--low \(low) is above --high \(high)") }
        }

        static func whole(_ flag: String, _ value: String, atLeast lowest: Int) throws -> Int {
            guard let number = Int(value), number >= lowest else {
                throw OptionError("\(flag) needs a whole number of at least \(lowest), not \(value)")
            }
            return number
        }

        static func number(_ flag: String, _ value: String, in range: ClosedRange<Double>) throws -> Double {
            guard let number = Double(value), range.contains(number) else {
                throw OptionError("\(flag) needs a number in \(range), not \(value)")
            }
            return number
        }
    }

    struct OptionError: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    /// One policy's runs over the seeds.
    struct Row {
        var name: String
        var colour: String
        var outcomes: [ScalingSimulation.Outcome]
    }

    static let target = 60.0
    static let downWindowSeconds = 300

    let options: Options

    var simulation: ScalingSimulation {
        let wave = Wave(shape: options.wave, periodSeconds: options.periodSeconds, low: options.low, high: options.high)
        return ScalingSimulation(
            wave: wave, seconds: Int((options.hours * 3600).rounded()), noise: options.noise,
            cycleSeconds: options.cycleSeconds, bootDelaySeconds: options.bootDelaySeconds,
            initialReplicas: max(1, wave.guestsNeeded(atSecond: 0)), target: Self.target)
    }

    /// Prints the table; false if the oracle or Ferry's default policy missed.
    func run() throws -> Bool {
        let problems = ScalingOracle.selfCheck()
        for problem in problems { printError("cluster-sim scaling: oracle self-check: \(problem)\n") }
        let simulation = self.simulation
        let oracle = ScalingOracle(
            wave: simulation.wave, seconds: simulation.seconds, initialReplicas: simulation.initialReplicas,
            bootDelaySeconds: options.bootDelaySeconds, windowSeconds: Self.downWindowSeconds)
        let plan = oracle.plan()
        let minimum = plan.count - 1
        let byProgram = oracle.fewestChangesByDynamicProgram()
        print(
            "scaling: \(options.wave.rawValue) wave, period \(options.periodSeconds) s, demand \(Figures.format(options.low, 1))"
                + "–\(Figures.format(options.high, 1)) guests, noise ±\(Figures.format(options.noise * 100, 0))%,"
                + " \(Figures.format(options.hours, 2)) h sampled every second, policies asked every"
                + " \(options.cycleSeconds) s, boot delay \(options.bootDelaySeconds) s, \(options.seeds) seeds")
        print(
            "oracle: \(minimum) changes (greedy) = \(byProgram) (dynamic program); self-check on 6 hand-counted"
                + " waves: \(problems.isEmpty ? "passed" : "FAILED")")
        let rows = try policies(plan).map { name, colour, policy, stale in
            Row(
                name: name, colour: colour,
                outcomes: (0..<options.seeds).map {
                    simulation.run(policy, seed: 0x5CA1_E000 + UInt64($0), staleSamples: stale)
                })
        }
        printTable(rows, minimum: minimum)
        if let path = options.svgPath {
            try ScalingTimeline(wave: simulation.wave, seconds: min(600, simulation.seconds), rows: rows).write(
                to: path)
            print("timeline of the first \(min(600, simulation.seconds)) s (seed 0x5CA1E000): \(path)")
        }
        return problems.isEmpty && byProgram == minimum && verdict(rows[0], minimum: minimum)
    }

    /// The policies side by side (name, colour, policy, whether the caller keeps samples from
    /// before the latest change), Ferry's default first.
    func policies(_ plan: [ScalingOracle.Run]) throws -> [(String, String, SimulatedPolicy, Bool)] {
        let bounds = (min: 1, max: 100)
        let ferry = try TargetTracking(target: Self.target, minReplicas: bounds.min, maxReplicas: bounds.max)
        let flapping = try TargetTracking(
            target: Self.target, scaleDownStabilisationMilliseconds: 0, minReplicas: bounds.min,
            maxReplicas: bounds.max)
        let up = try ThresholdPolicy(
            metric: "load", comparison: .above, threshold: 80, durationMilliseconds: 30_000, step: 2,
            cooldownMilliseconds: 60_000, minReplicas: bounds.min, maxReplicas: bounds.max)
        let down = try ThresholdPolicy(
            metric: "load", comparison: .below, threshold: 30, durationMilliseconds: 30_000, step: -1,
            cooldownMilliseconds: 60_000, minReplicas: bounds.min, maxReplicas: bounds.max)
        return [
            ("ferry: target 60, ±0.1, down 300 s", "blue", .tracking(ferry), false),
            ("ferry, stale samples kept", "purple", .tracking(ferry), true),
            ("baseline: no down window", "red", .tracking(flapping), false),
            ("threshold >80/30s +2, <30/30s −1", "darkorange", .thresholds([up, down]), false),
            ("oracle (knows the wave)", "green", .oracle(plan), false),
        ]
    }

    func printTable(_ rows: [Row], minimum: Int) {
        print(
            Figures.pad("policy", 36) + Figures.pad("actions med [max]", 19) + Figures.pad("÷ oracle", 10)
                + Figures.pad("guest-s med", 13) + Figures.pad("under s med [max]", 19) + "shortest opposite")
        for row in rows {
            let actions = row.outcomes.map { $0.changes.count }
            let ratio =
                minimum == 0
                ? (Figures.median(actions) == 0 ? "1.00" : "∞")
                : Figures.format(Figures.median(actions) / Double(minimum), 2)
            let under = row.outcomes.map(\.underProvisionedSeconds)
            let opposite = row.outcomes.compactMap(\.shortestOppositeSeconds).min()
            print(
                Figures.pad(row.name, 36) + Figures.pad(Figures.spread(actions), 19) + Figures.pad(ratio, 10)
                    + Figures.pad(Figures.format(Figures.median(row.outcomes.map(\.guestSeconds)), 0), 13)
                    + Figures.pad(Figures.spread(under), 19) + (opposite.map { "\($0) s" } ?? "none"))
        }
    }

    /// Issue 17's target for Ferry's default policy, said in a line; false if missed.
    func verdict(_ ferry: Row, minimum: Int) -> Bool {
        let most = ferry.outcomes.map { $0.changes.count }.max() ?? 0
        let opposite = ferry.outcomes.compactMap(\.shortestOppositeSeconds).min()
        let calm = opposite.map { $0 >= Self.downWindowSeconds } ?? true
        var line = "ferry: opposite changes within \(Self.downWindowSeconds) s: \(calm ? "none" : "YES")"
        var good = calm
        if options.wave == .square {
            let met = Double(most) <= 1.2 * Double(minimum)
            line =
                "ferry: at most \(most) changes on any seed, oracle \(minimum), target ≤ 1.2×: \(met ? "met" : "MISSED"); "
                + line.dropFirst("ferry: ".count)
            good = good && met
        }
        print(line)
        return good
    }
}

/// Figures for tables (no Foundation here, and Swift cannot call printf).
enum Figures {
    static func median(_ values: [Int]) -> Double {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return 0 }
        return sorted.count % 2 == 1
            ? Double(sorted[sorted.count / 2]) : Double(sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }

    /// "median [max]".
    static func spread(_ values: [Int]) -> String {
        "\(format(median(values), values.count % 2 == 0 && Int(median(values) * 2) % 2 == 1 ? 1 : 0)) [\(values.max() ?? 0)]"
    }

    /// `value` with `places` decimals.
    static func format(_ value: Double, _ places: Int) -> String {
        var scale = 1.0
        for _ in 0..<places { scale *= 10 }
        let scaled = Int((value * scale).rounded())
        let whole = scaled / Int(scale)
        let fraction = String(scaled % Int(scale))
        guard places > 0 else { return String(whole) }
        return "\(whole)." + String(repeating: "0", count: places - fraction.count) + fraction
    }

    static func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
    }
}
