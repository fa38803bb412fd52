import FerryHostModel
import FerryTestSupport
import Foundation
import Synchronization
import Testing

@testable import FerryControl

/// Leases in the store, on every backend this run has: admitted against the hosts, the guests
/// that hold capacity now and the other leases, in the transaction that records them.
@Suite struct LeaseStoreTests {
    static let hour = 3600.0

    /// Ten slots, three held by guests: seven reserved for an hour fit; one more overlapping
    /// them is refused naming the instant, the amount and the nearest window (when the first
    /// ends); cancelling the first lets it in; a lease that starts when another ends does not
    /// overlap it.
    @Test(arguments: StoreBackend.available)
    func aLeaseIsAdmittedOnlyIfItsWholeWindowFits(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let store = try await backend.store(scratch)
        defer { backend.close(store) }
        _ = try await store.registerHost(host("h1", slots: 10))
        for index in 0..<3 { _ = try await store.createGuest(request("g\(index)"), clientToken: nil, cause: "api") }
        let base = Date(timeIntervalSince1970: (Date().timeIntervalSince1970 / 60).rounded(.up) * 60 + Self.hour)
        let first = try await store.admitLease(
            LeaseSubmission(project: "alpha", flavor: "small", count: 7, start: base, end: base + Self.hour))
        #expect(first.state == .admitted && first.unit == small.resources && first.count == 7)

        let overlapping = LeaseSubmission(
            project: "alpha", flavor: "small", count: 1, start: base + Self.hour / 2, end: base + 2 * Self.hour)
        let refusal = await controlError { () async throws(ControlError) in try await store.admitLease(overlapping) }
        #expect(refusal?.code == .insufficientCapacity)
        let said = refusal?.message ?? ""
        #expect(said.contains(ControlRules.iso(Billing.milliseconds(base + Self.hour / 2))), "\(said)")
        #expect(said.contains("short by \(small.resources)"), "\(said)")
        #expect(
            said.contains("nearest window") && said.contains(ControlRules.iso(Billing.milliseconds(base + Self.hour))))

        let after = try await store.admitLease(
            LeaseSubmission(
                project: "alpha", flavor: "small", count: 7, start: base + Self.hour, end: base + 2 * Self.hour))
        #expect(after.state == .admitted, "[a, b) and [b, c) do not overlap")
        #expect(try await store.cancelLease(id: after.id).state == .cancelled)
        #expect(try await store.cancelLease(id: first.id).state == .cancelled)
        #expect(try await store.admitLease(overlapping).state == .admitted)
        let listed = try await store.leases(project: "alpha")
        #expect(listed.map(\.start) == [base, base + Self.hour / 2, base + Self.hour])
        #expect(listed.map(\.state) == [.cancelled, .admitted, .cancelled])
        #expect(try await store.lease(id: "nothing") == nil)
        #expect(
            await controlError { () async throws(ControlError) in try await store.cancelLease(id: "nothing") }?.code
                == .notFound)
        let bad = LeaseSubmission(project: "alpha", flavor: "small", count: 1, start: base, end: base)
        #expect(
            await controlError { () async throws(ControlError) in try await store.admitLease(bad) }?.code
                == .invalidArgument)
        let unknown = LeaseSubmission(project: "alpha", flavor: "huge", count: 1, start: base, end: base + 60)
        #expect(
            await controlError { () async throws(ControlError) in try await store.admitLease(unknown) }?.code
                == .notFound)
    }

    /// Twenty requests for one slot each over the same window, at once, with five slots free:
    /// exactly five are admitted (the check and the insert are one transaction).
    @Test(arguments: StoreBackend.available)
    func parallelLeasesNeverOverbook(backend: StoreBackend) async throws {
        let scratch = Scratch()
        let store = try await backend.store(scratch)
        defer { backend.close(store) }
        _ = try await store.registerHost(host("h1", slots: 5))
        let start = Date().addingTimeInterval(Self.hour)
        let outcomes = Mutex<[String: Int]>([:])
        await concurrently(20) { _ in
            let outcome: String
            do {
                _ = try await store.admitLease(
                    LeaseSubmission(project: "alpha", flavor: "small", count: 1, start: start, end: start + Self.hour))
                outcome = "admitted"
            } catch let error as ControlError {
                outcome = error.code.rawValue
            } catch {
                outcome = "\(error)"
            }
            outcomes.withLock { $0[outcome, default: 0] += 1 }
        }
        #expect(outcomes.withLock { $0 } == ["admitted": 5, "insufficientCapacity": 15])
        #expect(try await store.leases(project: "alpha").count == 5)
    }
}
