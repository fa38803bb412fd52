import FerryDecisions
import Glibc

/// Consolidation on a simulated cluster at low demand (issue 18): `guests` guests spread thin over
/// `hosts` hosts (none above 30% used in any dimension). Ferry's plan (empty hosts onto the
/// fullest, guests staying where they are on kept hosts) against first-fit decreasing from scratch
/// (every guest placed again as if none were running: the classic packing, which migrates nearly
/// everything) and the lower bound (total demand ÷ a host's capacity), timed alternating.
/// Issue 18's target: within 5% of the lower bound in hosts used.
struct ConsolidationBenchmark {
    struct Options {
        var hosts = 1000
        var guests = 20000
        var repetitions = 5
        var seed: UInt64 = 18

        static let usage = """
            usage: cluster-sim consolidate [--hosts N] [--guests N] [--reps N] [--seed N]

              --hosts N    simulated hosts (default 1000): 128 vCPUs, 512 GiB, 8 TiB each, half
                           with KVM
              --guests N   guests (default 20000) of 1–2 vCPUs and 2–8 GiB, placed at random on
                           hosts kept at most 30% used; a third of those on KVM hosts need KVM; one
                           in a thousand may not move
              --reps N     timed repetitions, Ferry and first-fit decreasing alternating (default 5)
              --seed N     the cluster's random seed (default 18)

            Exit status 1 if a plan breaks a rule or Ferry is more than 5% above the lower bound
            (headroom 0).

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
                case "--seed": seed = UInt64(number)
                default: throw PlacementBenchmark.OptionError("unknown option \(flag)")
                }
            }
        }
    }

    let options: Options

    /// Prints the table; false if a plan broke a rule or the target was missed.
    func run() -> Bool {
        let (hosts, guests) = makeCluster()
        let before = Set(guests.map(\.host)).count
        print(
            "consolidate: \(guests.count) guests on \(before) of \(options.hosts) simulated hosts (≤ 30% used each),"
                + " \(options.repetitions) alternating runs; baseline: first-fit decreasing from scratch")
        print("headroom  plan                      hosts used  ÷ lower bound  migrations  ms median [min–max]")
        var good = true
        for headroom in [0.0, 0.1] {
            var (ferry, baseline) = ([Double](), [Double]())
            var outcome: (ClusterConsolidationPlan?, (used: Int, migrations: Int)) = (nil, (0, 0))
            for _ in 0..<options.repetitions {
                let (a, plan) = Clock.timed {
                    ClusterConsolidation.plan(hosts: hosts, guests: guests, headroom: headroom)
                }
                let (b, packed) = Clock.timed {
                    Self.firstFitDecreasing(hosts: hosts, guests: guests, headroom: headroom)
                }
                ferry.append(a)
                baseline.append(b)
                outcome = (plan, packed)
            }
            let plan = outcome.0!
            let bound = ClusterConsolidation.lowerBound(hosts: hosts, guests: guests, headroom: headroom)
            let ratio = { (used: Int) in Figures.format(Double(used) / Double(bound), 3) }
            let label = Figures.pad("\(Figures.format(headroom * 100, 0))%", 10)
            print(
                label + Figures.pad("ferry", 26) + Figures.pad("\(plan.hostsUsedAfter)", 12)
                    + Figures.pad(ratio(plan.hostsUsedAfter), 15) + Figures.pad("\(plan.moves.count)", 12)
                    + Clock.summary(ferry))
            print(
                label + Figures.pad("first-fit decreasing", 26) + Figures.pad("\(outcome.1.used)", 12)
                    + Figures.pad(ratio(outcome.1.used), 15) + Figures.pad("\(outcome.1.migrations)", 12)
                    + Clock.summary(baseline))
            print(label + Figures.pad("lower bound", 26) + "\(bound)")
            let legal = Self.legal(plan, hosts: hosts, guests: guests, headroom: headroom)
            let met = headroom > 0 || Double(plan.hostsUsedAfter) <= Double(bound) * 1.05
            print(
                "          \(plan.hostsFreed) hosts freed of \(before); rules kept: \(legal ? "yes" : "NO")"
                    + (headroom == 0 ? "; target (≤ 1.05 × lower bound): \(met ? "met" : "MISSED")" : ""))
            good = good && legal && met
        }
        return good
    }

    /// Every guest placed again, largest first (memory, vCPUs, disk), on the first host in order
    /// that takes it within capacity less the headroom: hosts used, guests that changed host.
    static func firstFitDecreasing(hosts: [ClusterHost], guests: [ClusterGuest], headroom: Double)
        -> (used: Int, migrations: Int)
    {
        let keep = 1 - headroom
        let limit = hosts.map { host in
            Resources(
                vcpus: Int(Double(host.capacity.vcpus) * keep),
                memoryBytes: Int(Double(host.capacity.memoryBytes) * keep),
                diskBytes: Int(Double(host.capacity.diskBytes) * keep))
        }
        var held = Array(repeating: Resources.zero, count: hosts.count)
        let order = guests.indices.sorted { a, b in
            let (x, y) = (guests[a].resources, guests[b].resources)
            return (x.memoryBytes, x.vcpus, x.diskBytes, b) > (y.memoryBytes, y.vcpus, y.diskBytes, a)
        }
        var migrations = 0
        for index in order {
            let guest = guests[index]
            guard
                let host = hosts.indices.first(where: {
                    hosts[$0].takesGuests && (hosts[$0].runsKVM || !guest.needsKVM)
                        && limit[$0].fits(held[$0] + guest.resources)
                })
            else { continue }
            held[host] = held[host] + guest.resources
            if hosts[host].id != guest.host { migrations += 1 }
        }
        return (held.count { $0 != .zero }, migrations)
    }

    /// The plan's moves replayed: each a movable guest off an emptied host onto one that takes it
    /// and stays within capacity less the headroom.
    static func legal(_ plan: ClusterConsolidationPlan, hosts: [ClusterHost], guests: [ClusterGuest], headroom: Double)
        -> Bool
    {
        var byHost: [String: ClusterHost] = [:]
        for host in hosts { byHost[host.id] = host }
        var guestByID: [String: ClusterGuest] = [:]
        for guest in guests { guestByID[guest.id] = guest }
        var place: [String: String] = [:]
        for guest in guests { place[guest.id] = guest.host }
        for move in plan.moves {
            guard let guest = guestByID[move.guest], let to = byHost[move.to], guest.movable, guest.host == move.from,
                to.takesGuests, to.runsKVM || !guest.needsKVM
            else { return false }
            place[move.guest] = move.to
        }
        var held: [String: Resources] = [:]
        for guest in guests {
            held[place[guest.id]!, default: .zero] = held[place[guest.id]!, default: .zero] + guest.resources
        }
        let sources = Set(plan.moves.map(\.from))
        let destinations = Set(plan.moves.map(\.to))
        let keep = 1 - headroom
        return sources.allSatisfy { held[$0] == nil }
            && destinations.allSatisfy { id in
                let (have, capacity) = (held[id]!, byHost[id]!.capacity)
                return Double(have.vcpus) <= Double(capacity.vcpus) * keep
                    && Double(have.memoryBytes) <= Double(capacity.memoryBytes) * keep
                    && Double(have.diskBytes) <= Double(capacity.diskBytes) * keep
            } && Set(place.values).count == plan.hostsUsedAfter
    }

    func makeCluster() -> ([ClusterHost], [ClusterGuest]) {
        var random = SplitMix64(seed: options.seed)
        let capacity = Resources(vcpus: 128, memoryBytes: 512 << 30, diskBytes: 8 << 40)
        let ceiling = Resources(vcpus: 38, memoryBytes: 153 << 30, diskBytes: 2 << 40)  // 30%
        let hosts = (0..<options.hosts).map { index in
            ClusterHost(id: "host-\(100_000 + index)", capacity: capacity, runsKVM: index % 2 == 0)
        }
        let flavors = [(1, 2), (1, 4), (2, 4), (1, 8), (2, 8)]
        var held = Array(repeating: Resources.zero, count: hosts.count)
        var guests: [ClusterGuest] = []
        for index in 0..<options.guests {
            let (vcpus, gib) = flavors[Int(random.next() % UInt64(flavors.count))]
            let resources = Resources(vcpus: vcpus, memoryBytes: gib << 30, diskBytes: gib * (10 << 30))
            for _ in 0..<50 {
                let place = Int(random.next() % UInt64(hosts.count))
                guard ceiling.fits(held[place] + resources) else { continue }
                held[place] = held[place] + resources
                guests.append(
                    ClusterGuest(
                        id: "guest-\(100_000 + index)", host: hosts[place].id, resources: resources,
                        needsKVM: hosts[place].runsKVM && random.next() % 3 == 0, movable: random.next() % 1000 != 0))
                break
            }
        }
        return (hosts, guests)
    }
}
