import FerryDecisions
import Glibc

/// Balancing passes on a simulated cluster (issue 18): `hosts` hosts, `guests` guests with random
/// CPU loads, a tenth of the hosts packed with busy guests (hot). One pass is timed against a
/// baseline on the same input in the same run, alternating: the plainest greedy under the same
/// rules (every guest on a hot host against every host, every step), which must choose the same
/// moves in the same order. Then `passes` passes five minutes apart, each one's moves applied with
/// the loads unchanged: the moves per pass must reach 0 and no guest may return to a host it left.
struct BalanceBenchmark {
    struct Options {
        var hosts = 1000
        var guests = 20000
        var repetitions = 3
        var passes = 10
        var capPerHour = 2000
        var seed: UInt64 = 18

        static let usage = """
            usage: cluster-sim balance [--hosts N] [--guests N] [--reps N] [--passes N] [--cap N] [--seed N]

              --hosts N    simulated hosts (default 1000): 64 vCPUs, 256 GiB, 4 TiB each; one in
                           twenty takes no guests; half have KVM; a tenth are hot
              --guests N   guests (default 20000): 1, 2 or 4 vCPUs with 4 GiB each, loads of 5–60%
                           of their vCPUs (80–100% on hot hosts), dirty rates up to 300 MB/s
              --reps N     timed repetitions of the first pass, Ferry and baseline alternating
                           (default 3)
              --passes N   passes applied one after another, 300 s apart (default 10)
              --cap N      migrations per hour (default 2000)
              --seed N     the cluster's random seed (default 18)

            Exit status 1 if the baseline chooses other moves, the moves do not stop, a guest goes
            back to a host it left, a pass raises the spread, or a pass over 1,000 hosts takes > 1 s.

            """

        init(_ arguments: [String]) throws {
            var rest = arguments[...]
            while let flag = rest.popFirst() {
                guard let value = rest.popFirst(), let number = Int(value), number > 0 else {
                    throw PlacementBenchmark.OptionError("\(flag) needs a positive whole number")
                }
                switch flag {
                case "--hosts": hosts = number
                case "--guests": guests = number
                case "--reps": repetitions = number
                case "--passes": passes = number
                case "--cap": capPerHour = number
                case "--seed": seed = UInt64(number)
                default: throw PlacementBenchmark.OptionError("unknown option \(flag)")
                }
            }
        }
    }

    static let costModel = MigrationCostModel(linkBytesPerSecond: 1_250_000_000)  // 10 Gbit/s

    let options: Options

    func parameters(allowed: Int) -> BalanceParameters {
        BalanceParameters(movesAllowed: allowed, costModel: Self.costModel)
    }

    /// Prints the figures; false if a check or the target failed.
    func run() -> Bool {
        let (hosts, guests) = makeCluster()
        print(
            "balance: \(guests.count) guests on \(options.hosts) simulated hosts, link 10 Gbit/s, threshold 0.8,"
                + " destinations below 0.6, margin 0.05, cap \(options.capPerHour) an hour")
        var (ferry, baseline) = ([Double](), [Double]())
        var plans: (BalancePlan?, [BalanceMove]) = (nil, [])
        for _ in 0..<options.repetitions {
            let (a, plan) = Clock.timed {
                BalancePass.plan(hosts: hosts, guests: guests, parameters: parameters(allowed: options.capPerHour))
            }
            let (b, moves) = Clock.timed {
                var naive = NaiveBalance(
                    hosts: hosts, guests: guests, parameters: parameters(allowed: options.capPerHour))
                return naive.run()
            }
            ferry.append(a)
            baseline.append(b)
            plans = (plan, moves)
        }
        let plan = plans.0!
        let agree = plan.moves == plans.1
        let hot = { (loads: [String: Double]) in loads.values.count { $0 > 0.8 } }
        let after = BalancePass.loads(hosts: hosts, guests: Self.apply(plan.moves, to: guests, elapsed: 0))
        print(
            "first pass: spread (std dev of host load) \(Figures.format(plan.spreadBefore, 4)) → \(Figures.format(plan.spreadAfter, 4));"
                + " hosts above 0.8: \(hot(BalancePass.loads(hosts: hosts, guests: guests))) → \(hot(after));"
                + " \(plan.moves.count) moves, \(Figures.format(plan.moves.reduce(0) { $0 + $1.costSeconds }, 1))"
                + " migration-seconds estimated")
        let before = BalancePass.loads(hosts: hosts, guests: guests)
        print(LoadHistogram(before: Array(before.values), after: Array(after.values)).text())
        print("time to decide   ferry \(Clock.summary(ferry)) ms   baseline \(Clock.summary(baseline)) ms")
        let met = options.hosts < 1000 || Clock.median(ferry) <= 1000
        print(
            "ferry ÷ baseline: \(Figures.format(Clock.median(ferry) / Clock.median(baseline), 3))×; same moves in the"
                + " same order: \(agree ? "yes" : "NO"); target (≤ 1 s a pass): \(met ? "met" : "MISSED")")
        return agree && met && passes(hosts, guests)
    }

