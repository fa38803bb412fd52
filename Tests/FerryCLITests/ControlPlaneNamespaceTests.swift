import FerryAgent
import FerryTestSupport
import Foundation
import Glibc
import Testing

/// The controller and three agents each in a network namespace of its own, joined by a bridge,
/// as on four hosts: guests are placed over the three and run there; a host whose agent is
/// killed with -9 has its guests marked unknown (the others keep running) until the agent is
/// back; a user of another project finds nothing of this one.
@Suite(
    .serialized, .tags(.namespaces), .enabled(if: FerryProcess.built.met, FerryProcess.built.why),
    .enabled(if: Requirement.namespaces.met, Requirement.namespaces.why))
struct ControlPlaneNamespaceTests {
    @Test func guestsRunOnHostsInTheirOwnNamespacesAndOutliveASilentHost() throws {
        let cloud = try ControlPlaneFixture("cpn", namespaced: true)
        #expect(cloud.url.hasPrefix("http://10.93.0.1:"), "\(cloud.url)")
        var ids: [String] = []
        for index in 0..<6 {
            let body: [String: Any] = ["name": "g\(index)", "flavor": "tiny", "image": "builtin"]
            ids.append(try #require(try cloud.json("POST", "/v1/projects/alpha/guests", body).1["id"] as? String))
        }
        var hostOf: [String: String] = [:]
        for id in ids {
            let view = try cloud.waitForGuest(id) { $0 == "running" || $0 == "error" }
            #expect(view["state"] as? String == "running", "\(view)")
            hostOf[id] = view["host"] as? String
        }
        #expect(Set(hostOf.values) == ["h1", "h2", "h3"], "spread over the three hosts")
        for (index, agent) in cloud.agents.enumerated() {
            let onHost = try Self.guests(on: agent, in: try #require(cloud.namespace(index + 1)))
            #expect(Set(onHost) == Set(ids.filter { hostOf[$0] == "h\(index + 1)" }.map { "c-\($0)" }))
        }

        let victim = cloud.agents[0]
        victim.kill9()
        let onVictim = ids.filter { hostOf[$0] == "h1" }
        for id in onVictim {
            #expect(try cloud.waitForGuest(id, timeout: 15) { $0 == "unknown" }["state"] as? String == "unknown")
        }
        for id in ids where hostOf[id] != "h1" {
            #expect(try cloud.json("GET", "/v1/guests/\(id)").1["state"] as? String == "running")
        }
        try victim.start()
        for id in onVictim {
            #expect(try cloud.waitForGuest(id, timeout: 15) { $0 == "running" }["state"] as? String == "running")
        }

        // A user of another project, with an API token, from the controller's network.
        let password = "correct horse battery staple"
        #expect(try cloud.json("POST", "/v1/users", ["name": "bob", "password": password]).0 == 201)
        let beta: [String: Any] = [
            "name": "beta",
            "quota": ["guests": 1, "resources": ["vcpus": 1, "memory_bytes": 1 << 30, "disk_bytes": 1 << 30]],
        ]
        #expect(try cloud.json("POST", "/v1/projects", beta).0 == 201)
        #expect(try cloud.json("PUT", "/v1/projects/beta/members/bob", ["role": "admin"]).0 == 200)
        let namespace = try #require(cloud.namespace(0))
        let url = cloud.url
        let first = ids[0]
        let statuses = try NetworkNamespaces.run(in: namespace) { () throws -> [Int] in
            let anonymous = try AgentClient(url: url, key: nil)
            let login = try anonymous.send(
                "POST", "/v1/login", body: Array(#"{"name":"bob","password":"\#(password)"}"#.utf8))
            let cookie = String(login.header("set-cookie")?.split(separator: ";").first ?? "")
            let csrf = (try JSONSerialization.jsonObject(with: Data(login.body)) as? [String: Any])?["csrf_token"]
            let headers = [("Cookie", cookie), ("X-CSRF-Token", csrf as? String ?? "")]
            return [
                login.status,
                try anonymous.send("GET", "/v1/guests/\(first)", headers: headers).status,
                try anonymous.send("POST", "/v1/guests/\(first)/stop", headers: headers).status,
                try anonymous.send("GET", "/v1/projects/beta/guests", headers: headers).status,
            ]
        }
        #expect(statuses == [200, 404, 404, 200])
    }

    /// From the controller's network, 200 creates with one client token at once make one guest
    /// (every answer names it), and 50 creates at once, each with its own token, into a project
    /// whose quota allows 8 guests make exactly 8: the hosts hold exactly those 9 guests.
    @Test func tokenAndQuotaRacesThroughTheController() throws {
        let cloud = try ControlPlaneFixture("cpr", namespaced: true)
        let once = try Self.bytes(["name": "once", "flavor": "tiny", "image": "builtin", "client_token": "retry-me"])
        let retries = try cloud.concurrently(200) { _ in ("POST", "/v1/projects/alpha/guests", once) }
        let statuses = Dictionary(grouping: retries.map(\.status), by: { $0 }).mapValues(\.count)
        #expect(statuses[202] == 1 && statuses[202]! + (statuses[200] ?? 0) == 200, "\(statuses)")
        let named = Set(retries.compactMap { Self.object($0.body)["id"] as? String })
        #expect(named.count == 1, "\(named)")
        let id = try #require(named.first)
        let alpha = try cloud.json("GET", "/v1/projects/alpha/guests").1["guests"] as? [[String: Any]] ?? []
        #expect(alpha.compactMap { $0["id"] as? String } == [id])

        let quota: [String: Any] = [
            "name": "quota",
            "quota": ["guests": 8, "resources": ["vcpus": 100, "memory_bytes": 4 << 30, "disk_bytes": 1 << 30]],
        ]
        #expect(try cloud.json("POST", "/v1/projects", quota).0 == 201)
        let creates = try cloud.concurrently(50) { index in
            let body = #"{"name":"q\#(index)","flavor":"tiny","image":"builtin","client_token":"t\#(index)"}"#
            return ("POST", "/v1/projects/quota/guests", Array(body.utf8))
        }
        let made = creates.filter { $0.status == 202 }.compactMap { Self.object($0.body)["id"] as? String }
        let refusals = creates.filter { $0.status != 202 }.map {
            "\($0.status) \((Self.object($0.body)["error"] as? [String: Any])?["code"] as? String ?? "?")"
        }
        #expect(made.count == 8, "\(creates.map(\.status))")
        #expect(refusals == Array(repeating: "409 quota_exceeded", count: 42), "\(refusals)")
        let listed = try cloud.json("GET", "/v1/projects/quota/guests").1["guests"] as? [[String: Any]] ?? []
        #expect(Set(listed.compactMap { $0["id"] as? String }) == Set(made))
        for guest in [id] + made {
            let view = try cloud.waitForGuest(guest, timeout: 60) { $0 == "running" || $0 == "error" }
            #expect(view["state"] as? String == "running", "\(view)")
        }
        #expect(try cloud.guestsOnHosts().sorted() == ([id] + made).map { "c-\($0)" }.sorted())
    }

    static func bytes(_ object: [String: Any]) throws -> [UInt8] {
        Array(try JSONSerialization.data(withJSONObject: object))
    }

    static func object(_ body: [UInt8]) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] ?? [:]
    }

    /// The names of the guests an agent holds, asked from inside its namespace.
    static func guests(on agent: GuestAgentFixture, in namespace: String) throws -> [String] {
        let client = try agent.client()
        return try NetworkNamespaces.run(in: namespace) {
            try client.get("/v1/guests", as: GuestList.self).guests.map(\.specification.name.value)
        }
    }
}
