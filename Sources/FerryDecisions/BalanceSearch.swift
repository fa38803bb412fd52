// The greedy search behind `BalancePass`: the cluster as arrays, each candidate guest's best move
// kept as an upper bound and recomputed only when it comes out on top (lazy greedy), so a pass over
// 1,000 hosts scans the hosts once per candidate and a few times per move, not once per pair and
// move. With hosts of one size it chooses exactly what a full greedy does (Tools/cluster-sim
// balance checks it move for move on 1,000 hosts).

/// One legal move of a candidate, with what ranks it.
struct BalanceChoice {
    var destination: Int
    var ratio: Double
    var benefit: Double
    var fromAfter: Double
    var toAfter: Double
}

/// A guest on a hot host that may move: where it is, what it weighs, what moving it costs.
struct BalanceCandidate {
    var guest: Int
    var source: Int
    var costSeconds: Double
    /// The guest's fields the scans read (copied, so they copy no strings).
    var resources: Resources
    var load: Double
    var needsKVM: Bool
    /// Its best move when last computed (nil: it had none). Never below its best move now: the
    /// sources' loads only fall and the destinations' only rise, which only shrinks what it can
    /// gain, except when a source cools into a destination (`apply` offers that one to everyone)
    /// and, with hosts of mixed sizes, through the spread rule (the mean moves), which the full
    /// recompute before `next` gives up catches: the pass never stops while a move is legal, but
    /// with mixed sizes its order after the first move may differ from a full greedy's.
    var best: BalanceChoice?
    var moved = false
}

struct BalanceSearch {
    let hosts: [ClusterHost]
    let guests: [BalanceGuest]
    let parameters: BalanceParameters
    var load: [Double]
    var used: [Resources]
    /// The sum of the hosts' loads (for the spread rule).
    var sum: Double
    var candidates: [BalanceCandidate] = []
    /// The hosts' fields the scans read, as flat arrays.
    let takes: [Bool]
    let kvm: [Bool]
    let capacity: [Resources]

    init(hosts: [ClusterHost], guests: [BalanceGuest], parameters: BalanceParameters) {
        self.hosts = hosts.filter { $0.capacity.vcpus > 0 }
        var index: [String: Int] = [:]
        for (position, host) in self.hosts.enumerated() where index[host.id] == nil { index[host.id] = position }
        var placed: [(BalanceGuest, Int)] = []
        for guest in guests { if let host = index[guest.host] { placed.append((guest, host)) } }
        self.guests = placed.map(\.0)
        self.parameters = parameters
        takes = self.hosts.map(\.takesGuests)
        kvm = self.hosts.map(\.runsKVM)
        capacity = self.hosts.map(\.capacity)
        load = Array(repeating: 0, count: self.hosts.count)
        used = Array(repeating: .zero, count: self.hosts.count)
        for (guest, host) in placed {
            load[host] += guest.load / Double(self.hosts[host].capacity.vcpus)
            used[host] = used[host] + guest.resources
        }
        sum = load.reduce(0, +)
        for (position, (guest, host)) in placed.enumerated() where load[host] > parameters.highThreshold {
            guard guest.movable, (guest.secondsSinceLastMove ?? .infinity) >= parameters.coolDownSeconds else {
                continue
            }
            let estimate = parameters.costModel.estimate(guest.profile)
            guard estimate.converges else { continue }
            candidates.append(
                BalanceCandidate(
                    guest: position, source: host, costSeconds: max(estimate.seconds, 1e-9), resources: guest.resources,
                    load: guest.load, needsKVM: guest.needsKVM))
        }
        for index in candidates.indices { candidates[index].best = bestMove(candidates[index]) }
    }

    func spread() -> Double { BalancePass.spread(load) }

