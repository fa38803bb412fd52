import Foundation
import Testing

@testable import FerryControl

@Suite struct AuthorizationTests {
    /// Who asks, about project `alpha`.
    enum Asker: String, CaseIterable {
        case outsider, member, admin, siteAdmin, memberElsewhere

        var principal: Principal {
            switch self {
            case .outsider: Principal(user: "eve")
            case .member: Principal(user: "bob", memberships: ["alpha": .member, "beta": .admin])
            case .admin: Principal(user: "ann", memberships: ["alpha": .admin])
            case .siteAdmin: Principal(user: "root", siteAdmin: true)
            case .memberElsewhere: Principal(user: "max", memberships: ["beta": .admin])
            }
        }
    }

    /// Every project action × every asker, written out: outsiders find nothing (404, never 403),
    /// members run guests, admins also read the invoice, manage members and reserve capacity (leases), a site admin is an
    /// admin everywhere.
    @Test func everyProjectActionForEveryRole() {
        let expected: [ProjectAction: [Asker: AccessDecision]] = [
            .listGuests: [.member: .allow, .admin: .allow, .siteAdmin: .allow],
            .readGuest: [.member: .allow, .admin: .allow, .siteAdmin: .allow],
            .createGuest: [.member: .allow, .admin: .allow, .siteAdmin: .allow],
            .stopGuest: [.member: .allow, .admin: .allow, .siteAdmin: .allow],
            .startGuest: [.member: .allow, .admin: .allow, .siteAdmin: .allow],
            .deleteGuest: [.member: .allow, .admin: .allow, .siteAdmin: .allow],
            .readInvoice: [.member: .forbidden, .admin: .allow, .siteAdmin: .allow],
            .manageMembers: [.member: .forbidden, .admin: .allow, .siteAdmin: .allow],
            .readLeases: [.member: .allow, .admin: .allow, .siteAdmin: .allow],
            .manageLeases: [.member: .forbidden, .admin: .allow, .siteAdmin: .allow],
            .readGroups: [.member: .allow, .admin: .allow, .siteAdmin: .allow],
            .manageGroups: [.member: .forbidden, .admin: .allow, .siteAdmin: .allow],
            .setMigrationPolicy: [.member: .allow, .admin: .allow, .siteAdmin: .allow],
        ]
        #expect(Set(expected.keys) == Set(ProjectAction.allCases))
        for action in ProjectAction.allCases {
            for asker in Asker.allCases {
                let want = expected[action]?[asker] ?? .notFound
                #expect(
                    Authorization.decide(asker.principal, action, project: "alpha") == want,
                    "\(asker.rawValue) asking \(action.rawValue)")
            }
        }
    }

    @Test func everySiteActionForEveryRole() {
        for action in SiteAction.allCases {
            for asker in Asker.allCases {
                let want: AccessDecision = action == .readCatalogue || asker == .siteAdmin ? .allow : .forbidden
                #expect(
                    Authorization.decide(asker.principal, action) == want, "\(asker.rawValue) asking \(action.rawValue)"
                )
            }
        }
    }

    @Test func aRoleInOneProjectGivesNothingInAnother() {
        let bob = Asker.member.principal
        #expect(Authorization.decide(bob, .manageMembers, project: "beta") == .allow)
        #expect(Authorization.decide(bob, .manageMembers, project: "alpha") == .forbidden)
        #expect(Authorization.decide(bob, .readGuest, project: "gamma") == .notFound)
        let projects = ["alpha", "beta", "gamma"].map {
            Project(name: $0, quota: Quota(guests: 1, resources: .zero))
        }
        #expect(bob.visible(projects).map(\.name) == ["alpha", "beta"])
        #expect(Asker.siteAdmin.principal.visible(projects).count == 3)
        #expect(Asker.outsider.principal.visible(projects).isEmpty)
    }

    @Test func requireGivesTheCallersNotFoundOrForbidden() {
        func code(_ body: () throws(ControlError) -> Void) -> ControlError.Code? {
            do {
                try body()
                return nil
            } catch { return error.code }
        }
        let bob = Asker.member.principal
        #expect(
            code { () throws(ControlError) in
                try Authorization.require(bob, .readGuest, project: "gamma", notFoundMessage: "no guest x")
            } == .notFound)
        #expect(
            code { () throws(ControlError) in
                try Authorization.require(bob, .readInvoice, project: "alpha", notFoundMessage: "no project alpha")
            } == .forbidden)
        #expect(
            code { () throws(ControlError) in
                try Authorization.require(bob, .createGuest, project: "alpha", notFoundMessage: "no project alpha")
            } == nil)
        #expect(code { () throws(ControlError) in try Authorization.require(bob, .manageHosts) } == .forbidden)
        #expect(code { () throws(ControlError) in try Authorization.require(bob, .readCatalogue) } == nil)
    }
}

@Suite struct LoginThrottleTests {
    let start = Date(timeIntervalSince1970: 1_800_000_000)

    @Test func threeFreeFailuresThenDoublingFromOneSecondUpToFiveMinutes() {
        let throttle = LoginThrottle.standard
        let delays = (0...14).map { throttle.delay(afterFailures: $0) }
        #expect(
            delays
                == [0, 0, 0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300].map { Duration.seconds($0) })
        #expect(throttle.delay(afterFailures: 1_000_000) == .seconds(300))
    }

    @Test func theWaitCountsFromTheLastFailure() {
        let throttle = LoginThrottle.standard
        #expect(throttle.decide(failures: 0, lastFailure: nil, now: start) == .allowed)
        #expect(throttle.decide(failures: 2, lastFailure: start, now: start) == .allowed)
        #expect(throttle.decide(failures: 3, lastFailure: start, now: start) == .throttled(retryAfter: .seconds(1)))
        #expect(
            throttle.decide(failures: 3, lastFailure: start, now: start + 0.25)
                == .throttled(retryAfter: .milliseconds(750)))
        #expect(throttle.decide(failures: 3, lastFailure: start, now: start + 1) == .allowed)
        #expect(throttle.decide(failures: 5, lastFailure: start, now: start + 3) == .throttled(retryAfter: .seconds(1)))
        #expect(
            throttle.decide(failures: 50, lastFailure: start, now: start + 299) == .throttled(retryAfter: .seconds(1)))
        #expect(throttle.decide(failures: 50, lastFailure: start, now: start + 300) == .allowed)
        // A clock that went back: as if no time passed.
        #expect(
            throttle.decide(failures: 3, lastFailure: start, now: start - 10) == .throttled(retryAfter: .seconds(1)))
    }

    /// Against the rule spelled out the slow way, over many counts and elapsed times.
    @Test func agreesWithTheRuleForManyCountsAndTimes() {
        let throttle = LoginThrottle(freeFailures: 2, firstDelay: .milliseconds(500), maximumDelay: .seconds(60))
        for failures in 0...30 {
            var wait = 0
            if failures >= 2 {
                wait = 500
                for _ in 0..<(failures - 2) { wait = min(wait * 2, 60_000) }
            }
            for elapsed in stride(from: 0, through: 70_000, by: 250) {
                let decision = throttle.decide(
                    failures: failures, lastFailure: start, now: start + Double(elapsed) / 1000)
                let want: LoginThrottle.Decision =
                    elapsed >= wait ? .allowed : .throttled(retryAfter: .milliseconds(wait - elapsed))
                #expect(decision == want, "\(failures) failures, \(elapsed) ms later")
            }
        }
    }
}
