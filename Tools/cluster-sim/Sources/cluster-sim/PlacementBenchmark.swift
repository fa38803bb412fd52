import FerryDecisions
import Glibc

/// The scheduler on a simulated cluster: `requests` creates placed one after another on `hosts`
/// hosts, each placement taking the request's resources off the chosen host, as the controller's
/// create transaction does. Timed against a baseline on the same input in the same run: the
/// plainest correct filter-and-weigh scheduler (filter the hosts that fit, sort them all by the
/// policy's order, take the first), which is what `Placement.choose` must agree with host for
/// host and beat by not sorting. Issue 16's target: 1,000 requests on 1,000 hosts in ≤ 1 s.
struct PlacementBenchmark {
    struct Options {
        var hosts = 1000
        var requests = 1000
        var repetitions = 5
        var seed: UInt64 = 16

        static let usage = """
            usage: cluster-sim placement [--hosts N] [--requests N] [--reps N] [--seed N]

              --hosts N     simulated hosts (default 1000): 64 vCPUs, 256 GiB, 4 TiB each; one in
                            ten takes no guests (degraded or silent)
              --requests N  creates placed one after another (default 1000): flavors of 1, 2, 4, 8
                            and 16 vCPUs with 4 GiB and 40 GiB of disk per vCPU, in turn
              --reps N      timed repetitions of each scheduler and policy (default 5), alternating
                            Ferry and the baseline; median, min and max are printed
              --seed N      the cluster's random seed (default 16)

            Exit status 1 if the two schedulers disagree on a host or the target is missed.

            """

        init(_ arguments: [String]) throws {
            var rest = arguments[...]
            while let flag = rest.popFirst() {
                guard let value = rest.popFirst(), let number = Int(value), number > 0 else {
                    throw OptionError("\(flag) needs a positive whole number")
                }
                switch flag {
                case "--hosts": hosts = number
                case "--requests": requests = number
                case "--reps": repetitions = number
                case "--seed": seed = UInt64(number)
                default: throw OptionError("unknown option \(flag)")
                }
            }
        }
    }

    struct OptionError: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    let options: Options

    /// Prints the table; false if the schedulers disagreed or the target was missed.
    func run() -> Bool {
        let cluster = makeCluster()
        print(
            "placement: \(options.requests) requests on \(options.hosts) simulated hosts, \(options.repetitions)"
                + " alternating runs each; baseline: filter, sort all, take the first (same input, same process)")
        print("policy  scheduler   total ms median [min–max]   µs per decision   placed")
        var good = true
        for policy in PlacementPolicy.allCases {
            var ferry: [Double] = []
            var baseline: [Double] = []
            var outcomes: (ferry: [String?], baseline: [String?]) = ([], [])
            for _ in 0..<options.repetitions {
                let (a, placedA) = timed { place(cluster, policy, choose: Placement.choose) }
                let (b, placedB) = timed { place(cluster, policy, choose: Self.sortAll) }
                ferry.append(a)
                baseline.append(b)
                outcomes = (placedA, placedB)
            }
            let agree = outcomes.ferry == outcomes.baseline
            let placed = outcomes.ferry.compactMap { $0 }.count
            row(policy, "ferry", ferry, placed)
            row(policy, "baseline", baseline, outcomes.baseline.compactMap { $0 }.count)
            let ratio = median(ferry) / median(baseline)
            let target = options.hosts >= 1000 && options.requests >= 1000 ? median(ferry) <= 1000 : true
            print(
                "        ferry ÷ baseline: \(format(ratio, 3))×; same host for every request: \(agree ? "yes" : "NO")"
                    + (options.hosts == 1000 && options.requests == 1000
                        ? "; issue 16's target (≤ 1000 ms): \(target ? "met" : "MISSED")" : ""))
            good = good && agree && target
        }
        return good
    }