    /// The legal move of `candidate` to `destination` as things are now, or nil.
    func evaluate(_ candidate: BalanceCandidate, to destination: Int) -> BalanceChoice? {
        let source = candidate.source
        guard destination != source, takes[destination], kvm[destination] || !candidate.needsKVM,
            load[source] > parameters.highThreshold,
            capacity[destination].fits(used[destination] + candidate.resources)
        else { return nil }
        let toAfter = load[destination] + candidate.load / Double(capacity[destination].vcpus)
        guard toAfter < parameters.target - parameters.margin else { return nil }
        let fromAfter = load[source] - candidate.load / Double(capacity[source].vcpus)
        // (from − to) − |from′ − to′|, computed so that two destinations of one size tie exactly
        // while the source stays above the destination.
        let shift =
            candidate.load / Double(capacity[source].vcpus) + candidate.load / Double(capacity[destination].vcpus)
        let benefit = fromAfter >= toAfter ? shift : 2 * (load[source] - load[destination]) - shift
        let ratio = benefit / candidate.costSeconds
        guard benefit > parameters.margin, ratio >= parameters.minimumBenefitPerSecond else { return nil }
        // The spread must fall: n·variance = Σf² − (Σf)²/n.
        let change = (toAfter - load[destination]) - (load[source] - fromAfter)
        let squares =
            fromAfter * fromAfter + toAfter * toAfter - load[source] * load[source] - load[destination]
            * load[destination]
        guard squares - change * (2 * sum + change) / Double(load.count) < 0 else { return nil }
        return BalanceChoice(
            destination: destination, ratio: ratio, benefit: benefit, fromAfter: fromAfter, toAfter: toAfter)
    }

    /// Whether `a` (a move of `aGuest`) ranks above `b` (of `bGuest`).
    func ranks(_ a: BalanceChoice, of aGuest: Int, above b: BalanceChoice, of bGuest: Int) -> Bool {
        if a.ratio != b.ratio { return a.ratio > b.ratio }
        if a.toAfter != b.toAfter { return a.toAfter < b.toAfter }
        if aGuest != bGuest { return guests[aGuest].id < guests[bGuest].id }
        return hosts[a.destination].id < hosts[b.destination].id
    }

    func bestMove(_ candidate: BalanceCandidate) -> BalanceChoice? {
        var best: BalanceChoice?
        for destination in hosts.indices {
            guard let choice = evaluate(candidate, to: destination) else { continue }
            if let current = best, !ranks(choice, of: candidate.guest, above: current, of: candidate.guest) {
                continue
            }
            best = choice
        }
        return best
    }

    /// The candidate whose kept best move ranks highest.
    func top() -> Int? {
        var top: Int?
        for (index, candidate) in candidates.enumerated() where !candidate.moved {
            guard let choice = candidate.best else { continue }
            if let current = top, let kept = candidates[current].best,
                !ranks(choice, of: candidate.guest, above: kept, of: candidates[current].guest)
            {
                continue
            }
            top = index
        }
        return top
    }

    /// The best legal move now, applied to the picture; nil when none is left.
    mutating func next() -> BalanceMove? {
        var refreshed = false
        while true {
            guard let index = top() else {
                // Every kept bound says no move: recompute them all once to be sure.
                if refreshed { return nil }
                refreshed = true
                for index in candidates.indices where !candidates[index].moved {
                    candidates[index].best = bestMove(candidates[index])
                }
                continue
            }
            let kept = candidates[index].best!
            let now = bestMove(candidates[index])
            candidates[index].best = now
            guard let now, now.destination == kept.destination, now.ratio == kept.ratio, now.toAfter == kept.toAfter
            else { continue }
            return apply(index, now)
        }
    }

    mutating func apply(_ index: Int, _ choice: BalanceChoice) -> BalanceMove {
        let candidate = candidates[index]
        let guest = guests[candidate.guest]
        let (source, destination) = (candidate.source, choice.destination)
        sum += choice.fromAfter + choice.toAfter - load[source] - load[destination]
        load[source] = choice.fromAfter
        load[destination] = choice.toAfter
        used[source] = used[source] - guest.resources
        used[destination] = used[destination] + guest.resources
        candidates[index].moved = true
        if load[source] < parameters.target - parameters.margin {
            // The source cooled into a possible destination: a move onto it may beat a kept bound.
            for other in candidates.indices where !candidates[other].moved {
                guard let choice = evaluate(candidates[other], to: source) else { continue }
                if let kept = candidates[other].best,
                    !ranks(choice, of: candidates[other].guest, above: kept, of: candidates[other].guest)
                {
                    continue
                }
                candidates[other].best = choice
            }
        }
        return BalanceMove(
            guest: guest.id, from: hosts[source].id, to: hosts[destination].id, fromLoadAfter: choice.fromAfter,
            toLoadAfter: choice.toAfter, benefit: choice.benefit, costSeconds: candidate.costSeconds)
    }
}
