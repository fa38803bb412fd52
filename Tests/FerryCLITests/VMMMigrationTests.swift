import FerryHostModel
import FerrySystem
import FerryTestSupport
import FerryVMM
import Foundation
import Glibc
import Testing

/// Live migration between two `ferry vmm` processes on loopback, driven only through their
/// control sockets.
@Suite(
    "ferry vmm: migration through the control socket", .serialized,
    .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct VMMMigrationTests {
    @Test("migrate + watch until left: the source exits 0, the destination runs the guest under the same ID")
    func liveMigration() throws {
        let source = VMMHarness("vmm-src")
        let process = try source.start(["--spec", try source.specFile()])
        let destination = try VMMDestination(for: source)
        let watcher = try source.client()
        #expect(try watcher.call("watch")["state"]?.stringValue == "running")
        let before = try source.steps(try source.client())
        let ack = try source.client().call("migrate", ["to": .string(destination.address), "downtime_ms": 200])
        #expect(ack["state"]?.stringValue == "migrating-out")
        let events = try VMMHarness.watch(watcher) { $0["state"]?.stringValue == "left" }
        let states = events.compactMap { $0["event"]?.stringValue == "state" ? $0["state"]?.stringValue : nil }
        #expect(states == ["migrating-out", "left"], "state events: \(states)")
        #expect(events.contains { $0["event"]?.stringValue == "progress" && $0["migration"]?["round"] != nil })
        let final = try #require(events.last { $0["event"]?.stringValue == "migration" }?["migration"])
        #expect(final["phase"]?.stringValue == "completed" && final["guest_location"]?.stringValue == "destination")
        print("ferry vmm migration: \(final.line)")
        let outcome = process.wait(timeout: 20)
        #expect(outcome.status == 0 && outcome.signal == nil, "source exit \(outcome.status): \(outcome.stderr)")
        #expect(!FileManager.default.fileExists(atPath: source.socketPath))

        let arrived = try destination.harness.client()
        let hello = try arrived.call("hello")
        #expect(hello["guest_id"]?.stringValue == source.id.hex && hello["pid"]?.intValue == Int(destination.pid))
        #expect(hello["state"]?.stringValue == "running" && hello["name"]?.stringValue == "g1")
        let landed = try destination.harness.steps(arrived)
        #expect(landed >= before, "the guest went back in time: \(before) before, \(landed) after")
        usleep(300_000)
        #expect(try destination.harness.steps(arrived) > landed, "the guest does not run on the destination")
    }

    @Test("cancel-migration through the socket: the guest stays running on the source")
    func cancelKeepsGuest() throws {
        let source = VMMHarness("vmm-cancel")
        _ = try source.detach(["--spec", try source.specFile(workload: "uniform:400MB/s")])
        let destination = try VMMDestination(for: source)
        let watcher = try source.client()
        _ = try watcher.call("watch")
        let client = try source.client()
        // A link far slower than the guest dirties memory: the migration cannot converge by itself.
        try client.call(
            "migrate",
            [
                "to": .string(destination.address), "max_bandwidth_bytes_per_s": 4_000_000, "auto_converge": false,
                "max_rounds": 10000, "downtime_ms": 1,
            ])
        _ = try VMMHarness.watch(watcher) { $0["event"]?.stringValue == "progress" }
        let during = try client.call("migration")
        #expect(during["state"]?.stringValue == "migrating-out")
        #expect(during["migration"]?["bytes_sent"]?.doubleValue ?? 0 > 0, "\(during.line)")
        #expect(try client.call("cancel-migration")["cancelling"]?.boolValue == true)
        let events = try VMMHarness.watch(watcher) { $0["event"]?.stringValue == "state" }
        let back = try #require(events.last)
        #expect(back["state"]?.stringValue == "running", "\(back.line)")
        #expect(back["reason"]?.stringValue?.contains("cancelled") == true, "\(back.line)")
        #expect(try client.call("migration")["migration"]?["phase"]?.stringValue == "cancelled")
        let steps = try source.steps(client)
        usleep(300_000)
        #expect(try source.steps(client) > steps, "the guest does not run on the source after the cancel")
        #expect(throws: VMMError.self) { try client.call("cancel-migration") }
        // The destination was told to discard: its process ends (exit 1, state failed).
        let deadline = Date().addingTimeInterval(20)
        while ProcessIdentity.of(pid: destination.pid) != nil && !VMMProcessTests.isZombie(destination.pid)
            && Date() < deadline
        {
            usleep(20_000)
        }
        #expect(ProcessIdentity.of(pid: destination.pid) == nil || VMMProcessTests.isZombie(destination.pid))
    }

    @Test("the vmm survives SIGKILL of the shell that started it (no parent-death signal) and SIGHUP")
    func survivesItsStarter() throws {
        let vmm = VMMHarness("vmm-orphan")
        let command =
            "'\(FerryProcess.executable)' vmm --spec '\(try vmm.specFile())' --id \(vmm.id.hex) --state-dir '\(vmm.stateDir)' >/dev/null 2>&1 & wait"
        let shell = Process()
        shell.executableURL = URL(fileURLWithPath: "/bin/sh")
        shell.arguments = ["-c", command]
        try shell.run()
        let hello = try vmm.waitUntilAnswering()
        let pid = pid_t(try #require(hello["pid"]?.intValue))
        defer { kill(pid, SIGKILL) }
        kill(shell.processIdentifier, SIGKILL)
        usleep(200_000)
        let starter = shell.processIdentifier
        #expect(
            ProcessIdentity.of(pid: starter) == nil || VMMProcessTests.isZombie(starter),
            "the starting shell still runs")
        kill(pid, SIGHUP)
        let client = try vmm.client()
        let steps = try vmm.steps(client)
        usleep(300_000)
        #expect(try vmm.steps(client) > steps, "the guest stopped with its starter")
        #expect(try client.call("hello")["pid"]?.intValue == Int(pid))
    }
}
