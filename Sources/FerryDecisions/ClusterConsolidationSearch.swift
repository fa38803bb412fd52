// The two searches behind `ClusterConsolidation.plan`: exact on small clusters, greedy best fit on
// large ones. Both return the hosts emptied (indices, in order) and the moves (guest → host).

extension ConsolidationPicture {
    typealias Outcome = (emptied: [Int], moves: [(guest: Int, to: Int)])

    /// Hosts holding a guest that may not move.
    var pinned: [Bool] {
        var pinned = Array(repeating: false, count: hosts.count)
        for guest in guests.indices where !guests[guest].movable { pinned[host[guest]] = true }
        return pinned
    }

    /// Every set of `relevant` hosts to keep, smallest first; for the first size that holds every
    /// guest, the set that moves fewest guests.
    func exact(_ relevant: [Int]) -> Outcome {
        let pinned = pinned
        for size in 0...relevant.count {
            var best: (keep: Set<Int>, moves: [(guest: Int, to: Int)])?
            for mask in 0..<(1 << relevant.count) where mask.nonzeroBitCount == size {
                let keep = relevant.indices.filter { mask & (1 << $0) != 0 }.map { relevant[$0] }
                let kept = Set(keep)
                guard relevant.allSatisfy({ kept.contains($0) || !pinned[$0] }) else { continue }
                let moving = guests.indices.filter { !kept.contains(host[$0]) }.sorted(by: largestFirst)
                if let best, moving.count >= best.moves.count { continue }
                var holding = used
                var assignment: [(guest: Int, to: Int)] = []
                if place(moving[...], into: keep, &holding, &assignment) { best = (kept, assignment) }
            }
            guard let best else { continue }
            let emptied = relevant.filter { count[$0] > 0 && !best.keep.contains($0) }
            let rank = Dictionary(uniqueKeysWithValues: emptied.enumerated().map { ($1, $0) })
            let moves = best.moves.sorted { a, b in
                let (x, y) = (rank[host[a.guest]]!, rank[host[b.guest]]!)
                return x != y ? x < y : largestFirst(a.guest, b.guest)
            }
            return (emptied, moves)
        }
        return ([], [])
    }

    /// A placement of `moving` onto `keep` within their limits (depth first), into `assignment`.
    func place(
        _ moving: ArraySlice<Int>, into keep: [Int], _ holding: inout [Resources],
        _ assignment: inout [(guest: Int, to: Int)]
    ) -> Bool {
        guard let guest = moving.first else { return true }
        for destination in keep where takes(destination, guest, holding: holding[destination]) {
            holding[destination] = holding[destination] + guests[guest].resources
            assignment.append((guest, destination))
            if place(moving.dropFirst(), into: keep, &holding, &assignment) { return true }
            assignment.removeLast()
            holding[destination] = holding[destination] - guests[guest].resources
        }
        return false
    }

    /// The hosts in `holding` with the fewest guests (then the least memory, vCPUs, index) emptied
    /// first, each only if all its guests fit, largest first, each into the fullest host that takes
    /// it (best fit, `bestFit`); a host that received guests is not emptied.
    func greedy(_ holding: [Int]) -> Outcome {
        let pinned = pinned
        var on = Array(repeating: [Int](), count: hosts.count)
        for guest in guests.indices { on[host[guest]].append(guest) }
        let order = holding.filter { !pinned[$0] }.sorted { a, b in
            if count[a] != count[b] { return count[a] < count[b] }
            if used[a].memoryBytes != used[b].memoryBytes { return used[a].memoryBytes < used[b].memoryBytes }
            if used[a].vcpus != used[b].vcpus { return used[a].vcpus < used[b].vcpus }
            return a < b
        }
        var destinations = holding.filter { accepts[$0] }
        let tightest = tightest
        var current = used
        var (kept, gone) = (Array(repeating: false, count: hosts.count), Array(repeating: false, count: hosts.count))
        var outcome: Outcome = ([], [])
        for source in order where !kept[source] {
            var trial: [(guest: Int, to: Int)] = []
            for guest in on[source].sorted(by: largestFirst) {
                guard let destination = bestFit(guest, destinations, source, gone, current, pinned, tightest) else {
                    break
                }
                current[destination] = current[destination] + guests[guest].resources
                trial.append((guest, destination))
            }
            guard trial.count == on[source].count else {
                for move in trial { current[move.to] = current[move.to] - guests[move.guest].resources }
                continue
            }
            gone[source] = true
            destinations.removeAll { $0 == source }
            outcome.emptied.append(source)
            for move in trial { kept[move.to] = true }
            outcome.moves.append(contentsOf: trial)
        }
        return outcome
    }

    /// The destination with the least room left once `guest` is on it, other than `source` and the
    /// emptied hosts: a host that is never emptied (it holds a guest that may not move) first; room
    /// compared in the cluster's tightest dimension first (`tightest`).
    func bestFit(
        _ guest: Int, _ destinations: [Int], _ source: Int, _ gone: [Bool], _ current: [Resources], _ pinned: [Bool],
        _ tightest: [Int]
    ) -> Int? {
        let (need, needsKVM) = (demand[guest], guests[guest].needsKVM)
        let (first, second, third) = (tightest[0], tightest[1], tightest[2])
        var best: (host: Int, pinned: Bool, key: (Int, Int, Int))?
        for destination in destinations where destination != source && !gone[destination] {
            guard accepts[destination], kvm[destination] || !needsKVM else { continue }
            let room = limit[destination] - current[destination]
            guard room.fits(need) else { continue }
            let key = (
                Self.component(room, first), Self.component(room, second), Self.component(room, third)
            )
            if let best, best.pinned && !pinned[destination] || (best.pinned == pinned[destination] && best.key <= key)
            {
                continue
            }
            best = (destination, pinned[destination], key)
        }
        return best?.host
    }

    static func less(_ a: Resources, _ b: Resources, _ order: [Int]) -> Bool {
        for dimension in order {
            let (x, y) = (component(a, dimension), component(b, dimension))
            if x != y { return x < y }
        }
        return false
    }

    /// Dimension 0 is vCPUs, 1 memory, 2 disk.
    static func component(_ resources: Resources, _ dimension: Int) -> Int {
        switch dimension {
        case 0: resources.vcpus
        case 1: resources.memoryBytes
        default: resources.diskBytes
        }
    }

    /// The dimensions, the one whose guests' total takes the largest share of the hosts' limits
    /// first: the one that runs out first decides how full a host is.
    var tightest: [Int] {
        let demand = guests.reduce(Resources.zero) { $0 + $1.resources }
        let supply = limit.reduce(Resources.zero) { $0 + $1 }
        let share = { (dimension: Int) -> Double in
            Double(Self.component(demand, dimension)) / Double(max(1, Self.component(supply, dimension)))
        }
        // Memory, vCPUs, disk when shares are equal.
        return [1, 0, 2].sorted { a, b in share(a) != share(b) ? share(a) > share(b) : (a == 1 || (a == 0 && b == 2)) }
    }
}
