/// A group's demand over time, in guests' worth of work at the policy's target (12: twelve guests
/// each at the target), one value a second. Noise is not part of it: it is the measurement's.
struct Wave {
    enum Shape: String, CaseIterable {
        /// Low for the first half of every period, high for the second.
        case square
        /// From low up to high in a straight line over every period, then back down at once.
        case sawtooth
        /// Low for the first period, high from then on.
        case step
    }

    var shape: Shape
    var periodSeconds: Int
    var low: Double
    var high: Double

    func demand(atSecond second: Int) -> Double {
        switch shape {
        case .square: return second % periodSeconds < periodSeconds / 2 ? low : high
        case .sawtooth: return low + (high - low) * Double(second % periodSeconds) / Double(periodSeconds)
        case .step: return second < periodSeconds ? low : high
        }
    }

    /// The fewest guests that carry the demand at `second` (the float slack keeps 12.0000001 at 12).
    func guestsNeeded(atSecond second: Int) -> Int { Int((demand(atSecond: second) - 1e-9).rounded(.up)) }
}

/// The oracle: it knows the wave, and counts the fewest count changes a group could make.
///
/// It sets the group's count each second, and a guest it adds takes load a boot delay later, as
/// in the simulation. Two rules bound its count at each second:
/// - **Never short after the boot delay.** The guests taking load carry the demand at every second
///   from the boot delay on, so the count at `s` is at least the highest demand of `[s, s + boot]`
///   (from the boot delay on): it adds guests a boot delay before they are needed.
/// - **The same slack as Ferry's scale-down window.** It may not pay for more than that, or than
///   the highest demand of the last `windowSeconds` (its starting count too while the run is
///   younger than the window). Without this ceiling one change would always do (go to the peak
///   and stay) whatever the wave; with it, a wave whose low phase outlasts the window costs two
///   changes a period.
///
/// Each second is then an interval `[lowest, highest]` the count must lie in, starting from the
/// starting count, and the fewest changes are found greedily: keep one count while the intervals
/// since the last change still overlap, change when they stop (no plan can do better: any plan
/// changes at least once inside every stretch the greedy could not cover). A dynamic program over
/// (second, count) checks the greedy on every run, and both are checked against hand counts.
struct ScalingOracle {
    struct Run: Equatable {
        var startSecond: Int
        var replicas: Int
    }

    var wave: Wave
    var seconds: Int
    var initialReplicas: Int
    var bootDelaySeconds: Int
    var windowSeconds: Int

    /// `[lowest, highest]` allowed for the count at each second.
    func intervals() -> [(lowest: Int, highest: Int)] {
        let needed = (0..<seconds).map { wave.guestsNeeded(atSecond: $0) }
        var result: [(lowest: Int, highest: Int)] = []
        result.reserveCapacity(seconds)
        var recent: [Int] = []  // the needed counts of the window, oldest first
        for second in 0..<seconds {
            recent.append(needed[second])
            if recent.count > max(windowSeconds, 1) { recent.removeFirst() }
            let first = max(second, bootDelaySeconds)
            let last = min(second + bootDelaySeconds, seconds - 1)
            let lowest = first <= last ? needed[first...last].max()! : 0
            let highest = max(lowest, recent.max()!, second < windowSeconds ? initialReplicas : 0)
            result.append((lowest, highest))
        }
        return result
    }

    /// The count's runs, the starting count first (each at the lowest count its stretch allows);
    /// its changes are `runs.count - 1`.
    func plan() -> [Run] {
        var runs: [Run] = []
        var (lowest, highest, start) = (initialReplicas, initialReplicas, 0)
        for (second, interval) in intervals().enumerated() {
            let (nextLowest, nextHighest) = (max(lowest, interval.lowest), min(highest, interval.highest))
            if nextLowest <= nextHighest {
                (lowest, highest) = (nextLowest, nextHighest)
                continue
            }
            runs.append(Run(startSecond: start, replicas: lowest))
            (start, lowest, highest) = (second, interval.lowest, interval.highest)
        }
        runs.append(Run(startSecond: start, replicas: lowest))
        return runs
    }

