import FerryTestSupport
import Foundation
import Testing

/// A group whose members keep failing to build backs off: on a real controller and agent, an
/// image whose disk template is missing on the host makes every build fail; the members' journals
/// show each new member made no sooner than 2^k s after the k-th failure in a row (lower bounds
/// only: a loaded machine makes the gaps longer, never shorter), and `GET /v1/groups/{id}` shows
/// the failures and the next attempt, as does the console's group page. Once the template is there a member runs and the back-off
/// is gone.
@Suite(.serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct ControlPlaneGroupBackoffTests {
    /// The time of the member's first journal entry to `state`, in seconds since 1970.
    static func time(_ cloud: ControlPlaneFixture, _ id: String, to state: String) throws -> Double? {
        let journal = try cloud.json("GET", "/v1/guests/\(id)/journal").1["entries"] as? [[String: Any]] ?? []
        let text = journal.first { $0["to"] as? String == state }?["time"] as? String
        let style = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        return try text.map { try style.parse($0).timeIntervalSince1970 }
    }

    @Test func aGroupWhoseBuildsFailWaitsLongerBeforeEachNewMember() throws {
        let cloud = try ControlPlaneFixture("gbo", agents: 1, controllerExtra: ["--scaling-interval", "0.2"])
        let template = cloud.scratch.file("late-template.raw")
        let image: [String: Any] = ["name": "late", "kind": "builtin", "disk_template_path": template]
        #expect(try cloud.json("POST", "/v1/images", image).0 == 201)
        let policy: [String: Any] = ["type": "target_tracking", "metric": "cpu", "target": 50]
        let body: [String: Any] = [
            "name": "bad", "flavor": "tiny", "image": "late", "min": 1, "max": 1, "policy": policy,
        ]
        let (made, group) = try cloud.json("POST", "/v1/projects/alpha/groups", body)
        try #require(made == 201, "\(group)")
        let id = try #require(group["id"] as? String)

        // Four members: three failed, each next one made after the back-off.
        var members: [[String: Any]] = []
        let deadline = Date().addingTimeInterval(90)
        while Date() < deadline {
            members = try cloud.json("GET", "/v1/groups/\(id)").1["members"] as? [[String: Any]] ?? []
            if members.count >= 4 { break }
            usleep(100_000)
        }
        try #require(members.count >= 4, "four attempts within 90 s: \(members.count)")
        let backoff = try cloud.json("GET", "/v1/groups/\(id)").1["build_backoff"] as? [String: Any] ?? [:]
        #expect((backoff["failures_in_a_row"] as? Int ?? 0) >= 3, "\(backoff)")
        #expect(backoff["next_attempt_at"] is String, "\(backoff)")
        var gaps: [String] = []
        for k in 1...3 {
            let failed = try #require(try Self.time(cloud, members[k - 1]["id"] as? String ?? "", to: "error"))
            let next = try #require(try Self.time(cloud, members[k]["id"] as? String ?? "", to: "pending"))
            let wait = pow(2, Double(k))
            gaps.append(String(format: "%.2f s after failure %d (at least %.0f s)", next - failed, k, wait))
            #expect(next - failed >= wait - 0.002, "member \(k + 1) was made \(next - failed) s after failure \(k)")
        }
        print("back-off: " + gaps.joined(separator: "; "))
        // The console's group page shows it too, as a row of its own and the newest action.
        let password = "correct horse battery staple"
        #expect(try cloud.json("POST", "/v1/users", ["name": "alice", "password": password]).0 == 201)
        #expect(try cloud.json("PUT", "/v1/projects/alpha/members/alice", ["role": "member"]).0 == 200)
        let alice = try ConsoleBrowser(http: CloudHTTP(base: cloud.url)).logIn("alice", password)
        let page = try alice.get("/console/groups/\(id)").body
        #expect(page.contains(#"id="backoff""#) && page.contains("member builds failed in a row"), "\(page)")
        #expect(page.contains("back-off: "), "the newest action: \(page)")
        let causes = try cloud.json("GET", "/v1/guests/\(members[1]["id"] as? String ?? "")/journal").1["entries"]
        #expect("\(causes ?? "")".contains("failed builds in a row"), "the removal says so: \(causes ?? "")")

        // The template arrives: the next member runs and the back-off is over.
        try ControlPlaneFixture.writeTemplate(template)
        var last: [String: Any] = [:]
        let healed = Date().addingTimeInterval(120)
        while Date() < healed {
            last = try cloud.json("GET", "/v1/groups/\(id)").1
            let states = (last["members"] as? [[String: Any]] ?? []).compactMap { $0["state"] as? String }
            if states.contains("running") { break }
            usleep(200_000)
        }
        let states = (last["members"] as? [[String: Any]] ?? []).compactMap { $0["state"] as? String }
        #expect(states.contains("running"), "\(states)")
        let after = last["build_backoff"] as? [String: Any] ?? [:]
        #expect(after["failures_in_a_row"] as? Int == 0 && after["next_attempt_at"] == nil, "\(after)")
    }
}
