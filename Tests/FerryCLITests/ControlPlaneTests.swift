import FerryAgent
import FerryTestSupport
import Foundation
import Glibc
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// `ferry control` with three `ferry agent`s reporting to it: a create goes pending → building →
/// running on a host the scheduler chose, with its disk copied from the image; a client token
/// makes it exactly-once; stop, start, delete reach the host; a host killed with -9 makes its
/// guests unknown (never deleted) until its agent reports again.
@Suite(.serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct ControlPlaneTests {
    @Test func aCreateRunsOnAHostWithItsImagesDisk() throws {
        let cloud = try ControlPlaneFixture("cp1")
        let body: [String: Any] = ["name": "web", "flavor": "tiny", "image": "builtin", "client_token": "t-1"]
        let (status, created) = try cloud.json("POST", "/v1/projects/alpha/guests", body)
        #expect(status == 202 && created["state"] as? String == "pending", "\(created)")
        let id = try #require(created["id"] as? String)
        let again = try cloud.json("POST", "/v1/projects/alpha/guests", body)
        #expect(again.0 == 200 && again.1["id"] as? String == id)
        var changed = body
        changed["flavor"] = "other"
        #expect(try cloud.json("POST", "/v1/projects/alpha/guests", changed).0 == 409)

        let running = try cloud.waitForGuest(id) { ["running", "error"].contains($0) }
        #expect(running["state"] as? String == "running", "\(running)")
        let host = try #require(running["host"] as? String)
        let agent = cloud.agents[Int(host.dropFirst())! - 1]
        let onHost = try agent.view("c-\(id)")
        #expect(onHost.state == "running" && onHost.id == id)
        let disk = agent.stateDirectory + "/disks/c-\(id).root.raw"
        #expect((try? FileManager.default.attributesOfItem(atPath: disk)[.size] as? Int) == 4 << 20)
        try expectTemplateCopied(cloud, agent)

        #expect(try cloud.json("POST", "/v1/guests/\(id)/stop").1["state"] as? String == "stopped")
        #expect(try agent.view("c-\(id)").state == "stopped")
        #expect(try cloud.json("POST", "/v1/guests/\(id)/start").0 == 202)
        #expect(try cloud.waitForGuest(id) { $0 != "building" }["state"] as? String == "running")
        #expect(try cloud.json("DELETE", "/v1/guests/\(id)").0 == 409, "a running guest is stopped first")
        _ = try cloud.json("POST", "/v1/guests/\(id)/stop")
        #expect(try cloud.json("DELETE", "/v1/guests/\(id)").1["state"] as? String == "deleted")
        #expect(try agent.list().isEmpty && !FileManager.default.fileExists(atPath: disk))
        let journal = try cloud.json("GET", "/v1/guests/\(id)/journal").1["entries"] as? [[String: Any]] ?? []
        #expect(
            journal.compactMap { $0["to"] as? String } == [
                "pending", "building", "running", "stopping", "stopped", "building", "running", "stopping",
                "stopped", "deleted",
            ])
    }

    /// Six guests spread over three hosts; one host's agent is killed with -9: its guests become
    /// unknown (the others stay running), nothing is deleted, and when the agent is back its
    /// report makes them running again (their processes never stopped).
    @Test func aSilentHostsGuestsAreUnknownThenRecovered() throws {
        let cloud = try ControlPlaneFixture("cp2")
        var ids: [String] = []
        for index in 0..<6 {
            let body: [String: Any] = ["name": "g\(index)", "flavor": "tiny", "image": "builtin"]
            ids.append(try #require(try cloud.json("POST", "/v1/projects/alpha/guests", body).1["id"] as? String))
        }
        var hostOf: [String: String] = [:]
        for id in ids {
            let view = try cloud.waitForGuest(id) { $0 == "running" }
            hostOf[id] = view["host"] as? String
        }
        #expect(Set(hostOf.values) == ["h1", "h2", "h3"], "spread over the three hosts")
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
        let journal = try cloud.json("GET", "/v1/guests/\(onVictim[0])/journal").1["entries"] as? [[String: Any]]
        #expect(
            journal?.compactMap { $0["to"] as? String } == ["pending", "building", "running", "unknown", "running"])
    }

    /// The agent's create with a template (no boot, so nothing writes the disk): the file holds
    /// the template's bytes, sized to the disk, its holes still holes.
    private func expectTemplateCopied(_ cloud: ControlPlaneFixture, _ agent: GuestAgentFixture) throws {
        let body: [String: Any] = [
            "name": "copy", "kind": "builtin", "vcpus": 1, "memory_bytes": 16 << 20, "seed": 1,
            "disks": [["name": "root", "size_bytes": 8 << 20, "template": cloud.template]],
        ]
        let response = try agent.client().send(
            "POST", "/v1/guests", body: Array(try JSONSerialization.data(withJSONObject: body)))
        #expect(response.status == 201, "\(String(decoding: response.body, as: UTF8.self))")
        let path = agent.stateDirectory + "/disks/copy.root.raw"
        let copy = try #require(FileManager.default.contents(atPath: path))
        let template = try #require(FileManager.default.contents(atPath: cloud.template))
        #expect(copy.count == 8 << 20 && copy.prefix(template.count) == template)
        #expect(copy.dropFirst(template.count).allSatisfy { $0 == 0 })
        var info = stat()
        #expect(stat(path, &info) == 0 && Int(info.st_blocks) * 512 <= 1 << 20, "holes stay holes")
        #expect(try agent.client().send("DELETE", "/v1/guests/copy?remove_disks=true").status == 204)
    }

    /// The controller is killed with -9 right after it answered creates: at its next start it
    /// finds the guests it had not finished (pending or building) and finishes them; each ends
    /// running on its host, exactly once (one guest per create on the hosts, none doubled). It is
    /// killed again while they run: its bill covers the time it was down, since the guests ran
    /// on. The controller and agents each in a network namespace where the machine allows it.
    @Test func aControllerKilledMidCreateFinishesAtItsNextStart() throws {
        let cloud = try ControlPlaneFixture("cp3", namespaced: Requirement.namespaces.met)
        let requested = Date()
        var ids: [String] = []
        for index in 0..<4 {
            let body: [String: Any] = ["name": "g\(index)", "flavor": "tiny", "image": "builtin"]
            ids.append(try #require(try cloud.json("POST", "/v1/projects/alpha/guests", body).1["id"] as? String))
        }
        cloud.killController()
        try cloud.startController()
        for id in ids {
            let view = try cloud.waitForGuest(id) { $0 == "running" || $0 == "error" }
            #expect(view["state"] as? String == "running", "\(view)")
        }
        #expect(try cloud.guestsOnHosts().sorted() == ids.map { "c-\($0)" }.sorted(), "each on exactly one host")

        let seenRunning = Date()
        cloud.killController()
        usleep(500_000)
        try cloud.startController()
        let stopping = Date()
        for id in ids {
            let (status, answer) = try cloud.json("POST", "/v1/guests/\(id)/stop")
            #expect(status == 200 && answer["state"] as? String == "stopped", "\(status) \(answer)")
        }
        let stopped = Date()
        let target = "/v1/projects/alpha/invoice?from=2000-01-01T00:00:00Z&to=2100-01-01"
        let lines = try cloud.json("GET", target).1["lines"] as? [[String: Any]] ?? []
        for id in ids {
            let journal = try cloud.json("GET", "/v1/guests/\(id)/journal").1["entries"] as? [[String: Any]] ?? []
            let ran = try ControlPlaneBillingTests.runningMilliseconds(journal)
            let billed = ControlPlaneBillingTests.integer(
                lines.first { $0["guest_id"] as? String == id }?["billed_milliseconds"])
            #expect(billed == ran, "billed \(billed ?? -1) ms, ran \(ran) ms by the journal")
            #expect(ran >= Int64(stopping.timeIntervalSince(seenRunning) * 1000), "the controller's downtime is billed")
            #expect(
                ran <= Int64(stopped.timeIntervalSince(requested) * 1000), "nothing before the create or after the stop"
            )
        }
    }

    /// A host that takes the create but never answers (its agent stopped with SIGSTOP; the
    /// heartbeat timeout is long, so the host is not yet silent): the build gives up at
    /// `--boot-timeout` and the guest is `error` with the reason.
    @Test func aHostThatNeverAnswersEndsTheBuildAtTheBootTimeout() throws {
        let cloud = try ControlPlaneFixture(
            "cpbt", agents: 1, heartbeatTimeout: 60, controllerExtra: ["--boot-timeout", "2"])
        let agent = cloud.agents[0]
        kill(agent.pid, SIGSTOP)
        let started = Date()
        let body: [String: Any] = ["name": "stuck", "flavor": "tiny", "image": "builtin"]
        let id = try #require(try cloud.json("POST", "/v1/projects/alpha/guests", body).1["id"] as? String)
        let view = try cloud.waitForGuest(id, timeout: 30) { $0 == "error" || $0 == "running" }
        let waited = Date().timeIntervalSince(started)
        kill(agent.pid, SIGCONT)
        #expect(view["state"] as? String == "error", "\(view)")
        let reason = view["error_reason"] as? String ?? ""
        #expect(reason.hasPrefix("host h1 did not boot it within the boot timeout (2 s): "), "\(view)")
        #expect(waited < 15, "the build ended at its deadline, not at the client's 60 s: \(waited) s")
    }

    /// A running guest's CPU use and the load it publishes reach the controller with its host's
    /// heartbeats: the usage API gives points within 0–100% (the built-in guest paced at its
    /// default rate uses some CPU, not all of it) with the guest's load, the console's guest page
    /// draws them, and a bad span is refused naming it.
    @Test func aRunningGuestsCPUUseIsKeptAndShown() throws {
        let cloud = try ControlPlaneFixture("cpu", agents: 1)
        let body: [String: Any] = ["name": "busy", "flavor": "tiny", "image": "builtin"]
        let id = try #require(try cloud.json("POST", "/v1/projects/alpha/guests", body).1["id"] as? String)
        #expect(try cloud.waitForGuest(id) { $0 == "running" || $0 == "error" }["state"] as? String == "running")
        var points: [[String: Any]] = []
        let deadline = Date().addingTimeInterval(15)
        while points.count < 3 && Date() < deadline {
            usleep(500_000)
            points = try cloud.json("GET", "/v1/guests/\(id)/usage?minutes=1").1["points"] as? [[String: Any]] ?? []
        }
        #expect(points.count >= 3, "a point per heartbeat interval: \(points)")
        let cpu = points.compactMap { ($0["cpu_percent"] as? NSNumber)?.doubleValue }
        #expect(cpu.count == points.count && cpu.allSatisfy { (0...100).contains($0) }, "\(points)")
        #expect(cpu.contains { $0 > 0 }, "the guest's vCPU ran: \(points)")
        #expect(points.contains { $0["load_permille"] is NSNumber }, "the load the guest published came too: \(points)")
        let (bad, answer) = try cloud.json("GET", "/v1/guests/\(id)/usage?minutes=0")
        #expect(bad == 422 && (answer["error"] as? [String: Any])?["field"] as? String == "minutes", "\(answer)")

        let password = "correct horse battery staple"
        #expect(try cloud.json("POST", "/v1/users", ["name": "ann", "password": password]).0 == 201)
        #expect(try cloud.json("PUT", "/v1/projects/alpha/members/ann", ["role": "member"]).0 == 200)
        let http = CloudHTTP(base: cloud.url)
        let login = try http.call("POST", "/v1/login", ["name": "ann", "password": password])
        let cookie = try #require(login.headers["Set-Cookie"]?.split(separator: ";").first.map(String.init))
        var request = URLRequest(url: try #require(URL(string: cloud.url + "/console/guests/\(id)")))
        request.setValue(cookie, forHTTPHeaderField: "Cookie")
        request.httpShouldHandleCookies = false
        let (status, html, _) = try http.perform(request)
        let page = String(decoding: html, as: UTF8.self)
        #expect(status == 200 && page.contains("<svg") && page.contains(#"class="cpu""#), "the page draws its usage")
    }

    /// Leases over HTTP on a real controller with three agents offering 16 tiny guests each: 48
    /// reserved for a window fit exactly, one more in it is 409 with the nearest window that
    /// fits (when the first ends), giving the first up lets it in, and the list shows both.
    @Test func leasesAreAdmittedWithoutOverbooking() throws {
        let cloud = try ControlPlaneFixture("cpl")
        let style = Date.ISO8601FormatStyle()
        let start = Date(timeIntervalSince1970: (Date().timeIntervalSince1970 / 60).rounded(.up) * 60 + 3600)
        func lease(_ count: Int, from: Date, hours: Double) -> [String: Any] {
            [
                "flavor": "tiny", "count": count, "start": style.format(from),
                "end": style.format(from.addingTimeInterval(hours * 3600)),
            ]
        }
        let (made, first) = try cloud.json("POST", "/v1/projects/alpha/leases", lease(48, from: start, hours: 1))
        #expect(made == 201 && first["state"] as? String == "admitted", "\(first)")
        let later = start.addingTimeInterval(1800)
        let (refused, answer) = try cloud.json("POST", "/v1/projects/alpha/leases", lease(1, from: later, hours: 1))
        let error = answer["error"] as? [String: Any] ?? [:]
        #expect(refused == 409 && error["code"] as? String == "insufficient_capacity", "\(answer)")
        let message = error["message"] as? String ?? ""
        #expect(message.contains("nearest window") && message.contains(style.format(start.addingTimeInterval(3600))))
        let (bad, badAnswer) = try cloud.json(
            "POST", "/v1/projects/alpha/leases", ["flavor": "tiny", "count": 1, "start": "soon", "end": "later"])
        #expect(bad == 422 && (badAnswer["error"] as? [String: Any])?["field"] as? String == "start")

        let id = try #require(first["id"] as? String)
        #expect(try cloud.json("DELETE", "/v1/leases/\(id)").1["state"] as? String == "cancelled")
        #expect(try cloud.json("POST", "/v1/projects/alpha/leases", lease(1, from: later, hours: 1)).0 == 201)
        let leases = try cloud.json("GET", "/v1/projects/alpha/leases").1["leases"] as? [[String: Any]] ?? []
        #expect(leases.compactMap { $0["state"] as? String } == ["cancelled", "admitted"], "\(leases)")
        #expect(try cloud.json("DELETE", "/v1/leases/nothing").0 == 404)
    }
}