    /// The fewest changes by dynamic program: the fewest changes ending at each count, second by
    /// second, from the starting count (a count outside the second's interval is impossible there).
    func fewestChangesByDynamicProgram() -> Int {
        let all = intervals()
        let top = max(all.map(\.highest).max() ?? 0, initialReplicas)
        let impossible = Int.max / 2
        var best = [Int](repeating: impossible, count: top + 1)
        best[initialReplicas] = 0
        for interval in all {
            let cheapest = best.min()! + 1
            for count in 0...top {
                best[count] =
                    (interval.lowest...interval.highest).contains(count) ? min(best[count], cheapest) : impossible
            }
        }
        return best.min()!
    }

    /// The count the plan sets at `second`.
    static func replicas(_ runs: [Run], atSecond second: Int) -> Int {
        runs.last { $0.startSecond <= second }!.replicas
    }

    /// Hand-counted waves the oracle must agree with (greedy and dynamic program alike); a
    /// sentence for each disagreement.
    static func selfCheck() -> [String] {
        let square = Wave(shape: .square, periodSeconds: 60, low: 4, high: 12)
        var flapping = [(0, 4)]
        for k in 0..<60 { flapping += [(28 + 60 * k, 12)] + (k < 59 ? [(60 * (k + 1), 4)] : []) }
        // (what, oracle, its plan counted by hand as (second, count) from the starting count)
        let known: [(String, ScalingOracle, [(Int, Int)])] = [
            // Up at 28 s for the first high phase at 30 s (a boot delay early), then the window keeps the peak.
            ("square 60 s, window 300 s", ScalingOracle(square), [(0, 4), (28, 12)]),
            // No window: up at 28 + 60 k (60 times), down at 60 k for k = 1…59.
            ("square 60 s, no window", ScalingOracle(square, window: 0), flapping),
            // Up at 598 s, 1798 s and 2998 s; down when a high phase ended 300 s ago (1499 s, 2699 s).
            (
                "square 1200 s, window 300 s",
                ScalingOracle(Wave(shape: .square, periodSeconds: 1200, low: 4, high: 12)),
                [(0, 4), (598, 12), (1499, 4), (1798, 12), (2699, 4), (2998, 12)]
            ),
            // n guests are needed from the first second the ramp 4 + 8 t / 60 is above n − 1, and
            // asked for two seconds before: 5 at 0 s (for 2 s), 6 at 6 s (for 8 s), 7 at 14 s
            // (for 16 s: 6.0 at 15 s is still 6)… 12 at 51 s; the ceiling is the ramp itself until
            // the first peak, which the window keeps after.
            (
                "sawtooth 60 s, window 300 s",
                ScalingOracle(Wave(shape: .sawtooth, periodSeconds: 60, low: 4, high: 12)),
                [(0, 4), (0, 5), (6, 6), (14, 7), (21, 8), (29, 9), (36, 10), (44, 11), (51, 12)]
            ),
            // Up at 58 s; a window of high demand lasts for ever.
            (
                "step at 60 s", ScalingOracle(Wave(shape: .step, periodSeconds: 60, low: 4, high: 12)),
                [(0, 4), (58, 12)]
            ),
            // Starting at 20, paid for until the start is a window old, then down to the peak of it.
            (
                "step at 60 s from 20 guests",
                ScalingOracle(Wave(shape: .step, periodSeconds: 60, low: 4, high: 12), from: 20),
                [(0, 20), (300, 12)]
            ),
        ]
        var problems: [String] = []
        for (name, oracle, expected) in known {
            let plan = oracle.plan().map { ($0.startSecond, $0.replicas) }
            let program = oracle.fewestChangesByDynamicProgram()
            if !plan.elementsEqual(expected, by: ==) || program != expected.count - 1 {
                problems.append(
                    "\(name): greedy \(plan.count - 1) changes \(plan.prefix(10)), dynamic program \(program),"
                        + " counted by hand \(expected.count - 1) \(expected.prefix(10))")
            }
        }
        return problems
    }

    /// A one-hour oracle with a 2 s boot delay (the self-check's).
    private init(_ wave: Wave, window: Int = 300, from initialReplicas: Int = 4) {
        self.init(
            wave: wave, seconds: 3600, initialReplicas: initialReplicas, bootDelaySeconds: 2, windowSeconds: window)
    }

    init(wave: Wave, seconds: Int, initialReplicas: Int, bootDelaySeconds: Int, windowSeconds: Int) {
        self.wave = wave
        self.seconds = seconds
        self.initialReplicas = initialReplicas
        self.bootDelaySeconds = bootDelaySeconds
        self.windowSeconds = windowSeconds
    }
}