    /// The passes one after another; false if they do not stop, ping-pong, or raise the spread.
    func passes(_ hosts: [ClusterHost], _ start: [BalanceGuest]) -> Bool {
        var guests = start
        var (perPass, left, back, raised) = ([Int](), Set<[String]>(), 0, 0)
        for _ in 0..<options.passes {
            let plan = BalancePass.plan(
                hosts: hosts, guests: guests, parameters: parameters(allowed: options.capPerHour - perPass.reduce(0, +))
            )
            perPass.append(plan.moves.count)
            if plan.spreadAfter > plan.spreadBefore + 1e-12 { raised += 1 }
            for move in plan.moves {
                if left.contains([move.guest, move.to]) { back += 1 }
                left.insert([move.guest, move.from])
            }
            guests = Self.apply(plan.moves, to: guests, elapsed: 300)
        }
        let stopped = perPass.last == 0 && perPass.reduce(0, +) < options.capPerHour
        print(
            "\(options.passes) passes 300 s apart, moves applied, loads unchanged: moves per pass"
                + " \(perPass.map(String.init).joined(separator: ", ")); stopped (not by the cap):"
                + " \(stopped ? "yes" : "NO"); guests back to a host they left: \(back); passes raising the spread: \(raised)"
        )
        return stopped && back == 0 && raised == 0
    }

    static func apply(_ moves: [BalanceMove], to guests: [BalanceGuest], elapsed: Double) -> [BalanceGuest] {
        var destination: [String: String] = [:]
        for move in moves { destination[move.guest] = move.to }
        return guests.map { guest in
            var guest = guest
            if let to = destination[guest.id] {
                guest.host = to
                guest.secondsSinceLastMove = elapsed
            } else {
                guest.secondsSinceLastMove = guest.secondsSinceLastMove.map { $0 + elapsed }
            }
            return guest
        }
    }

    func makeCluster() -> ([ClusterHost], [BalanceGuest]) {
        var random = SplitMix64(seed: options.seed)
        let capacity = Resources(vcpus: 64, memoryBytes: 256 << 30, diskBytes: 4 << 40)
        let hosts = (0..<options.hosts).map { index in
            ClusterHost(
                id: "host-\(100_000 + index)", capacity: capacity, takesGuests: random.next() % 20 != 0,
                runsKVM: random.next() % 2 == 0)
        }
        var used = [Int](repeating: 0, count: hosts.count)
        var guests: [BalanceGuest] = []
        let hotHosts = max(1, hosts.count / 10)
        for index in 0..<options.guests {
            let vcpus = [1, 2, 4][Int(random.next() % 3)]
            // The first guests fill the hot hosts to 60 vCPUs; the rest go anywhere with room.
            let hot = used[..<hotHosts].contains { $0 + vcpus <= 60 }
            var place = 0
            for _ in 0..<100 {
                place =
                    hot
                    ? Int(random.next() % UInt64(hotHosts))
                    : hotHosts + Int(random.next() % UInt64(hosts.count - hotHosts))
                if used[place] + vcpus <= (hot ? 60 : 64) { break }
            }
            guard used[place] + vcpus <= 64 else { continue }
            used[place] += vcpus
            let busy = hot ? 0.8 + 0.2 * unit(&random) : 0.05 + 0.55 * unit(&random)
            let dirty = random.next() % 50 == 0 ? 2e9 : 3e8 * unit(&random)
            guests.append(
                BalanceGuest(
                    id: "guest-\(100_000 + index)", host: hosts[place].id,
                    resources: Resources(vcpus: vcpus, memoryBytes: vcpus << 32, diskBytes: vcpus * (40 << 30)),
                    load: Double(vcpus) * busy, needsKVM: hosts[place].runsKVM && random.next() % 3 == 0,
                    profile: MigrationProfile(memoryBytes: Int64(vcpus) << 32, dirtyBytesPerSecond: dirty),
                    movable: random.next() % 100 != 0, secondsSinceLastMove: random.next() % 10 == 0 ? 600 : nil))
        }
        return (hosts, guests)
    }

    func unit(_ random: inout SplitMix64) -> Double { Double(random.next() >> 11) / Double(1 << 53) }
}
