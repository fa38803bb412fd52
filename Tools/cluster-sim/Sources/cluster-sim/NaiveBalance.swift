import FerryDecisions
import Glibc

/// The balance benchmark's baseline and oracle: `BalancePass`'s rules written as plainly as
/// possible. Every step judges every unmoved guest on a hot host against every host and takes the
/// best; no bounds kept between steps. For hosts of one size only (the spread rule is simpler).
struct NaiveBalance {
    let hosts: [ClusterHost]
    let guests: [BalanceGuest]
    let parameters: BalanceParameters
    var load: [Double]
    var used: [Resources]
    var home: [Int]
    var cost: [Double?]
    /// The hosts' fields as flat arrays, so the inner loop copies no strings.
    let takes: [Bool]
    let kvm: [Bool]
    let capacity: [Resources]

    init(hosts: [ClusterHost], guests: [BalanceGuest], parameters: BalanceParameters) {
        self.hosts = hosts
        self.guests = guests
        self.parameters = parameters
        var index: [String: Int] = [:]
        for (position, host) in hosts.enumerated() { index[host.id] = position }
        home = guests.map { index[$0.host]! }
        takes = hosts.map(\.takesGuests)
        kvm = hosts.map(\.runsKVM)
        capacity = hosts.map(\.capacity)
        load = Array(repeating: 0, count: hosts.count)
        used = Array(repeating: .zero, count: hosts.count)
        for (guest, host) in zip(guests, home) {
            load[host] += guest.load / Double(hosts[host].capacity.vcpus)
            used[host] = used[host] + guest.resources
        }
        cost = guests.map { guest in
            guard guest.movable, (guest.secondsSinceLastMove ?? .infinity) >= parameters.coolDownSeconds else {
                return nil
            }
            let estimate = parameters.costModel.estimate(guest.profile)
            return estimate.converges ? estimate.seconds : nil
        }
    }

    struct Choice {
        var guest: Int
        var to: Int
        var ratio: Double
        var benefit: Double
        var fromAfter: Double
        var toAfter: Double

        func ranks(above other: Choice, _ guests: [BalanceGuest], _ hosts: [ClusterHost]) -> Bool {
            if ratio != other.ratio { return ratio > other.ratio }
            if toAfter != other.toAfter { return toAfter < other.toAfter }
            if guest != other.guest { return guests[guest].id < guests[other.guest].id }
            return hosts[to].id < hosts[other.to].id
        }
    }

    mutating func run() -> [BalanceMove] {
        var moves: [BalanceMove] = []
        var moved = Array(repeating: false, count: guests.count)
        let sources = Set(hosts.indices.filter { load[$0] > parameters.highThreshold })
        let candidates = guests.indices.filter { sources.contains(home[$0]) && cost[$0] != nil }
        while moves.count < parameters.movesAllowed {
            var best: Choice?
            for guest in candidates where !moved[guest] && load[home[guest]] > parameters.highThreshold {
                for to in hosts.indices {
                    guard let choice = judge(guest, to) else { continue }
                    if let current = best, !choice.ranks(above: current, guests, hosts) { continue }
                    best = choice
                }
            }
            guard let best else { break }
            let from = home[best.guest]
            moves.append(
                BalanceMove(
                    guest: guests[best.guest].id, from: hosts[from].id, to: hosts[best.to].id,
                    fromLoadAfter: best.fromAfter, toLoadAfter: best.toAfter, benefit: best.benefit,
                    costSeconds: cost[best.guest]!))
            load[from] = best.fromAfter
            load[best.to] = best.toAfter
            used[from] = used[from] - guests[best.guest].resources
            used[best.to] = used[best.to] + guests[best.guest].resources
            moved[best.guest] = true
        }
        return moves
    }

    /// The move of `guest` to `to` if legal now.
    func judge(_ guest: Int, _ to: Int) -> Choice? {
        let from = home[guest]
        guard let cost = cost[guest], to != from, takes[to], kvm[to] || !guests[guest].needsKVM,
            load[from] > parameters.highThreshold, capacity[to].fits(used[to] + guests[guest].resources)
        else { return nil }
        let toAfter = load[to] + guests[guest].load / Double(capacity[to].vcpus)
        let fromAfter = load[from] - guests[guest].load / Double(capacity[from].vcpus)
        let shift = guests[guest].load / Double(capacity[from].vcpus) + guests[guest].load / Double(capacity[to].vcpus)
        let benefit = fromAfter >= toAfter ? shift : 2 * (load[from] - load[to]) - shift
        let ratio = benefit / cost
        guard toAfter < parameters.target - parameters.margin, benefit > parameters.margin,
            ratio >= parameters.minimumBenefitPerSecond,
            // Hosts of one size (the benchmark's): the spread falls when the destination stays below
            // the source.
            toAfter < load[from]
        else { return nil }
        return Choice(guest: guest, to: to, ratio: ratio, benefit: benefit, fromAfter: fromAfter, toAfter: toAfter)
    }
}

/// Timing and summaries in milliseconds.
enum Clock {
    static func timed<T>(_ body: () -> T) -> (Double, T) {
        var start = timespec()
        var end = timespec()
        clock_gettime(CLOCK_MONOTONIC, &start)
        let result = body()
        clock_gettime(CLOCK_MONOTONIC, &end)
        return (Double(end.tv_sec - start.tv_sec) * 1000 + Double(end.tv_nsec - start.tv_nsec) / 1e6, result)
    }

    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return 0 }
        return sorted.count % 2 == 1
            ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }

    /// "median [min–max]".
    static func summary(_ values: [Double]) -> String {
        "\(Figures.format(median(values), 1)) [\(Figures.format(values.min() ?? 0, 1))–\(Figures.format(values.max() ?? 0, 1))]"
    }
}
