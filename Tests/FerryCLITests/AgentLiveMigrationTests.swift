import FerryAgent
import FerryHostModel
import FerryInventory
import FerryTestSupport
import FerryTransport
import FerryVMM
import Foundation
import Glibc
import Testing

@Suite(
    "live migration between two ferry agents", .serialized,
    .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct AgentLiveMigrationTests {
    @Test("a guest with a disk migrates through the API, then back through ferry migrate; one owner at every poll")
    func migratesThereAndBack() throws {
        let pair = try AgentPair("lm")
        let before = try pair.runGuest("g1", on: pair.source, workload: "idle")
        let started = try pair.startMigration("g1", options: AgentPair.slow)
        try #require(started.status == 201, "\(started.body)")
        let resource = try MigrationResource.decode(started.body)
        #expect(started.location == "/v1/migrations/\(resource.id)")
        let stream = EventCollector(try pair.source.client(), "/v1/migrations/\(resource.id)/events")
        #expect(try AgentPair.metric(pair.source, #"ferry_migrations_in_flight{direction="out"}"#) == 1)
        #expect(try AgentPair.metric(pair.destination, #"ferry_migrations_in_flight{direction="in"}"#) == 1)
        // The arriving guest is the migration's until it ended: other operations are refused.
        let early = try pair.destination.client().send("POST", "/v1/guests/g1/stop")
        #expect(early.status == 409 && String(decoding: early.body, as: UTF8.self).contains("busy"))
        let (ended, polls) = try pair.followToEnd(resource.id, guest: "g1")
        #expect(ended.status == .completed && ended.guestLocation == "destination", "\(ended.json)")
        #expect((ended.bytesTransferred ?? 0) > 0 && ended.downtimeMs != nil && ended.totalTimeMs != nil)
        #expect((ended.setupMs ?? -1) >= 0 && (ended.setupMs ?? .infinity) < (ended.totalTimeMs ?? 0), "\(ended.json)")
        // The source's rounds: round 0 sent every page, the rounds add up to the bytes sent.
        let rounds = try #require(ended.perRound, "no per_round: \(ended.json)")
        #expect(rounds.count == ended.rounds && rounds.first?.pages == (32 << 20) / 4096, "\(ended.json)")
        #expect(rounds.reduce(0) { $0 + $1.wireBytes } <= ended.bytesTransferred ?? 0 && (ended.cpuMs ?? 0) > 0)

        // Events: ids 1, 2, 3… in order, ending with exactly one `end`.
        let received = try #require(stream.wait(timeout: 30), "the event stream did not end")
        let events = received.events.compactMap(MigrationEvent.init)
        #expect(received.error == nil && events.count == received.events.count, "\(received.error ?? "")")
        #expect(events.map(\.id) == Array(1...UInt64(max(1, events.count))), "ids \(events.map(\.id))")
        #expect(events.last?.name == .end && events.filter { $0.name == .end }.count == 1)
        #expect(try MigrationResource.decode(try #require(events.last).data).status == .completed)
        // Last-Event-ID resumes after that event.
        let resumed = try #require(
            EventCollector(try pair.source.client(), "/v1/migrations/\(resource.id)/events", lastEventID: 2)
                .wait(timeout: 10))
        #expect(resumed.events.compactMap(MigrationEvent.init) == Array(events.dropFirst(2)))

        // The destination owns the guest: same ID, same specification (the disk's path too).
        let states = try pair.settled("g1")
        #expect(states.source == nil && states.destination == "running", "\(states)")
        let arrived = try pair.destination.view("g1")
        #expect(arrived.id == before.id && arrived.specification == before.specification)
        #expect(GuestAgentFixture.vmmProcesses(id: before.id) == [try #require(arrived.pid)])
        // The source keeps no memory image of a guest that left (only its logs).
        let image = "\(pair.source.guestsDirectory)/\(before.id).img"
        #expect(!FileManager.default.fileExists(atPath: image), "\(image) left behind")
        #expect(FileManager.default.fileExists(atPath: "\(pair.destination.guestsDirectory)/\(before.id).img"))
        let left = try #require(try AgentPair.journal(pair.source, "g1").last)
        #expect(left.to == nil && left.cause.contains("migrated to \(pair.destination.url)"), "\(left)")
        #expect(
            try AgentPair.metric(pair.source, #"ferry_migrations_finished_total{direction="out",outcome="completed"}"#)
                == 1)
        #expect((try AgentPair.metric(pair.source, "ferry_migration_bytes_sent_total") ?? 0) > 0)
        #expect(try AgentPair.metric(pair.source, "ferry_migration_downtime_seconds_count") == 1)
        #expect(try AgentPair.metric(pair.source, #"ferry_migrations_in_flight{direction="out"}"#) == 0)
        // The arrival's end is counted just after its row changes: wait for it briefly.
        let arrivedMetric = #"ferry_migrations_finished_total{direction="in",outcome="completed"}"#
        let counted = Date().addingTimeInterval(5)
        while try AgentPair.metric(pair.destination, arrivedMetric) != 1, Date() < counted { usleep(20_000) }
        #expect(try AgentPair.metric(pair.destination, arrivedMetric) == 1)
        let list = try pair.source.client().send("GET", "/v1/migrations")
        #expect(String(decoding: list.body, as: UTF8.self).contains(resource.id))

        // Back through the CLI, from the destination's agent: it is a guest like any other.
        let back = try FerryProcess.run(
            [
                "migrate", "g1", "--to", pair.source.url, "--agent", pair.destination.url, "--key-file",
                pair.source.keyFile,
            ], timeout: 60)
        #expect(back.status == 0, "\(back.stderr)")
        #expect(back.stdout.contains("completed") && back.stdout.contains("downtime"), "\(back.stdout)")
        let home = try pair.settled("g1")
        #expect(home.source == "running" && home.destination == nil, "\(home)")
        #expect(try pair.source.guest(["stop", "g1"]).status == 0)
        #expect(try pair.source.view("g1").state == "stopped")
        print("agent to agent: \(polls) polls, \(events.count) events; there: \(ended.json)")
    }

    @Test("cancel mid-migration: the guest runs on the source, nothing is left on the destination")
    func cancels() throws {
        let pair = try AgentPair("lc")
        let guest = try pair.runGuest("g1", on: pair.source, workload: "uniform:400MB/s")
        let endless: [String: Any] = [
            "downtime_ms": 1, "max_rounds": 10_000, "auto_converge": false, "max_bandwidth_bytes_per_s": 4_000_000,
        ]
        let started = try pair.startMigration("g1", options: endless)
        try #require(started.status == 201, "\(started.body)")
        let id = try MigrationResource.decode(started.body).id
        #expect(try pair.states("g1") == ("migrating-out", "migrating-in"))
        // Another operation on the migrating guest is refused while it runs.
        let stop = try pair.source.client().send("POST", "/v1/guests/g1/stop")
        #expect(stop.status == 409 && String(decoding: stop.body, as: UTF8.self).contains("busy"))
        let deadline = Date().addingTimeInterval(20)
        while try pair.migration(id).status != .active && Date() < deadline { usleep(50_000) }
        let agent = ["--agent", pair.source.url, "--key-file", pair.source.keyFile]
        let listed = try FerryProcess.run(["migration", "list"] + agent, timeout: 30)
        #expect(listed.status == 0 && listed.stdout.contains("\(id)  out  active"), "\(listed.stdout)")
        let cancel = try FerryProcess.run(["migration", "cancel", id] + agent, timeout: 30)
        #expect(cancel.status == 0 && cancel.stdout.contains("cancelling"), "\(cancel.stderr)")
        let (ended, _) = try pair.followToEnd(id, guest: "g1")
        #expect(ended.status == .cancelled && ended.guestLocation == "source", "\(ended.json)")
        let states = try pair.settled("g1")
        #expect(states.source == "running" && states.destination == nil, "\(states)")
        #expect(GuestAgentFixture.vmmProcesses(id: guest.id) == [try #require(guest.pid)])
        let again = try pair.source.client().send("DELETE", "/v1/migrations/\(id)")
        #expect(again.status == 409)
        let shown = try FerryProcess.run(["migration", "show", id] + agent, timeout: 30)
        #expect(
            shown.status == 0 && shown.stdout.contains("cancelled: guest g1 is on the source side"), "\(shown.stdout)")
    }

    @Test("the destination refuses a name it has and a guest too large; the source is unchanged")
    func destinationRefuses() throws {
        let pair = try AgentPair("lr")
        try pair.runGuest("g1", on: pair.source)
        let clash = try pair.destination.client().send(
            "POST", "/v1/guests",
            body: Array(#"{"name":"g1","kind":"builtin","vcpus":1,"memory_bytes":33554432,"seed":1}"#.utf8))
        #expect(clash.status == 201)
        let refused = try pair.startMigration("g1")
        #expect(refused.status == 409 && refused.body.contains("name_clash"), "\(refused.body)")
        #expect(try pair.states("g1") == ("running", "defined"))
        let cli = try FerryProcess.run(
            [
                "migrate", "g1", "--to", pair.destination.url, "--agent", pair.source.url, "--key-file",
                pair.source.keyFile,
            ], timeout: 30)
        #expect(cli.status == 1 && cli.stderr.contains("refused the guest"), "\(cli.stderr)")
        #expect(try pair.states("g1") == ("running", "defined"))

        let cpus = min(64, ProcessInfo.processInfo.activeProcessorCount + 1)
        try pair.runGuest("big", on: pair.source, vcpus: cpus)
        let tooBig = try pair.startMigration("big")
        #expect(tooBig.status == 409 && tooBig.body.contains("insufficient_capacity"), "\(tooBig.body)")
        #expect(try pair.states("big") == ("running", nil))
        let journal = try AgentPair.journal(pair.source, "big")
        #expect(!journal.contains { $0.to == .migratingOut }, "\(journal)")
        let missing = try pair.startMigration("nope")
        #expect(missing.status == 404, "\(missing.body)")
    }

    @Test("a reservation whose vmm cannot answer when it expires is asked again, and still expires")
    func expiryOutlastsAStoppedVMM() throws {
        let pair = try AgentPair("ls", destinationExtra: ["--incoming-reservation", "2"])
        let id = try GuestID("0123456789abcdef0123456789abcdee")
        let spec = GuestSpecification(name: try GuestName("r2"), kind: .builtin, memoryBytes: 32 << 20)
        let request = IncomingMigrationRequest(
            migrationID: "m-2", guestID: id, specification: spec, paused: false, sourceAgent: "http://127.0.0.1:1")
        let client = try pair.destination.client()
        _ = try client.prepareIncoming(request)
        let pid = try #require(GuestAgentFixture.vmmProcesses(id: id.hex).first)
        // Stopped, the vmm cannot answer `status` when the reservation expires (2 s): a loaded host.
        kill(pid, SIGSTOP)
        usleep(8_000_000)  // past the expiry and the agent's 5 s wait for an answer
        kill(pid, SIGCONT)
        let deadline = Date().addingTimeInterval(10)
        while try client.incomingStatus(migrationID: "m-2").state != .abandoned && Date() < deadline {
            usleep(100_000)
        }
        #expect(try client.incomingStatus(migrationID: "m-2").state == .abandoned)
        #expect(try pair.destination.list().isEmpty)
        #expect(GuestAgentFixture.vmmProcesses(id: id.hex).isEmpty)
    }

    @Test(
        "incoming requests: unsigned and wrong-key ones refused; a retry is idempotent; an unused reservation expires")
    func incomingReservations() throws {
        let pair = try AgentPair("li", destinationExtra: ["--incoming-reservation", "2"])
        let id = try GuestID("0123456789abcdef0123456789abcdef")
        let spec = GuestSpecification(name: try GuestName("r1"), kind: .builtin, memoryBytes: 32 << 20)
        let request = IncomingMigrationRequest(
            migrationID: "m-1", guestID: id, specification: spec, paused: false, sourceAgent: "http://127.0.0.1:1")
        let body = Array(try AgentClient.exchangeEncoder.encode(request))
        let unsigned = try AgentClient(url: pair.destination.url, key: nil)
        #expect(try unsigned.send("POST", "/v1/migrations/incoming", body: body).status == 401)
        let wrong = try AgentClient(url: pair.destination.url, key: SharedKey.random())
        let wrongAnswer = try wrong.send("POST", "/v1/migrations/incoming", body: body)
        #expect(wrongAnswer.status == 401 && String(decoding: wrongAnswer.body, as: UTF8.self).contains("wrong_key"))
        #expect(try pair.destination.list().isEmpty)

        let client = try pair.destination.client()
        let reservation = try client.prepareIncoming(request)
        #expect(try client.prepareIncoming(request) == reservation)
        #expect(try pair.destination.view("r1").state == "migrating-in")
        #expect(try client.incomingStatus(migrationID: "m-1").state == .waiting)
        #expect(GuestAgentFixture.vmmProcesses(id: id.hex).count == 1)
        let deadline = Date().addingTimeInterval(10)
        while try client.incomingStatus(migrationID: "m-1").state == .waiting && Date() < deadline { usleep(100_000) }
        #expect(try client.incomingStatus(migrationID: "m-1").state == .abandoned)
        #expect(try pair.destination.list().isEmpty)
        #expect(GuestAgentFixture.vmmProcesses(id: id.hex).isEmpty)
        #expect(try client.send("GET", "/v1/migrations/incoming/nothing").status == 404)

        // The source gives a reservation up before sending anything: the vmm and the row go.
        var second = request
        second.migrationID = "m-2"
        second.specification.name = try GuestName("r2")
        _ = try client.prepareIncoming(second)
        #expect(try pair.destination.view("r2").state == "migrating-in")
        #expect(try client.send("DELETE", "/v1/migrations/incoming/m-2").status == 204)
        #expect(try client.incomingStatus(migrationID: "m-2").state == .abandoned)
        #expect(try pair.destination.list().isEmpty)
        #expect(GuestAgentFixture.vmmProcesses(id: id.hex).isEmpty)
        #expect(try client.send("DELETE", "/v1/migrations/incoming/m-2").status == 204)
    }

    @Test("kill -9 of the source agent mid-migration: after its restart one agent lists the guest, one vmm runs it")
    func sourceAgentKilled() throws {
        try killedMidMigration(source: true)
    }

    @Test(
        "kill -9 of the destination agent mid-migration: after its restart one agent lists the guest, one vmm runs it")
    func destinationAgentKilled() throws {
        try killedMidMigration(source: false)
    }

    private func killedMidMigration(source killSource: Bool) throws {
        let pair = try AgentPair(killSource ? "ks" : "kd")
        let guest = try pair.runGuest("g1", on: pair.source, memoryMiB: 64, workload: "idle")
        let started = try pair.startMigration("g1", options: AgentPair.slow)
        try #require(started.status == 201, "\(started.body)")
        let id = try MigrationResource.decode(started.body).id
        usleep(800_000)
        // Mid-migration: both rows migrating, the source's vmm still sending.
        #expect(try pair.states("g1") == ("migrating-out", "migrating-in"))
        #expect(try !pair.migration(id).status.isFinal)
        let agent = killSource ? pair.source : pair.destination
        agent.kill9()
        usleep(500_000)
        try agent.start()
        // The restarted agent took the migration up from its vmm (still sending, or receiving).
        let takenUp = killSource ? "the guest's vmm reports migrating-out" : "taking up incoming migration \(id)"
        #expect(agent.process?.waitForStderrLine(containing: takenUp, timeout: 5) != nil)
        let states = try pair.settled("g1", timeout: 40)
        let owners = [states.source, states.destination].compactMap { $0 }
        #expect(owners.count == 1 && owners.first == "running", "\(states)")
        let vmms = GuestAgentFixture.vmmProcesses(id: guest.id)
        #expect(vmms.count == 1, "vmm processes \(vmms)")
        let owner = states.source != nil ? pair.source : pair.destination
        #expect(try owner.view("g1").pid == vmms.first)
        let socket = try #require(try owner.view("g1").controlSocket)
        #expect(try VMMControlClient(path: socket, timeoutSeconds: 5).call("status")["state"]?.stringValue == "running")
        let final = try pair.migration(id)
        #expect(
            final.status.isFinal && final.guestLocation == (states.source != nil ? "source" : "destination"),
            "\(final.json)")
        // The destination still knows the arrival (kept across its restart): it is what resolves a source.
        let arrival = try pair.destination.client().incomingStatus(migrationID: id)
        #expect(arrival.state == (states.destination != nil ? .arrived : .failed), "\(arrival)")
        print(
            "kill -9 of the \(killSource ? "source" : "destination") agent: \(states), migration \(final.status.rawValue)"
        )
    }

    @Test(
        "kill -9 of the source's vmm mid-migration: unresolved, the destination's answer resolves it (crashed here, gone there)"
    )
    func sourceVMMKilled() throws {
        // The destination's vmm waits its resume timeout for the source to come back first: 2 s
        // here (`--incoming-resume-timeout`, given to the vmm as --resume-timeout), 30 s by default.
        let pair = try AgentPair("kv", destinationExtra: ["--incoming-resume-timeout", "2"])
        let guest = try pair.runGuest("g1", on: pair.source, workload: "idle")
        let started = try pair.startMigration("g1", options: AgentPair.slow)
        try #require(started.status == 201, "\(started.body)")
        let id = try MigrationResource.decode(started.body).id
        usleep(600_000)
        let incoming = try #require(GuestAgentFixture.vmmProcesses(id: guest.id).first { $0 != guest.pid })
        let command = String(
            decoding: FileManager.default.contents(atPath: "/proc/\(incoming)/cmdline") ?? Data(), as: UTF8.self)
        #expect(command.contains("--resume-timeout\u{0}2000ms"), "\(command)")
        kill(try #require(guest.pid), SIGKILL)
        let killedAt = Date()
        let states = try pair.settled("g1", timeout: 20)
        let settledAfter = Date().timeIntervalSince(killedAt)
        #expect(states.source == "crashed" && states.destination == nil, "\(states)")
        // At least the 2 s wait; far below the default's 30 s (the resolver backs off up to 5 s).
        #expect(settledAfter >= 1.5 && settledAfter < 15, "settled \(settledAfter) s after the kill")
        var final = try pair.migration(id)
        for _ in 0..<50 where final.status == .unresolved {
            usleep(100_000)
            final = try pair.migration(id)
        }
        // Resolved: the migration ends as what happened, failed (the guest never left).
        #expect(final.status == .failed && final.guestLocation == "source", "\(final.json)")
        #expect(final.error?.contains("resolved") == true, "\(final.json)")
        #expect(GuestAgentFixture.vmmProcesses(id: guest.id).isEmpty)
        #expect(try pair.destination.client().incomingStatus(migrationID: id).state == .failed)
        print("kill -9 of the source's vmm: settled \(String(format: "%.2f", settledAfter)) s after the kill")
    }

    @Test("kill -9 of the destination's incoming vmm mid-migration: failed, the guest runs on the source")
    func incomingVMMKilled() throws {
        let pair = try AgentPair("kw")
        let guest = try pair.runGuest("g1", on: pair.source, workload: "idle")
        let started = try pair.startMigration("g1", options: AgentPair.slow)
        try #require(started.status == 201, "\(started.body)")
        let id = try MigrationResource.decode(started.body).id
        usleep(600_000)
        let incoming = try #require(GuestAgentFixture.vmmProcesses(id: guest.id).first { $0 != guest.pid })
        kill(incoming, SIGKILL)
        let (ended, _) = try pair.followToEnd(id, guest: "g1")
        #expect(ended.status == .failed && ended.guestLocation == "source", "\(ended.json)")
        let states = try pair.settled("g1")
        #expect(states.source == "running" && states.destination == nil, "\(states)")
        #expect(GuestAgentFixture.vmmProcesses(id: guest.id) == [try #require(guest.pid)])
        let journal = try AgentPair.journal(pair.destination, "g1")
        #expect(journal.last?.to == nil && journal.last?.cause.contains("failed") == true, "\(journal)")
    }

    @Test("a paused guest arrives paused and its row says so")
    func pausedGuestStaysPaused() throws {
        let pair = try AgentPair("lp")
        let guest = try pair.runGuest("g1", on: pair.source, workload: "idle")
        let socket = try #require(guest.controlSocket)
        _ = try VMMControlClient(path: socket, timeoutSeconds: 5).call("pause")
        #expect(try pair.source.waitFor("g1", state: "paused", timeout: 10).state == "paused")
        let started = try pair.startMigration("g1")
        try #require(started.status == 201, "\(started.body)")
        let (ended, _) = try pair.followToEnd(try MigrationResource.decode(started.body).id, guest: "g1")
        #expect(ended.status == .completed, "\(ended.json)")
        let states = try pair.settled("g1")
        #expect(states.source == nil && states.destination == "paused", "\(states)")
        let arrived = try #require(try pair.destination.view("g1").controlSocket)
        #expect(try VMMControlClient(path: arrived, timeoutSeconds: 5).call("status")["state"]?.stringValue == "paused")
        #expect(try pair.destination.client().send("POST", "/v1/guests/g1/resume").status == 200)
        #expect(try pair.destination.view("g1").state == "running")
    }
}
