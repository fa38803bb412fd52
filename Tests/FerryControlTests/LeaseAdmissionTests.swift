import FerryControl
import FerryTestSupport
import Testing

/// Lease admission: hand cases, then the sweep against brute-force oracles that look at every
/// instant of a small integer grid (every start and end lies on the grid, so the load between two
/// grid points is the load at the first: checking the grid checks every millisecond).
@Suite struct LeaseAdmissionTests {
    static let unit = Resources(vcpus: 2, memoryBytes: 4 << 30, diskBytes: 10 << 30)
    static let capacity = Resources(vcpus: 16, memoryBytes: 32 << 30, diskBytes: 200 << 30)

    static func lease(_ id: String, _ count: Int, _ start: Int64, _ end: Int64, unit: Resources = unit) throws
        -> LeaseRequest
    {
        try LeaseRequest(id: id, unit: unit, count: count, startMilliseconds: start, endMilliseconds: end)
    }

    @Test func backToBackWindowsSharingAnEndPointDoNotOverlap() throws {
        let first = try Self.lease("a", 8, 1000, 2000)
        let second = try Self.lease("b", 8, 2000, 3000)
        let before = try Self.lease("c", 8, 0, 1000)
        #expect(LeaseAdmission.decide(second, admitted: [first], capacity: Self.capacity, onDemand: .zero) == .admit)
        #expect(LeaseAdmission.decide(before, admitted: [first], capacity: Self.capacity, onDemand: .zero) == .admit)
        let overlapping = try Self.lease("d", 1, 1999, 2001)
        guard
            case .refuse(let shortfall) = LeaseAdmission.decide(
                overlapping, admitted: [first, second], capacity: Self.capacity, onDemand: .zero)
        else {
            Issue.record("a lease overlapping a full window by 1 ms was admitted")
            return
        }
        #expect(shortfall.atMilliseconds == 1999)
        // One full window ends where another as large starts: one stretch of constant load.
        #expect(shortfall.untilMilliseconds == 2001)
    }

