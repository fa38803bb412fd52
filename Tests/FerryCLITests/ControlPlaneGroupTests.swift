import FerryAgent
import FerryTestSupport
import Foundation
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// Auto-scaling groups on a real controller with two agents (each in a network namespace where
/// the machine allows it): a target-tracking group follows its members' load up to its max and
/// back down to its min, and its recorded actions show it (bounds, steps, stabilisation).
@Suite(.serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct ControlPlaneGroupTests {
    /// Sets the pace of a member (a controller guest) through its host's agent.
    static func pace(_ cloud: ControlPlaneFixture, _ member: [String: Any], _ rate: String) throws -> Int {
        let id = member["id"] as? String ?? ""
        let host = member["host"] as? String ?? ""
        guard let index = Int(host.dropFirst()), cloud.agents.indices.contains(index - 1) else { return 0 }
        let client = try cloud.agents[index - 1].client()
        let body = Array("{\"rate\":\"\(rate)\"}".utf8)
        let send = { @Sendable in try client.send("POST", "/v1/guests/c-\(id)/pace", body: body).status }
        return try cloud.namespace(index).map { try NetworkNamespaces.run(in: $0, send) } ?? send()
    }

    /// The group and its live members (not deleted).
    static func group(_ cloud: ControlPlaneFixture, _ id: String) throws -> ([String: Any], [[String: Any]]) {
        let group = try cloud.json("GET", "/v1/groups/\(id)").1
        let members = (group["members"] as? [[String: Any]] ?? []).filter { $0["state"] as? String != "deleted" }
        return (group, members)
    }

    /// The group and its members as text, for a failure's message.
    static func describe(_ cloud: ControlPlaneFixture, _ id: String) -> String {
        (try? group(cloud, id)).map { "\($0)" } ?? "(the group could not be read)"
    }

    /// Paces every running member at `rate` (each once) until `done` holds for the group and its
    /// live members, at most `timeout` s.
    static func drive(
        _ cloud: ControlPlaneFixture, _ id: String, rate: String, timeout: Double,
        until done: ([String: Any], [[String: Any]]) -> Bool
    ) throws -> Bool {
        var paced: Set<String> = []
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let (group, members) = try group(cloud, id)
            if done(group, members) { return true }
            for member in members where member["state"] as? String == "running" {
                let memberID = member["id"] as? String ?? ""
                if !paced.contains(memberID), try pace(cloud, member, rate) == 200 { paced.insert(memberID) }
            }
            usleep(300_000)
        }
        return false
    }

    @Test func aTargetTrackingGroupFollowsItsMembersLoadUpAndDown() throws {
        let cloud = try ControlPlaneFixture(
            "grp", agents: 2, namespaced: Requirement.namespaces.met, controllerExtra: ["--scaling-interval", "0.5"])
        let policy: [String: Any] = [
            "type": "target_tracking", "metric": "load", "target": 50, "tolerance": 0.1, "metric_window_seconds": 3,
            "scale_down_stabilisation_seconds": 5,
        ]
        let body: [String: Any] = [
            "name": "web", "flavor": "tiny", "image": "builtin", "min": 1, "max": 4, "policy": policy,
            "scale_in": "newest",
        ]
        let (made, created) = try cloud.json("POST", "/v1/projects/alpha/groups", body)
        try #require(made == 201 && created["desired"] as? Int == 1, "\(created)")
        let id = try #require(created["id"] as? String)
        #expect(try cloud.json("POST", "/v1/projects/alpha/groups", body).0 == 409, "the name is taken")
        var bad = body
        bad["name"] = "other"
        bad["max"] = 0
        let (refused, answer) = try cloud.json("POST", "/v1/projects/alpha/groups", bad)
        #expect(refused == 422 && "\(answer)".contains("min 1, max 0"), "\(answer)")

        // Up: every member at full demand (its load near 100% against a target of 50%).
        let grew = try Self.drive(cloud, id, rate: "400GB/s", timeout: 90) { group, members in
            group["desired"] as? Int == 4 && members.count == 4
                && members.allSatisfy { $0["state"] as? String == "running" }
        }
        #expect(grew, "the group did not grow to 4 running members: \(Self.describe(cloud, id))")
        let upActions = try actions(cloud, id)
        let lastUp = try #require(upActions.last)

        // Down: every member idle; after the 5 s down window the group goes back to its min.
        let shrank = try Self.drive(cloud, id, rate: "100KB/s", timeout: 90) { group, members in
            group["desired"] as? Int == 1 && members.count == 1
        }
        #expect(shrank, "the group did not shrink to 1 member: \(Self.describe(cloud, id))")

        let all = try actions(cloud, id)
        let summary = all.map { "\($0.from)→\($0.to) at \($0.time): \($0.reason)" }.joined(separator: "\n")
        print("group web's actions:\n\(summary)")
        #expect(all.first?.from == 0 && all.first?.to == 1 && all.first?.reason == "created", "\(summary)")
        #expect(all.allSatisfy { (1...4).contains($0.to) }, "bounds respected: \(summary)")
        let ups = all.dropFirst().filter { $0.to > $0.from }
        let downs = all.filter { $0.to < $0.from }
        #expect(!ups.isEmpty && ups.count <= 3 && ups.allSatisfy { $0.reason.contains("ceil(") }, "\(summary)")
        #expect(!downs.isEmpty && downs.count <= 3 && all.last?.to == 1, "\(summary)")
        #expect(
            all.dropFirst(upActions.count).allSatisfy { $0.to <= $0.from },
            "no flapping on the way down (a move to consolidate keeps the count): \(summary)")
        for down in downs {
            #expect(
                down.time.timeIntervalSince(lastUp.time) >= 4.9,
                "no scale-in within the 5 s down window of the last scale-out: \(summary)")
        }

        // The members taken out were stopped, then deleted, by the group.
        let members = try cloud.json("GET", "/v1/groups/\(id)").1["members"] as? [[String: Any]] ?? []
        let removed = members.filter { $0["state"] as? String == "deleted" }
        #expect(removed.count == members.count - 1 && removed.count >= 3, "\(members)")
        if let gone = removed.first?["id"] as? String {
            let journal = try cloud.json("GET", "/v1/guests/\(gone)/journal").1["entries"] as? [[String: Any]] ?? []
            let causes = journal.compactMap { $0["cause"] as? String }
            #expect(causes.contains { $0.hasPrefix("group web: scale in") }, "\(journal)")
            #expect(journal.contains { $0["to"] as? String == "stopped" }, "stopped before it was deleted: \(journal)")
        }

        // By hand, then the group is given up: every member goes.
        let (set, setAnswer) = try cloud.json("PUT", "/v1/groups/\(id)/desired", ["desired": 9])
        #expect(set == 422 && "\(setAnswer)".contains("[1, 4]"), "\(setAnswer)")
        let (deleted, gone) = try cloud.json("DELETE", "/v1/groups/\(id)")
        #expect(deleted == 200 && gone["state"] as? String == "deleted" && gone["desired"] as? Int == 0)
        let emptied = try Self.drive(cloud, id, rate: "100KB/s", timeout: 60) { _, members in members.isEmpty }
        #expect(emptied, "the deleted group's members were not all removed: \(Self.describe(cloud, id))")
        #expect(try actions(cloud, id).last?.reason.contains("delete the group") == true)
    }

    /// A threshold group (`load > 80 for 1 s → +1, cooldown 4 s`, 1 to 3 members) steps up one
    /// member at a time while its members are busy, never twice within its cooldown, and stops at
    /// its max.
    @Test func aThresholdGroupStepsUpNoFasterThanItsCooldown() throws {
        let cloud = try ControlPlaneFixture(
            "grpt", agents: 2, namespaced: Requirement.namespaces.met, controllerExtra: ["--scaling-interval", "0.5"])
        let policy: [String: Any] = [
            "type": "threshold", "metric": "load", "comparison": "above", "threshold": 80, "duration_seconds": 1,
            "step": 1, "cooldown_seconds": 4,
        ]
        let body: [String: Any] = [
            "name": "batch", "flavor": "tiny", "image": "builtin", "min": 1, "max": 3, "policy": policy,
        ]
        let (made, created) = try cloud.json("POST", "/v1/projects/alpha/groups", body)
        try #require(made == 201, "\(created)")
        let id = try #require(created["id"] as? String)
        let full = try Self.drive(cloud, id, rate: "400GB/s", timeout: 90) { group, members in
            group["desired"] as? Int == 3 && members.count == 3
                && members.allSatisfy { $0["state"] as? String == "running" }
        }
        #expect(full, "the group did not grow to 3 running members: \(Self.describe(cloud, id))")
        usleep(3_000_000)
        let all = try actions(cloud, id)
        let summary = all.map { "\($0.from)→\($0.to) at \($0.time): \($0.reason)" }.joined(separator: "\n")
        print("group batch's actions:\n\(summary)")
        #expect(all.map(\.to) == [1, 2, 3], "one step at a time, and none past the max: \(summary)")
        #expect(all.dropFirst().allSatisfy { $0.reason.contains("load above 80") }, "\(summary)")
        for (earlier, later) in zip(all.dropFirst(), all.dropFirst(2)) {
            #expect(later.time.timeIntervalSince(earlier.time) >= 3.9, "within the 4 s cooldown: \(summary)")
        }
    }

    /// Members of the project read its groups, its admins manage them, others find nothing; the
    /// console draws a group's page for a member. A threshold group keeps its one member.
    @Test func groupsAnswerTheProjectsMembersAndTheConsoleDrawsThem() throws {
        let cloud = try ControlPlaneFixture("grpa", agents: 1)
        let http = CloudHTTP(base: cloud.url)
        let password = ControlPlaneAccessTests.password
        #expect(
            try cloud.json(
                "POST", "/v1/projects",
                [
                    "name": "beta",
                    "quota": ["guests": 1, "resources": ["vcpus": 1, "memory_bytes": 1, "disk_bytes": 1]],
                ]
            ).0 == 201)
        for (user, project, role) in [
            ("alice", "alpha", "member"), ("carol", "alpha", "admin"), ("bob", "beta", "member"),
        ] {
            #expect(try cloud.json("POST", "/v1/users", ["name": user, "password": password]).0 == 201)
            #expect(try cloud.json("PUT", "/v1/projects/\(project)/members/\(user)", ["role": role]).0 == 200)
        }
        let (alice, bob, carol) = (
            try http.token(user: "alice", password: password), try http.token(user: "bob", password: password),
            try http.token(user: "carol", password: password)
        )
        let policy: [String: Any] = [
            "type": "threshold", "metric": "cpu", "comparison": "above", "threshold": 95, "duration_seconds": 60,
            "step": 1, "cooldown_seconds": 60,
        ]
        let body: [String: Any] = [
            "name": "api", "flavor": "tiny", "image": "builtin", "min": 1, "max": 2, "policy": policy,
        ]
        #expect(try http.call("POST", "/v1/projects/alpha/groups", body, bearer: alice).0 == 403, "a member")
        let (made, group, _) = try http.call("POST", "/v1/projects/alpha/groups", body, bearer: carol)
        try #require(made == 201, "\(group)")
        let id = try #require(group["id"] as? String)
        #expect((group["policy"] as? [String: Any])?["type"] as? String == "threshold")
        for path in ["/v1/projects/alpha/groups", "/v1/groups/\(id)", "/v1/groups/\(id)/actions"] {
            #expect(try http.call("GET", path, bearer: alice).0 == 200, "\(path)")
            #expect(try http.call("GET", path, bearer: bob).0 == 404, "\(path)")
        }
        #expect(try http.call("PUT", "/v1/groups/\(id)/desired", ["desired": 2], bearer: alice).0 == 403)
        #expect(try http.call("DELETE", "/v1/groups/\(id)", bearer: alice).0 == 403)
        #expect(try http.call("DELETE", "/v1/groups/\(id)", bearer: bob).0 == 404)

        // Its one member runs; the console shows the group with its member and its timeline.
        let deadline = Date().addingTimeInterval(30)
        var members: [[String: Any]] = []
        while Date() < deadline, members.first?["state"] as? String != "running" {
            usleep(200_000)
            members = try Self.group(cloud, id).1
        }
        #expect(members.count == 1 && members.first?["name"] as? String == "api-1", "\(members)")
        let login = try http.call("POST", "/v1/login", ["name": "alice", "password": password])
        let cookie = try #require(login.headers["Set-Cookie"]?.split(separator: ";").first.map(String.init))
        for (path, needle) in [
            ("/console/groups/\(id)", #"class="desired""#), ("/console/projects/alpha", "/console/groups/\(id)"),
        ] {
            var request = URLRequest(url: try #require(URL(string: cloud.url + path)))
            request.setValue(cookie, forHTTPHeaderField: "Cookie")
            request.httpShouldHandleCookies = false
            let (status, html, _) = try http.perform(request)
            let page = String(decoding: html, as: UTF8.self)
            #expect(status == 200 && page.contains(needle), "\(path): \(status)")
            if path.hasPrefix("/console/groups") {
                #expect(page.contains("<svg") && page.contains("api-1") && page.contains("created"), "\(page)")
            }
        }
        let (set, after, _) = try http.call(
            "PUT", "/v1/groups/\(id)/desired", ["desired": 2, "reason": "a sale"], bearer: carol)
        #expect(set == 200 && after["desired"] as? Int == 2, "\(after)")
        #expect(try actions(cloud, id).last?.reason == "user carol: a sale")

        // In the console, only the admin has the forms; hers set the count and delete the group.
        let aliceBrowser = try ConsoleBrowser(http: http).logIn("alice", password)
        let alicePage = try aliceBrowser.get("/console/groups/\(id)")
        #expect(alicePage.status == 200 && !alicePage.body.contains("Delete the group"))
        let aliceCSRF = try #require(alicePage.field("csrf_token"), "the logout form carries it")
        let refused = try aliceBrowser.post("/console/groups/\(id)/delete", ["csrf_token": aliceCSRF])
        #expect(refused.status == 403 && refused.body.contains("admin"), "a member: \(refused.status)")
        let carolBrowser = try ConsoleBrowser(http: http).logIn("carol", password)
        let carolPage = try carolBrowser.get("/console/groups/\(id)")
        let csrf = try #require(carolPage.field("csrf_token"))
        #expect(carolPage.body.contains("Delete the group"))
        let setByForm = try carolBrowser.post("/console/groups/\(id)/desired", ["desired": "1", "csrf_token": csrf])
        #expect(setByForm.status == 303, "\(setByForm.body)")
        #expect(try actions(cloud, id).last?.reason == "user carol: set by hand")
        let deleted = try carolBrowser.post("/console/groups/\(id)/delete", ["csrf_token": csrf])
        #expect(deleted.status == 303)
        #expect(try actions(cloud, id).last?.to == 0)
    }

    struct Action {
        var from: Int
        var to: Int
        var time: Date
        var reason: String
    }

    func actions(_ cloud: ControlPlaneFixture, _ id: String) throws -> [Action] {
        let list = try cloud.json("GET", "/v1/groups/\(id)/actions").1["actions"] as? [[String: Any]] ?? []
        let style = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        return list.map {
            Action(
                from: $0["from"] as? Int ?? -1, to: $0["to"] as? Int ?? -1,
                time: (try? style.parse($0["time"] as? String ?? "")) ?? .distantPast,
                reason: $0["reason"] as? String ?? "")
        }
    }
}
