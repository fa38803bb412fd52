import FerryAgent
import FerryHostModel
import FerryTestSupport
import FerryVMM
import Foundation
import Glibc
import Testing

/// Crash detection and reconciliation with real processes (issue 14 items 3 and 8): a guest's
/// process killed is `crashed` within seconds; an agent killed leaves its guests running and
/// adopts them when it starts again.
@Suite(.serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct GuestRecoveryTests {
    @Test func killingAGuestsProcessIsRecordedAsACrash() throws {
        let agent = try GuestAgentFixture("gk")
        #expect(try agent.guest(["create", "--name", "c1"]).status == 0)
        #expect(try agent.guest(["start", "c1"]).status == 0)
        let pid = try #require(try agent.view("c1").pid)
        let killed = Date()
        kill(pid, SIGKILL)
        let crashed = try agent.waitFor("c1", state: "crashed", timeout: 10)
        let seconds = Date().timeIntervalSince(killed)
        #expect(crashed.state == "crashed", "after \(seconds) s")
        #expect(seconds < 5, "recorded after \(seconds) s")
        print(String(format: "kill -9 of a guest's ferry vmm: recorded crashed after %.2f s", seconds))
        let last = try #require(crashed.transitions?.last)
        #expect(last.to == "crashed" && last.cause.contains("process \(pid) died"), "\(last)")
        // A crashed guest starts again.
        #expect(try agent.guest(["start", "c1"]).status == 0)
        #expect(try agent.view("c1").state == "running")
        #expect(try agent.guest(["stop", "c1"]).status == 0)
        #expect(agent.terminate()?.status == 0)
    }

    /// kill -9 of the agent: guests run on (their steps rise); the agent started again adopts
    /// them (running, no crash journaled) and watches them again (a later kill is seen at once).
    @Test func aKilledAgentLeavesGuestsRunningAndAdoptsThemAgain() throws {
        let agent = try GuestAgentFixture("ga")
        for name in ["r1", "r2"] {
            #expect(try agent.guest(["create", "--name", name]).status == 0)
            #expect(try agent.guest(["start", name]).status == 0)
        }
        #expect(try agent.guest(["create", "--name", "idle"]).status == 0)
        let views = try ["r1", "r2"].map { try agent.view($0) }
        agent.kill9()
        let sockets = views.compactMap(\.controlSocket)
        let before = try sockets.map { try GuestAgentFixture.steps(socket: $0) }
        Thread.sleep(forTimeInterval: 1.2)
        for (socket, steps) in zip(sockets, before) {
            #expect(try GuestAgentFixture.steps(socket: socket) > steps, "the guest runs on without its agent")
        }
        try agent.start()
        #expect(agent.process?.waitForStderrLine(containing: "reconciled at start") != nil)
        for view in views {
            let now = try agent.view(view.specification.name.value)
            #expect(now.state == "running" && now.pid == view.pid, "\(now.state) \(String(describing: now.pid))")
            #expect(!(now.transitions ?? []).contains { $0.to == "crashed" })
            #expect(GuestAgentFixture.vmmProcesses(id: view.id) == [try #require(view.pid)])
        }
        #expect(try agent.view("idle").state == "defined")
        // The watch was opened again: a kill is recorded within seconds.
        kill(try #require(views[0].pid), SIGKILL)
        #expect(try agent.waitFor("r1", state: "crashed", timeout: 10).state == "crashed")
        #expect(try agent.guest(["stop", "r2"]).status == 0)
        #expect(agent.terminate()?.status == 0)
    }

    /// A guest killed while no agent ran is `crashed` when the agent starts (its PID is gone);
    /// an unknown guest process in guests/ is registered, not killed.
    @Test func reconciliationAtStartMarksTheVanishedAndRegistersTheUnknown() throws {
        let agent = try GuestAgentFixture("gr")
        #expect(try agent.guest(["create", "--name", "v1"]).status == 0)
        #expect(try agent.guest(["start", "v1"]).status == 0)
        let view = try agent.view("v1")
        agent.kill9()
        kill(try #require(view.pid), SIGKILL)
        // A guest process the inventory never had, in the agent's guests directory.
        let stranger = GuestID.random()
        let spec = agent.scratch.file("stranger.json")
        try #"{"name":"stranger","kind":"builtin","vcpus":1,"memory_bytes":16777216,"seed":2}"#.write(
            toFile: spec, atomically: true, encoding: .utf8)
        let launched = try FerryProcess.run(
            ["vmm", "--spec", spec, "--id", stranger.hex, "--state-dir", agent.guestsDirectory, "--detach"], timeout: 60
        )
        #expect(launched.status == 0, "\(launched.stderr)")
        Thread.sleep(forTimeInterval: 0.3)
        try agent.start()
        let crashed = try agent.view("v1")
        #expect(crashed.state == "crashed")
        #expect(
            crashed.transitions?.last?.cause.contains("is gone") == true, "\(String(describing: crashed.transitions))")
        let registered = try agent.view("stranger")
        #expect(registered.state == "running" && registered.id == stranger.hex)
        #expect(GuestAgentFixture.vmmProcesses(id: stranger.hex).count == 1)
        #expect(try agent.guest(["stop", "stranger"]).status == 0)
        #expect(agent.terminate()?.status == 0)
    }

    /// The periodic pass: a guest process that appears while the agent runs is registered within
    /// seconds, without a restart.
    @Test func thePeriodicPassRegistersAProcessThatAppears() throws {
        let agent = try GuestAgentFixture("gp")
        let stranger = GuestID.random()
        let spec = agent.scratch.file("late.json")
        try #"{"name":"late","kind":"builtin","vcpus":1,"memory_bytes":16777216,"seed":2}"#.write(
            toFile: spec, atomically: true, encoding: .utf8)
        let launched = try FerryProcess.run(
            ["vmm", "--spec", spec, "--id", stranger.hex, "--state-dir", agent.guestsDirectory, "--detach"], timeout: 60
        )
        #expect(launched.status == 0, "\(launched.stderr)")
        let deadline = Date().addingTimeInterval(10)
        var found: GuestView?
        while found == nil && Date() < deadline {
            found = try agent.list().first { $0.id == stranger.hex }
            if found == nil { usleep(100_000) }
        }
        #expect(found?.state == "running", "registered within 10 s")
        #expect(try agent.guest(["stop", "late"]).status == 0)
        #expect(agent.terminate()?.status == 0)
    }

    /// A guest whose graceful shutdown does not finish (its process stopped with SIGSTOP): the
    /// stop fails and the guest is still running; with --force it is killed and stopped.
    @Test func aStopThatTimesOutLeavesTheGuestRunningUnlessForced() throws {
        let agent = try GuestAgentFixture("gt")
        #expect(try agent.guest(["create", "--name", "hung"]).status == 0)
        #expect(try agent.guest(["start", "hung"]).status == 0)
        let pid = try #require(try agent.view("hung").pid)
        kill(pid, SIGSTOP)
        // One operation per guest: while the stop waits, another request is 409 busy, naming it.
        let waiting = try FerryProcess(
            ["guest", "stop", "hung", "--timeout", "1", "--agent", agent.url, "--key-file", agent.keyFile])
        Thread.sleep(forTimeInterval: 1)
        let busy = try agent.guest(["suspend", "hung"])
        #expect(busy.status == 1 && busy.stderr.contains("busy: stop runs"), "\(busy.stderr)")
        #expect(waiting.wait(timeout: 30).status == 1)
        let refused = try agent.guest(["stop", "hung", "--timeout", "1"])
        #expect(refused.status == 1, "\(refused.stderr)")
        #expect(
            refused.stderr.contains("did not stop within 1 s") && refused.stderr.contains("force"), "\(refused.stderr)")
        let view = try agent.view("hung")
        #expect(view.state == "running" && view.pid == pid)
        #expect(view.transitions?.last?.cause.contains("graceful stop failed") == true)
        let forced = try agent.guest(["stop", "hung", "--timeout", "1", "--force"])
        #expect(forced.status == 0, "\(forced.stderr)")
        let stopped = try agent.view("hung")
        #expect(stopped.state == "stopped")
        #expect(
            stopped.transitions?.last?.cause.contains("killed") == true, "\(String(describing: stopped.transitions))")
        #expect(GuestAgentFixture.vmmProcesses(id: stopped.id).isEmpty)
        #expect(agent.terminate()?.status == 0)
    }

    /// The agent started again under another hostname (a UTS namespace of its own) adopts its
    /// guests as before: nothing depends on the host's name.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare"), "needs unshare(1)"))
    func aHostnameChangeDestroysNothing() throws {
        let agent = try GuestAgentFixture("gh")
        #expect(try agent.guest(["create", "--name", "h1", "--disk", "2M"]).status == 0)
        #expect(try agent.guest(["start", "h1"]).status == 0)
        let before = try agent.view("h1")
        agent.kill9()
        try agent.start(prefix: [
            "/usr/bin/unshare", "--uts", "/bin/sh", "-c", "hostname renamed-host && exec \"$0\" \"$@\"",
        ])
        let host = try agent.client().get("/v1/host", as: HostReport.self)
        #expect(host.agent.hostname == "renamed-host")
        let after = try agent.view("h1")
        #expect(after.state == "running" && after.pid == before.pid && after.missingDisks.isEmpty)
        #expect(try agent.list().count == 1)
        #expect(try agent.guest(["stop", "h1"]).status == 0)
        #expect(agent.terminate()?.status == 0)
    }
}