    @Test func aLeaseExactlyFillingTheCapacityIsAdmitted() throws {
        let onDemand = Resources(vcpus: 4, memoryBytes: 8 << 30, diskBytes: 40 << 30)
        let admitted = [try Self.lease("a", 2, 0, 5000)]
        // 16 vCPUs: 4 on demand, 4 leased, 8 asked for.
        let request = try Self.lease("b", 4, 1000, 4000)
        #expect(
            LeaseAdmission.decide(request, admitted: admitted, capacity: Self.capacity, onDemand: onDemand) == .admit)
    }

    @Test func oneUnitMoreIsRefusedWithTheInstantAndTheAmount() throws {
        let onDemand = Resources(vcpus: 4, memoryBytes: 8 << 30, diskBytes: 40 << 30)
        let admitted = [try Self.lease("a", 2, 0, 5000), try Self.lease("late", 1, 3000, 6000)]
        let request = try Self.lease("b", 5, 1000, 4000)
        let decision = LeaseAdmission.decide(
            request, admitted: admitted, capacity: Self.capacity, onDemand: onDemand)
        // From 1000: 4 + 4 + 10 = 18 vCPUs of 16, 8 + 8 + 20 = 36 GiB of 32; disk fits. From 3000
        // the late lease adds one more unit.
        let expected = LeaseShortfall(
            leaseID: "b", atMilliseconds: 1000, untilMilliseconds: 3000,
            shortfall: Resources(vcpus: 2, memoryBytes: 4 << 30, diskBytes: 0), dimensions: [.vcpus, .memory],
            peakShortfall: Resources(vcpus: 4, memoryBytes: 8 << 30, diskBytes: 0))
        #expect(decision == .refuse(expected))
        #expect(expected.description.contains("from 1000 ms to 3000 ms"))
        let window = LeaseAdmission.nearestWindow(
            request, admitted: admitted, capacity: Self.capacity, onDemand: onDemand, latestStartMilliseconds: 100_000)
        #expect(window == LeaseWindow(startMilliseconds: 5000, endMilliseconds: 8000))
        let tooSoon = LeaseAdmission.nearestWindow(
            request, admitted: admitted, capacity: Self.capacity, onDemand: onDemand, latestStartMilliseconds: 4999)
        #expect(tooSoon == nil)
    }

    @Test func aRequestLargerThanTheCapacityHasNoWindow() throws {
        let request = try Self.lease("huge", 9, 0, 10)
        #expect(
            LeaseAdmission.nearestWindow(
                request, admitted: [], capacity: Self.capacity, onDemand: .zero, latestStartMilliseconds: .max) == nil)
    }

    @Test func invalidLeasesAreRefused() {
        #expect(throws: ControlError.self) { try Self.lease("empty", 1, 10, 10) }
        #expect(throws: ControlError.self) { try Self.lease("none", 0, 0, 10) }
        #expect(throws: ControlError.self) { try Self.lease("huge", Int.max, 0, 10) }
    }

    // MARK: - Against brute force

    static let grid: Int64 = 40

    /// The load of the leases and the on-demand load at instant `t`.
    static func oracleLoad(_ leases: [LeaseRequest], onDemand: Resources, at t: Int64) -> Resources {
        leases.filter { $0.startMilliseconds <= t && t < $0.endMilliseconds }.reduce(onDemand) { $0 + $1.total }
    }

    static func oracleShortfall(_ load: Resources, _ capacity: Resources) -> Resources {
        Resources(
            vcpus: max(0, load.vcpus - capacity.vcpus), memoryBytes: max(0, load.memoryBytes - capacity.memoryBytes),
            diskBytes: max(0, load.diskBytes - capacity.diskBytes))
    }

    /// Every grid instant of the window, one by one.
    static func oracleDecide(
        _ request: LeaseRequest, _ admitted: [LeaseRequest], _ capacity: Resources, _ onDemand: Resources
    )
        -> LeaseDecision
    {
        var first: (at: Int64, shortfall: Resources)?
        var until: Int64 = request.endMilliseconds
        var peak = Resources.zero
        for t in request.startMilliseconds..<request.endMilliseconds {
            let load = oracleLoad(admitted + [request], onDemand: onDemand, at: t)
            let shortfall = oracleShortfall(load, capacity)
            if let found = first, until == request.endMilliseconds,
                load != oracleLoad(admitted + [request], onDemand: onDemand, at: found.at)
            {
                until = t
            }
            guard shortfall != .zero else { continue }
            if first == nil { first = (t, shortfall) }
            peak = Resources(
                vcpus: max(peak.vcpus, shortfall.vcpus), memoryBytes: max(peak.memoryBytes, shortfall.memoryBytes),
                diskBytes: max(peak.diskBytes, shortfall.diskBytes))
        }
        guard let first else { return .admit }
        var dimensions: [ResourceDimension] = []
        if first.shortfall.vcpus > 0 { dimensions.append(.vcpus) }
        if first.shortfall.memoryBytes > 0 { dimensions.append(.memory) }
        if first.shortfall.diskBytes > 0 { dimensions.append(.disk) }
        return .refuse(
            LeaseShortfall(
                leaseID: request.id, atMilliseconds: first.at, untilMilliseconds: until, shortfall: first.shortfall,
                dimensions: dimensions, peakShortfall: peak))
    }

    /// Every candidate start from the request's, one by one.
    static func oracleNearest(
        _ request: LeaseRequest, _ admitted: [LeaseRequest], _ capacity: Resources, _ onDemand: Resources,
        latestStart: Int64
    ) -> LeaseWindow? {
        let length = request.endMilliseconds - request.startMilliseconds
        guard request.startMilliseconds <= latestStart else { return nil }
        for start in request.startMilliseconds...latestStart {
            let fits = (start..<start + length).allSatisfy { t in
                capacity.fits(oracleLoad(admitted, onDemand: onDemand, at: t) + request.total)
            }
            if fits { return LeaseWindow(startMilliseconds: start, endMilliseconds: start + length) }
        }
        return nil
    }

    /// Small units on a small capacity, so that leases collide often.
    static func randomLease(_ random: inout SplitMix64, id: String) throws -> LeaseRequest {
        let start = Int64.random(in: 0..<grid, using: &random)
        let end = Int64.random(in: (start + 1)...min(grid, start + 1 + grid / 2), using: &random)
        let unit = Resources(
            vcpus: Int.random(in: 0...3, using: &random), memoryBytes: Int.random(in: 0...2, using: &random),
            diskBytes: Int.random(in: 0...1, using: &random))
        return try lease(id, Int.random(in: 1...3, using: &random), start, end, unit: unit)
    }

    static func randomCapacity(_ random: inout SplitMix64) -> (capacity: Resources, onDemand: Resources) {
        let capacity = Resources(
            vcpus: Int.random(in: 4...16, using: &random), memoryBytes: Int.random(in: 2...10, using: &random),
            diskBytes: Int.random(in: 1...6, using: &random))
        let onDemand = Resources(
            vcpus: Int.random(in: 0...4, using: &random), memoryBytes: Int.random(in: 0...3, using: &random),
            diskBytes: Int.random(in: 0...2, using: &random))
        return (capacity, onDemand)
    }

    /// 10,000 random sequences of requests, each admitted or refused in turn as the controller
    /// would: every decision agrees with the oracle, and the admitted leases never overbook any
    /// instant.
    @Test func sequencesAgreeWithTheOracleAndNeverOverbook() throws {
        let seed: UInt64 = 0x1EA5_E017
        var random = SplitMix64(seed: seed)
        var admittedCount = 0
        var refusedCount = 0
        for sequence in 0..<10_000 {
            let (capacity, onDemand) = Self.randomCapacity(&random)
            var admitted: [LeaseRequest] = []
            for index in 0..<6 {
                let request = try Self.randomLease(&random, id: "\(sequence).\(index)")
                let decision = LeaseAdmission.decide(
                    request, admitted: admitted, capacity: capacity, onDemand: onDemand)
                let expected = Self.oracleDecide(request, admitted, capacity, onDemand)
                #expect(decision == expected, "seed \(seed) sequence \(sequence): \(request) after \(admitted)")
                guard decision == .admit else {
                    refusedCount += 1
                    continue
                }
                admittedCount += 1
                admitted.append(request)
            }
            // The on-demand load alone may exceed a small capacity (a host failed): then every
            // request is refused, and no instant a lease holds may be over.
            for t in 0..<Self.grid
            where admitted.contains(where: { $0.startMilliseconds <= t && t < $0.endMilliseconds }) {
                if !capacity.fits(Self.oracleLoad(admitted, onDemand: onDemand, at: t)) {
                    Issue.record("seed \(seed) sequence \(sequence): overbooked at \(t)")
                }
            }
        }
        // Both outcomes were exercised.
        #expect(admittedCount > 10_000 && refusedCount > 10_000, "admitted \(admittedCount), refused \(refusedCount)")
    }

    @Test func nearestWindowAgreesWithTheOracle() throws {
        let seed: UInt64 = 0x0E4E_5017
        var random = SplitMix64(seed: seed)
        var found = 0
        var moved = 0
        for round in 0..<3000 {
            let (capacity, onDemand) = Self.randomCapacity(&random)
            let admitted = try (0..<Int.random(in: 0...6, using: &random)).map { index in
                try Self.randomLease(&random, id: "\(round).\(index)")
            }
            let request = try Self.randomLease(&random, id: "\(round).request")
            let latestStart = Int64.random(in: 0...(2 * Self.grid), using: &random)
            let window = LeaseAdmission.nearestWindow(
                request, admitted: admitted, capacity: capacity, onDemand: onDemand,
                latestStartMilliseconds: latestStart)
            let expected = Self.oracleNearest(request, admitted, capacity, onDemand, latestStart: latestStart)
            #expect(window == expected, "seed \(seed) round \(round): \(request) after \(admitted), by \(latestStart)")
            if let window {
                found += 1
                if window.startMilliseconds != request.startMilliseconds { moved += 1 }
            }
        }
        #expect(found > 300 && found < 2700 && moved > 300, "found \(found), moved \(moved) of 3000")
    }
}
