import FerryAgent
import FerryTestSupport
import Foundation
import Testing

/// A lease with `at_end: suspend` through `ferry control` and a real agent (built-in guests, and
/// KVM guests where the host has KVM): its guests are suspended at the window's end as a user's
/// suspend does (their host holds the saved state), the project's user resumes one, and it is
/// billed only while it ran. A guest whose host cannot suspend it (its suspend file's path taken
/// by a directory, so the vmm's save fails) is stopped gracefully instead, and the lease's note
/// says which and why.
@Suite(.serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct ControlPlaneLeaseSuspendTests {
    static let password = "correct horse battery staple"

    @Test func aSuspendLeaseSuspendsItsBuiltInGuestsAtItsEnd() throws {
        try Self.suspendAtTheEnd(try ControlPlaneFixture("cpls1", agents: 1), image: "builtin")
    }

    @Test(.tags(.kvm), .skippable(.kvm), .enabled(if: Requirement.kvm.met, Requirement.kvm.why))
    func aSuspendLeaseSuspendsItsKVMGuestsAtItsEnd() throws {
        try Self.suspendAtTheEnd(try ControlPlaneFixture("cpls2", agents: 1), image: "kvm")
    }

    static func suspendAtTheEnd(_ cloud: ControlPlaneFixture, image: String) throws {
        let agent = cloud.agents[0]
        let http = CloudHTTP(base: cloud.url)
        #expect(try cloud.json("POST", "/v1/users", ["name": "alice", "password": Self.password]).0 == 201)
        #expect(try cloud.json("PUT", "/v1/projects/alpha/members/alice", ["role": "member"]).0 == 200)
        let alice = try http.token(user: "alice", password: Self.password)

        let start = Date() + 2
        let (status, admitted) = try cloud.json(
            "POST", "/v1/projects/alpha/leases",
            [
                "flavor": "tiny", "count": 2, "start": ControlPlaneLeaseTests.time(start),
                "end": ControlPlaneLeaseTests.time(start + 30), "at_end": "suspend",
            ])
        try #require(status == 201, "\(admitted)")
        let lease = try #require(admitted["id"] as? String)
        _ = try ControlPlaneLeaseTests.waitForLease(cloud, lease, timeout: 30) { $0 == "active" }

        var ids: [String] = []
        for name in ["kept", "faulty"] {
            let (created, guest, _) = try http.call(
                "POST", "/v1/projects/alpha/guests",
                ["name": name, "flavor": "tiny", "image": image, "lease": lease], bearer: alice)
            try #require(created == 202, "\(guest)")
            ids.append(try #require(guest["id"] as? String))
        }
        for id in ids {
            let view = try cloud.waitForGuest(id, timeout: 60) { ["running", "error"].contains($0) }
            try #require(view["state"] as? String == "running", "\(view)")
        }
        let (kept, faulty) = (ids[0], ids[1])
        // The fault: the vmm saves to a temporary file and renames it onto a directory.
        let faultyOnHost = try agent.view("c-\(faulty)").id
        try FileManager.default.createDirectory(
            atPath: "\(agent.guestsDirectory)/\(faultyOnHost).suspend", withIntermediateDirectories: false)
        #expect(try cloud.json("GET", "/v1/leases/\(lease)").1["phase"] as? String == "active", "still in its window")

        let ended = try ControlPlaneLeaseTests.waitForLease(cloud, lease, timeout: 90) { $0 == "ended" }
        let note = "\(ended["note"] ?? "")"
        #expect((ended["slots"] as? [String: Int] ?? [:]).isEmpty, "\(ended)")
        #expect(note.contains("1 guests suspended") && note.contains("1 stopped gracefully instead"), "\(note)")
        #expect(note.contains("guest \(faulty) not suspended (host h1 did not suspend"), "\(note)")
        #expect(!note.contains("guest \(kept)"), "\(note)")

        // The kept guest: suspended, its host holding the saved state; the faulty one stopped.
        #expect(try cloud.json("GET", "/v1/guests/\(kept)").1["state"] as? String == "suspended")
        let keptOnHost = try agent.view("c-\(kept)")
        #expect(keptOnHost.state == "suspended")
        var isDirectory: ObjCBool = true
        let saved = "\(agent.guestsDirectory)/\(keptOnHost.id).suspend"
        #expect(FileManager.default.fileExists(atPath: saved, isDirectory: &isDirectory) && !isDirectory.boolValue)
        #expect(try cloud.json("GET", "/v1/guests/\(faulty)").1["state"] as? String == "stopped")
        #expect(try agent.view("c-\(faulty)").state == "stopped")
        let keptCauses = try Self.journal(cloud, kept).compactMap { $0["cause"] as? String }
        #expect(
            keptCauses.contains { $0.contains("lease \(lease): its window ended (at_end: suspend)") }, "\(keptCauses)")
        let faultyCauses = try Self.journal(cloud, faulty).compactMap { $0["cause"] as? String }
        #expect(
            faultyCauses.contains { $0.contains("lease \(lease)") && $0.contains("stopped gracefully instead") },
            "\(faultyCauses)")

        // The project's user resumes it; once stopped, it is billed its running time alone.
        usleep(300_000)
        let (resumed, building, _) = try http.call("POST", "/v1/guests/\(kept)/resume", bearer: alice)
        #expect(resumed == 202, "\(building)")
        #expect(try cloud.waitForGuest(kept, timeout: 60) { $0 != "building" }["state"] as? String == "running")
        #expect(try agent.view("c-\(kept)").state == "running")
        #expect(try http.call("POST", "/v1/guests/\(kept)/stop", bearer: alice).0 == 200)
        let journal = try Self.journal(cloud, kept)
        let running = try ControlPlaneBillingTests.runningMilliseconds(journal)
        let suspended = try Self.milliseconds(journal, from: "suspended")
        #expect(suspended >= 300, "suspended at least 300 ms: \(journal)")
        let invoice = try cloud.json(
            "GET", "/v1/projects/alpha/invoice?from=2000-01-01T00:00:00Z&to=2100-01-01"
        ).1
        let line = (invoice["lines"] as? [[String: Any]] ?? []).first { $0["guest_id"] as? String == kept }
        let billed = try #require(ControlPlaneBillingTests.integer(line?["billed_milliseconds"]), "\(invoice)")
        #expect(billed == running, "billed \(billed) ms, ran \(running) ms by the journal: \(invoice)")
        let lifetime = try Self.milliseconds(journal, from: "running", to: "stopped")
        #expect(billed + suspended <= lifetime, "the suspended \(suspended) ms are not billed: \(journal)")
    }

    static func journal(_ cloud: ControlPlaneFixture, _ id: String) throws -> [[String: Any]] {
        try cloud.json("GET", "/v1/guests/\(id)/journal").1["entries"] as? [[String: Any]] ?? []
    }

    /// Milliseconds from the first entry into `from` to the next entry out of it (or, with `to`,
    /// to the last entry into `to`).
    static func milliseconds(_ entries: [[String: Any]], from: String, to: String? = nil) throws -> Int64 {
        let style = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        let times = try entries.map { try style.parse(try #require($0["time"] as? String)) }
        let begin = try #require(entries.firstIndex { $0["to"] as? String == from })
        let end =
            if let to {
                try #require(entries.lastIndex { $0["to"] as? String == to })
            } else {
                try #require(entries.indices.first { $0 > begin })
            }
        return Int64((times[end].timeIntervalSince(times[begin]) * 1000).rounded())
    }
}
