import FerryDecisions
import Glibc

/// A rack's maintenance on a simulated cluster (issue 18): the first `rack` hosts of `hosts` are
/// drained at once, each by its own `DrainPlan` (concurrency and order from the cost model), every
/// guest's destination chosen by `Placement` (spread) among the hosts that take guests and have a
/// move slot left (`--max-moves-per-host`, in and out, as the controller counts them), and each
/// migration costed by `MigrationCostModel` at its source's concurrency. A discrete-event run: no
/// sockets, no clock but the simulated one. Contenders on the same cluster, same invocation: the
/// model's choice, one at a time per host (Nova's `host-evacuate-live`), four at once per host
/// (vMotion on 1 GbE). Printed: the time until the whole rack is empty, each host's drain time,
/// migrations that would not converge, and the decisions' own wall time.
struct DrainBenchmark {
    struct Options {
        var hosts = 1000
        var guests = 20000
        var rack = 40
        var linkGbit = 10
        var maxMoves = 4
        var seed: UInt64 = 18

        static let usage = """
            usage: cluster-sim drain [--hosts N] [--guests N] [--rack N] [--link-gbit N] [--max-moves N] [--seed N]

              --hosts N      simulated hosts (default 1000): 64 vCPUs, 512 GiB each
              --guests N     guests spread over them (default 20000): 1, 2 or 4 vCPUs with 4 GiB each;
                             half idle, the rest dirtying 5 to 150 MB/s (a few at 450)
              --rack N       the first N hosts are drained at once (default 40)
              --link-gbit N  every host's link (default 10); one migration alone carries at most
                             1 GB/s, each move has 0.5 s of fixed cost, the wire ratio is 0.6
              --max-moves N  moves in or out of one host at once (default 4)
              --seed N       the cluster's random seed (default 18)

            Exit status 1 if a guest of the rack found no destination.

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
                case "--rack": rack = number
                case "--link-gbit": linkGbit = number
                case "--max-moves": maxMoves = number
                case "--seed": seed = UInt64(number)
                default: throw PlacementBenchmark.OptionError("unknown option \(flag)")
                }
            }
        }
    }

    struct Guest {
        var id: Int
        var host: Int
        var resources: Resources
        var profile: MigrationProfile
    }

    /// How one contender chose the concurrency of each host.
    enum Contender: CaseIterable {
        case model, serial, fixedFour

        var name: String {
            switch self {
            case .model: "ferry (model)"
            case .serial: "serial (1 per host)"
            case .fixedFour: "fixed (4 per host)"
            }
        }
    }

    struct Outcome {
        var rackSeconds = 0.0
        var hostSeconds: [Double] = []
        var migrations = 0
        var notConverging = 0
        var unplaced = 0
        var wallSeconds = 0.0
    }

    let options: Options

    var model: MigrationCostModel {
        MigrationCostModel(
            linkBytesPerSecond: Double(options.linkGbit) * 125_000_000, setupSeconds: 0.5, wireRatio: 0.6,
            streamBytesPerSecond: 1_000_000_000)
    }

    func run() -> Bool {
        let (capacity, guests) = makeCluster()
        print(
            "drain: \(options.rack) of \(options.hosts) simulated hosts drained at once, \(guests.count) guests on the"
                + " cluster; links \(options.linkGbit) Gbit/s, --max-moves-per-host \(options.maxMoves)")
        var ok = true
        var outcomes: [(Contender, Outcome)] = []
        for contender in Contender.allCases {
            let outcome = simulate(contender, capacity: capacity, guests: guests)
            outcomes.append((contender, outcome))
            ok = ok && outcome.unplaced == 0
        }
        let ours = outcomes[0].1.rackSeconds
        for (contender, outcome) in outcomes {
            let sorted = outcome.hostSeconds.sorted()
            let median: Double = sorted.isEmpty ? 0 : sorted[sorted.count / 2]
            let ratio = contender == .model ? "" : "   ferry/this " + fixed(ours / outcome.rackSeconds, 2)
            let name = contender.name + String(repeating: " ", count: max(0, 20 - contender.name.count))
            let figures =
                "rack empty after \(fixed(outcome.rackSeconds, 1)) s; per host median \(fixed(median, 1)) s,"
                + " max \(fixed(sorted.last ?? 0, 1)) s; \(outcome.migrations) migrations, \(outcome.notConverging)"
                + " not converging, \(outcome.unplaced) without a destination; decided in"
                + " \(fixed(outcome.wallSeconds * 1000, 1)) ms"
            print("  \(name) \(figures)\(ratio)")
        }
        return ok
    }

    /// Hosts of 64 vCPUs and 512 GiB; guests placed one by one where `Placement` spreads them.
    func makeCluster() -> (Resources, [Guest]) {
        var random = SplitMix64(seed: options.seed)
        let capacity = Resources(vcpus: 64, memoryBytes: 512 << 30, diskBytes: 8 << 40)
        var free = Array(repeating: capacity, count: options.hosts)
        var guests: [Guest] = []
        for id in 0..<options.guests {
            let vcpus = [1, 1, 2, 2, 4][Int(random.next() % 5)]
            let resources = Resources(vcpus: vcpus, memoryBytes: vcpus * (4 << 30), diskBytes: vcpus * (20 << 30))
            let candidates = free.indices.map {
                PlacementCandidate(hostID: hostName($0), takesGuests: true, free: free[$0])
            }
            guard
                case .host(let chosen) = Placement.choose(
                    PlacementRequest(resources), among: candidates, policy: .spread),
                let index = Int(chosen.dropFirst())
            else { continue }
            free[index] = free[index] - resources
            let roll = Double(random.next() % 1000) / 1000
            let dirty = roll < 0.5 ? 0 : roll < 0.98 ? 5e6 + (roll - 0.5) / 0.48 * 145e6 : 450e6
            guests.append(
                Guest(
                    id: id, host: index, resources: resources,
                    profile: MigrationProfile(memoryBytes: Int64(resources.memoryBytes), dirtyBytesPerSecond: dirty)))
        }
        return (capacity, guests)
    }

    /// `value` with `digits` decimals.
    func fixed(_ value: Double, _ digits: Int) -> String {
        let scale = digits == 1 ? 10.0 : 100.0
        let rounded = (value * scale).rounded() / scale
        return "\(rounded)"
    }

    func hostName(_ index: Int) -> String {
        "h" + String(index)
    }
}

extension DrainBenchmark {
    /// One migration under way.
    struct Flight {
        var end: Double
        var source: Int
        var destination: Int
        var resources: Resources
    }

    /// The rack's drain, event by event: each host starts migrations up to its plan's concurrency
    /// and the limit of moves per host; each ends after the model's estimate at that concurrency.
    func simulate(_ contender: Contender, capacity: Resources, guests: [Guest]) -> Outcome {
        var start = timespec()
        clock_gettime(CLOCK_MONOTONIC, &start)
        var outcome = Outcome()
        var free = Array(repeating: capacity, count: options.hosts)
        for guest in guests { free[guest.host] = free[guest.host] - guest.resources }
        var moves = Array(repeating: 0, count: options.hosts)
        var queues: [[Guest]] = []
        var concurrency: [Int] = []
        for host in 0..<min(options.rack, options.hosts) {
            let own = guests.filter { $0.host == host }
            let forced: Int? = contender == .serial ? 1 : contender == .fixedFour ? 4 : nil
            let plan = DrainPlan.make(
                own.map { DrainGuest(id: String($0.id), profile: $0.profile) }, model: model,
                maxConcurrency: options.maxMoves, forced: forced)
            let byID = Dictionary(uniqueKeysWithValues: own.map { (String($0.id), $0) })
            queues.append(plan.order.compactMap { byID[$0] })
            concurrency.append(min(plan.concurrency, options.maxMoves))
            outcome.notConverging += plan.notConverging.count
        }
        var running: [Flight] = []
        var outbound = Array(repeating: 0, count: queues.count)
        var now = 0.0
        outcome.hostSeconds = Array(repeating: 0, count: queues.count)
        while true {
            for host in queues.indices {
                while !queues[host].isEmpty, outbound[host] < concurrency[host], moves[host] < options.maxMoves {
                    let guest = queues[host][0]
                    let candidates = free.indices.map { index in
                        PlacementCandidate(
                            hostID: hostName(index),
                            takesGuests: index >= queues.count && moves[index] < options.maxMoves,
                            free: free[index])
                    }
                    guard
                        case .host(let chosen) = Placement.choose(
                            PlacementRequest(guest.resources), among: candidates, policy: .spread),
                        let destination = Int(chosen.dropFirst())
                    else {
                        if running.isEmpty {  // nothing will free a slot: it has nowhere to go
                            outcome.unplaced += 1
                            queues[host].removeFirst()
                            continue
                        }
                        break
                    }
                    queues[host].removeFirst()
                    moves[host] += 1
                    moves[destination] += 1
                    outbound[host] += 1
                    free[destination] = free[destination] - guest.resources
                    let seconds = model.estimate(guest.profile, sharing: concurrency[host]).seconds
                    running.append(
                        Flight(end: now + seconds, source: host, destination: destination, resources: guest.resources))
                    outcome.migrations += 1
                }
            }
            guard let next = running.indices.min(by: { running[$0].end < running[$1].end }) else { break }
            let flight = running.remove(at: next)
            now = flight.end
            moves[flight.source] -= 1
            moves[flight.destination] -= 1
            outbound[flight.source] -= 1
            free[flight.source] = free[flight.source] + flight.resources
            if queues[flight.source].isEmpty, outbound[flight.source] == 0 { outcome.hostSeconds[flight.source] = now }
        }
        outcome.rackSeconds = outcome.hostSeconds.max() ?? 0
        var end = timespec()
        clock_gettime(CLOCK_MONOTONIC, &end)
        outcome.wallSeconds = Double(end.tv_sec - start.tv_sec) + Double(end.tv_nsec - start.tv_nsec) / 1e9
        return outcome
    }
}