    func makeCluster() -> [PlacementCandidate] {
        var random = SplitMix64(seed: options.seed)
        return (0..<options.hosts).map { index in
            PlacementCandidate(
                hostID: "host-\(100_000 + index)", takesGuests: random.next() % 10 != 0,
                free: Resources(vcpus: 64, memoryBytes: 256 << 30, diskBytes: 4 << 40), runsKVM: random.next() % 2 == 0)
        }
    }

    /// Places every request in turn; the chosen host of each (nil: refused).
    func place(
        _ cluster: [PlacementCandidate], _ policy: PlacementPolicy,
        choose: (PlacementRequest, [PlacementCandidate], PlacementPolicy) -> PlacementDecision
    ) -> [String?] {
        var hosts = cluster
        var index: [String: Int] = [:]
        for (position, host) in hosts.enumerated() { index[host.hostID] = position }
        var chosen: [String?] = []
        chosen.reserveCapacity(options.requests)
        for step in 0..<options.requests {
            let vcpus = 1 << (step % 5)
            let request = PlacementRequest(
                Resources(vcpus: vcpus, memoryBytes: vcpus << 32, diskBytes: vcpus * (40 << 30)),
                needsKVM: step % 3 == 0)
            guard case .host(let id) = choose(request, hosts, policy), let position = index[id] else {
                chosen.append(nil)
                continue
            }
            hosts[position].free = hosts[position].free - request.resources
            chosen.append(id)
        }
        return chosen
    }

    /// The baseline: every host that takes the request, sorted in full by the policy's order.
    static func sortAll(
        _ request: PlacementRequest, _ hosts: [PlacementCandidate], _ policy: PlacementPolicy
    ) -> PlacementDecision {
        let fitting = hosts.filter {
            $0.takesGuests && $0.free.fits(request.resources) && (!request.needsKVM || $0.runsKVM)
        }
        let sorted = fitting.sorted { a, b in
            let keyA = (a.free.memoryBytes, a.free.vcpus, a.free.diskBytes)
            let keyB = (b.free.memoryBytes, b.free.vcpus, b.free.diskBytes)
            if keyA != keyB { return policy == .spread ? keyA > keyB : keyA < keyB }
            return a.hostID < b.hostID
        }
        guard let first = sorted.first else { return Placement.choose(request, among: hosts, policy: policy) }
        return .host(first.hostID)
    }

    func timed(_ body: () -> [String?]) -> (Double, [String?]) {
        var start = timespec()
        var end = timespec()
        clock_gettime(CLOCK_MONOTONIC, &start)
        let result = body()
        clock_gettime(CLOCK_MONOTONIC, &end)
        let ms = Double(end.tv_sec - start.tv_sec) * 1000 + Double(end.tv_nsec - start.tv_nsec) / 1e6
        return (ms, result)
    }

    func row(_ policy: PlacementPolicy, _ name: String, _ times: [Double], _ placed: Int) {
        let total = "\(format(median(times), 1)) [\(format(times.min()!, 1))–\(format(times.max()!, 1))]"
        let perDecision = median(times) * 1000 / Double(options.requests)
        print(
            pad(policy.rawValue, 8) + pad(name, 12) + pad(total, 28) + pad(format(perDecision, 2), 18)
                + "\(placed) of \(options.requests)")
    }

    func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        return sorted.count % 2 == 1
            ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }

    /// `value` with `places` decimals (no Foundation here, and Swift cannot call printf).
    func format(_ value: Double, _ places: Int) -> String {
        var scale = 1.0
        for _ in 0..<places { scale *= 10 }
        let scaled = Int((value * scale).rounded())
        let whole = scaled / Int(scale)
        let fraction = String(scaled % Int(scale))
        guard places > 0 else { return String(whole) }
        return "\(whole)." + String(repeating: "0", count: places - fraction.count) + fraction
    }

    func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
    }
}

/// A small, fast, seedable generator (the same as the tests' SplitMix64), so a seed names a cluster.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
