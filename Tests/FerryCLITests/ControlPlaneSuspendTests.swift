import FerryAgent
import FerryTestSupport
import Foundation
import Testing

/// A user's suspend and resume through `ferry control`: the host saves the guest to its suspend
/// file (the controller's `suspended`), a second suspend is refused, a resume restores it
/// (building → running without a KVM guest's first-console-line wait: a restored guest prints
/// nothing new), and a suspended guest is deleted from its host.
@Suite(.serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct ControlPlaneSuspendTests {
    @Test func aBuiltInGuestIsSuspendedResumedAndDeleted() throws {
        try Self.suspendResumeDelete(try ControlPlaneFixture("cps1", agents: 1), image: "builtin")
    }

    @Test(.tags(.kvm), .skippable(.kvm), .enabled(if: Requirement.kvm.met, Requirement.kvm.why))
    func aKVMGuestIsSuspendedResumedAndDeleted() throws {
        try Self.suspendResumeDelete(try ControlPlaneFixture("cps2", agents: 1), image: "kvm")
    }

    /// The controller killed right after it asked for a resume: at its next start the build it
    /// finishes is a resume (its host may have restored the guest already; no first console line
    /// is waited for), and the guest runs.
    @Test(.tags(.kvm), .skippable(.kvm), .enabled(if: Requirement.kvm.met, Requirement.kvm.why))
    func aControllerKilledMidResumeFinishesItAtItsNextStart() throws {
        let cloud = try ControlPlaneFixture("cps3", agents: 1, controllerExtra: ["--boot-timeout", "5"])
        let body: [String: Any] = ["name": "r", "flavor": "tiny", "image": "kvm"]
        let id = try #require(try cloud.json("POST", "/v1/projects/alpha/guests", body).1["id"] as? String)
        try #require(try cloud.waitForGuest(id) { ["running", "error"].contains($0) }["state"] as? String == "running")
        #expect(try cloud.json("POST", "/v1/guests/\(id)/suspend").0 == 200)
        #expect(try cloud.json("POST", "/v1/guests/\(id)/resume").0 == 202)
        cloud.killController()
        usleep(300_000)
        try cloud.startController()
        let view = try cloud.waitForGuest(id, timeout: 20) { $0 == "running" || $0 == "error" }
        #expect(view["state"] as? String == "running", "\(view)")
        #expect(try cloud.agents[0].view("c-\(id)").state == "running")
        let journal = try cloud.json("GET", "/v1/guests/\(id)/journal").1["entries"] as? [[String: Any]] ?? []
        let cause = journal.last { $0["to"] as? String == "running" }?["cause"] as? String ?? ""
        #expect(cause.contains("restored from its suspend file"), "finished as a resume: \(cause)")
    }

    static func suspendResumeDelete(_ cloud: ControlPlaneFixture, image: String) throws {
        let body: [String: Any] = ["name": "s", "flavor": "tiny", "image": image]
        let id = try #require(try cloud.json("POST", "/v1/projects/alpha/guests", body).1["id"] as? String)
        try #require(try cloud.waitForGuest(id) { ["running", "error"].contains($0) }["state"] as? String == "running")
        let agent = cloud.agents[0]

        let (suspended, view) = try cloud.json("POST", "/v1/guests/\(id)/suspend")
        #expect(suspended == 200 && view["state"] as? String == "suspended", "\(view)")
        #expect(try agent.view("c-\(id)").state == "suspended")
        let (again, refusal) = try cloud.json("POST", "/v1/guests/\(id)/suspend")
        #expect(again == 409 && "\(refusal)".contains("suspend takes a running guest"), "\(refusal)")

        let asked = ContinuousClock.now
        let (resumed, building) = try cloud.json("POST", "/v1/guests/\(id)/resume")
        #expect(resumed == 202 && building["state"] as? String == "building", "\(building)")
        let running = try cloud.waitForGuest(id) { $0 != "building" }
        let took = (ContinuousClock.now - asked) / .milliseconds(1)
        print("\(image) guest: resume to running in \(Int(took.rounded())) ms")
        #expect(running["state"] as? String == "running", "\(running)")
        #expect(try agent.view("c-\(id)").state == "running")
        let journal = try cloud.json("GET", "/v1/guests/\(id)/journal").1["entries"] as? [[String: Any]] ?? []
        let causes = journal.compactMap { $0["cause"] as? String }
        #expect(causes.last?.contains("restored from its suspend file") == true, "\(causes)")
        let booted = try ControlPlaneWarmGroupTests.milliseconds(journal, from: "building", to: "running", last: false)
        let restored = try ControlPlaneWarmGroupTests.milliseconds(journal, from: "building", to: "running", last: true)
        print("\(image) guest: building → running \(booted) ms booted, \(restored) ms resumed")
        #expect(try cloud.json("POST", "/v1/guests/\(id)/resume").0 == 409, "a running guest is not resumed")

        _ = try cloud.json("POST", "/v1/guests/\(id)/suspend")
        #expect(try cloud.json("DELETE", "/v1/guests/\(id)").1["state"] as? String == "deleted")
        #expect(try agent.list().isEmpty, "the suspended guest was removed from its host")
        #expect(
            journal.compactMap { $0["to"] as? String } == [
                "pending", "building", "running", "suspended", "building", "running",
            ])
    }
}
