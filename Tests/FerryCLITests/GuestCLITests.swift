import FerryAgent
import FerryGuest
import FerryTestSupport
import FerryVMM
import Foundation
import Glibc
import Testing

/// `ferry guest` against a real `ferry agent` (issue 14 items 1, 2, 5, 7 and 8): the agent owns
/// its guests, each in a `ferry vmm` process of its own, and records every change.
@Suite(.serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct GuestCLITests {
    /// create (with a disk) → list → start → console → suspend → resume → stop → delete, through
    /// the CLI with the built-in guest; every step checked against the processes and files.
    @Test func theWholeLifecycleThroughTheCLI() throws {
        let agent = try GuestAgentFixture("gl")
        let created = try agent.guest(["create", "--name", "web-1", "--vcpus", "2", "--memory", "64M", "--disk", "4M"])
        #expect(created.status == 0, "\(created.stderr)")
        #expect(created.stdout.contains("guest web-1 defined"), "\(created.stdout)")
        let disk = agent.stateDirectory + "/disks/web-1.root.raw"
        var info = stat()
        #expect(stat(disk, &info) == 0 && info.st_size == 4 << 20 && info.st_blocks == 0, "a sparse 4 MiB disk")
        let listed = try agent.guest(["list"])
        #expect(listed.stdout.contains("web-1") && listed.stdout.contains("defined"), "\(listed.stdout)")
        // A second guest of the same name is refused, naming the field.
        let twice = try agent.guest(["create", "--name", "web-1"])
        #expect(twice.status == 1 && twice.stderr.contains("exists already"), "\(twice.stderr)")

        let started = try agent.guest(["start", "web-1"])
        #expect(started.status == 0, "\(started.stderr)")
        let running = try agent.view("web-1")
        #expect(running.state == "running")
        let pid = try #require(running.pid)
        #expect(GuestAgentFixture.vmmProcesses(id: running.id) == [pid])
        let socket = try #require(running.controlSocket)
        let before = try GuestAgentFixture.steps(socket: socket)
        Thread.sleep(forTimeInterval: 1.2)
        #expect(try GuestAgentFixture.steps(socket: socket) > before, "the guest's vCPUs run")
        let console = try agent.guest(["console", "web-1"])
        #expect(console.status == 0 && console.stdout.contains("running"), "\(console.stdout) \(console.stderr)")
        #expect(console.stdout.contains("disk: new journal (no records yet)"), "the vmm opened the disk")
        let paced = try agent.guest(["pace", "web-1", "1MB/s"])
        #expect(paced.status == 0 && paced.stdout.contains("guest web-1 paced at 1MB/s"), "\(paced.stderr)")
        let badRate = try agent.guest(["pace", "web-1", "fast"])
        #expect(badRate.status != 0 && badRate.stderr.contains("rate"), "\(badRate.stderr)")
        // One operation at a time: a start of a running guest is refused, naming its state.
        let again = try agent.guest(["start", "web-1"])
        #expect(again.status == 1 && again.stderr.contains("running"), "\(again.stderr)")

        let suspended = try agent.guest(["suspend", "web-1"])
        #expect(suspended.status == 0, "\(suspended.stderr)")
        #expect(try agent.view("web-1").state == "suspended")
        #expect(GuestAgentFixture.vmmProcesses(id: running.id).isEmpty)
        #expect(access(agent.guestsDirectory + "/\(running.id).suspend", F_OK) == 0)
        let resumed = try agent.guest(["resume", "web-1"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        let after = try agent.view("web-1")
        #expect(after.state == "running" && after.pid != nil && after.pid != pid)
        #expect(try GuestAgentFixture.steps(socket: socket) >= before, "resumed from where it was suspended")

        let stopped = try agent.guest(["stop", "web-1", "--timeout", "20"])
        #expect(stopped.status == 0, "\(stopped.stderr)")
        #expect(try agent.view("web-1").state == "stopped")
        #expect(GuestAgentFixture.vmmProcesses(id: running.id).isEmpty)
        // The journal went on across suspend and resume (one boot) and ended with a clean shutdown.
        let journal = try DiskJournalScan.read(path: disk)
        #expect(journal.firstCorruption == nil && journal.cleanShutdown && journal.boots == 1, "\(journal.resumeLine)")
        #expect((journal.head?.seq ?? 0) > 60, "100 records a second for over a second: \(journal.resumeLine)")
        let shown = try agent.guest(["show", "web-1"])
        for cause in ["created through the API", "graceful shutdown", "suspended to", "restoring the suspended guest"] {
            #expect(shown.stdout.contains(cause), "\(shown.stdout)")
        }
        let deleted = try agent.guest(["delete", "web-1"])
        #expect(deleted.status == 0, "\(deleted.stderr)")
        #expect(access(disk, F_OK) == 0, "the disk is kept unless told")
        #expect(try agent.list().isEmpty)
        let recreated = try agent.guest(["create", "--name", "web-1", "--memory", "64M", "--disk", "4M"])
        #expect(recreated.status == 0, "the kept disk of the same size is taken again: \(recreated.stderr)")
        let removed = try agent.guest(["delete", "web-1", "--remove-disks"])
        #expect(removed.status == 0, "\(removed.stderr)")
        #expect(access(disk, F_OK) != 0, "removed when told")
        #expect(agent.terminate()?.status == 0)
    }

    /// A delete of a running guest is refused; stop with --force kills one that will not stop;
    /// the metrics count the guests by state and the disks' bytes.
    @Test func deleteIsRefusedWhileRunningAndMetricsCountTheGuests() throws {
        let agent = try GuestAgentFixture("gd")
        #expect(try agent.guest(["create", "--name", "a", "--disk", "2M"]).status == 0)
        #expect(try agent.guest(["create", "--name", "b"]).status == 0)
        #expect(try agent.guest(["start", "a"]).status == 0)
        let refused = try agent.guest(["delete", "a"])
        #expect(refused.status == 1 && refused.stderr.contains("stop it first"), "\(refused.stderr)")
        let metrics = try agent.client().checked(agent.client().send("GET", "/metrics"))
        let samples = try PrometheusText.parse(String(decoding: metrics.body, as: UTF8.self))
        #expect(samples[AgentMetrics.Name.guests, ["state": "running"]] == 1)
        #expect(samples[AgentMetrics.Name.guests, ["state": "defined"]] == 1)
        #expect(samples[AgentMetrics.Name.diskBytes, ["kind": "provisioned"]] == Double(2 << 20))
        let forced = try agent.guest(["stop", "a", "--force", "--timeout", "5"])
        #expect(forced.status == 0, "\(forced.stderr)")
        #expect(try agent.view("a").state == "stopped")
        #expect(try agent.guest(["delete", "a", "--remove-disks"]).status == 0)
        #expect(agent.terminate()?.status == 0)
    }

    /// Malformed bodies get a 4xx naming the field; nothing is created.
    @Test func malformedBodiesAre4xxNamingTheField() throws {
        let agent = try GuestAgentFixture("gm")
        let client = try agent.client()
        let cases: [(String, Int, String?)] = [
            (#"{"name":"x","kind":"builtin","vcpus":1,"memory_bytes":100,"seed":1}"#, 422, "memory_bytes"),
            (#"{"name":"x","kind":"builtin","vcpus":1,"seed":1}"#, 422, "memory_bytes"),
            (#"{"name":"X!","kind":"builtin","vcpus":1,"memory_bytes":67108864,"seed":1}"#, 422, "name"),
            (
                #"{"name":"x","kind":"builtin","vcpus":1,"memory_bytes":67108864,"seed":1,"disks":[{"name":"d","size_bytes":7}]}"#,
                422, "disks[0].size_bytes"
            ),
            (#"{"name":"x","kind":"builtin","vcpus":"two","memory_bytes":67108864,"seed":1}"#, 422, "vcpus"),
            ("not json", 400, nil),
        ]
        for (body, status, field) in cases {
            let response = try client.send("POST", "/v1/guests", body: Array(body.utf8))
            #expect(response.status == status, "\(body): \(String(decoding: response.body, as: UTF8.self))")
            let detail = try JSONDecoder().decode(AgentAPIError.Body.self, from: Data(response.body)).error
            #expect(detail.field == field, "\(body): \(detail)")
        }
        let stop = try client.send("POST", "/v1/guests/x/stop", body: Array(#"{"timeout_seconds":0}"#.utf8))
        #expect(stop.status == 422 && String(decoding: stop.body, as: UTF8.self).contains("timeout_seconds"))
        // Without "disks" a specification has none.
        let plain = try client.send(
            "POST", "/v1/guests",
            body: Array(#"{"name":"x","kind":"builtin","vcpus":1,"memory_bytes":67108864,"seed":1}"#.utf8))
        #expect(plain.status == 201, "\(String(decoding: plain.body, as: UTF8.self))")
        #expect(try agent.list().map(\.specification.name.value) == ["x"])
        #expect(agent.terminate()?.status == 0)
    }
}
