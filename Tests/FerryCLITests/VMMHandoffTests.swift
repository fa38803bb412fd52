import FerryAgent
import FerryHostModel
import FerrySystem
import FerryTestSupport
import FerryVMM
import Foundation
import Glibc
import Testing

/// What an agent needs of `ferry vmm` beyond the plain migration: a paused guest migrates and
/// stays paused, SIGTERM is a graceful shutdown, and an unresolved handoff is finished with the
/// destination's answer (`resolve`).
@Suite(
    "ferry vmm: paused migration, SIGTERM, resolve", .serialized,
    .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct VMMHandoffTests {
    @Test("a paused guest migrates, stays paused on both ends, and runs on the destination after resume")
    func pausedMigration() throws {
        let source = VMMHarness("vmm-psrc")
        let process = try source.start(["--spec", try source.specFile()])
        let client = try source.client()
        try client.call("pause")
        // The vCPUs stop at their next step boundary, a moment after `pause` answers: the count
        // the guest holds from then on is the one read twice alike.
        var before = try source.steps(client)
        for _ in 0..<50 {
            usleep(50_000)
            let again = try source.steps(client)
            if again == before { break }
            before = again
        }
        let destination = VMMHarness("vmm-pdst", id: source.id)
        let spawner = IncomingGuestSpawner(stateDirectory: destination.stateDir, executable: FerryProcess.executable)
        let incoming = try spawner.spawn(
            id: source.id, name: try GuestName("g1"), listenHost: "127.0.0.1", keyFile: nil, paused: true)
        destination.track(child: incoming.pid)
        let driver = OutgoingMigrationDriver(
            guest: "g1", socketPath: source.socketPath, destination: incoming.address,
            options: MigrationOptions(downtimeMs: 200))
        try driver.start()
        _ = driver.events.wait(after: 0, timeoutMs: 30_000)
        // The source may already have handed the guest over and exited (a 64 MiB paused guest
        // moves fast); the count on arrival below checks the same thing in that case.
        if let during = try? source.steps(client) {
            #expect(during == before, "the paused guest ran during its migration")
        }
        let ended = try #require(driver.waitUntilEnded(timeoutSeconds: 120))
        #expect(ended.status == .completed, "\(ended.json)")
        #expect(process.wait(timeout: 20).status == 0)
        #expect(incoming.waitForOutcome(timeoutSeconds: 30) == .running)
        let arrived = try destination.client()
        #expect(try arrived.call("hello")["state"]?.stringValue == "paused")
        let landed = try destination.steps(arrived)
        #expect(landed == before, "the paused guest ran \(Int64(landed) - Int64(before)) steps on its way")
        usleep(300_000)
        #expect(try destination.steps(arrived) == landed, "the guest runs on the destination although paused")
        print("paused migration: \(before) steps on the source, \(landed) on arrival (ran \(landed - before) steps)")
        try arrived.call("resume")
        usleep(300_000)
        #expect(try destination.steps(arrived) > landed, "resume does not run the guest")
    }

    @Test("a failed migration of a paused guest leaves it paused on the source")
    func pausedStaysPausedOnFailure() throws {
        let source = VMMHarness("vmm-pfail")
        _ = try source.detach(["--spec", try source.specFile()])
        let client = try source.client()
        try client.call("pause")
        let watcher = try source.client()
        _ = try watcher.call("watch")
        try client.call("migrate", ["to": "127.0.0.1:9"])  // nothing listens: the migration fails
        let events = try VMMHarness.watch(watcher) {
            $0["event"]?.stringValue == "state" && $0["state"]?.stringValue != "migrating-out"
        }
        #expect(events.last?["state"]?.stringValue == "paused", "\(events.last?.line ?? "")")
        let steps = try source.steps(client)
        usleep(300_000)
        #expect(try source.steps(client) == steps)
    }

    @Test("SIGTERM: a running guest is shut down gracefully (stopped, exit 0, socket removed)")
    func sigtermShutsDown() throws {
        let vmm = VMMHarness("vmm-term")
        let process = try vmm.start(["--spec", try vmm.specFile()])
        let watcher = try vmm.client()
        _ = try watcher.call("watch")
        kill(process.process.processIdentifier, SIGTERM)
        let events = try VMMHarness.watch(watcher, timeout: 30) { $0["state"]?.stringValue == "stopped" }
        let states = events.compactMap { $0["event"]?.stringValue == "state" ? $0["state"]?.stringValue : nil }
        #expect(states == ["stopping", "stopped"], "\(states)")
        let outcome = process.wait(timeout: 20)
        #expect(outcome.status == 0 && outcome.signal == nil, "exit \(outcome.status) \(outcome.stderr)")
        #expect(!FileManager.default.fileExists(atPath: vmm.socketPath))
    }

    @Test("SIGTERM mid-migration: the migration is cancelled, then the guest is shut down here (exit 0)")
    func sigtermMigrating() throws {
        let pair = try AgentMigrationPair("vmm-termout", workload: "uniform:400MB/s")
        let watcher = try pair.source.client()
        _ = try watcher.call("watch")
        let driver = pair.driver(AgentMigrationPair.endless)
        try driver.start()
        _ = driver.events.wait(after: 2, timeoutMs: 30_000)
        kill(pair.sourceProcess.process.processIdentifier, SIGTERM)
        let events = try VMMHarness.watch(watcher, timeout: 60) { $0["state"]?.stringValue == "stopped" }
        let states = events.compactMap { $0["event"]?.stringValue == "state" ? $0["state"]?.stringValue : nil }
        #expect(states.suffix(3) == ["running", "stopping", "stopped"], "\(states)")
        let outcome = pair.sourceProcess.wait(timeout: 20)
        #expect(outcome.status == 0 && outcome.signal == nil, "exit \(outcome.status) \(outcome.stderr)")
        #expect(driver.waitUntilEnded(timeoutSeconds: 30)?.status == .cancelled)
        guard case .failed(let status, _) = pair.incoming.waitForOutcome(timeoutSeconds: 30) else {
            Issue.record("the incoming vmm did not fail")
            return
        }
        #expect(status == 1)
    }

    @Test("SIGTERM while waiting for an incoming migration: the wait is cancelled, exit 1")
    func sigtermIncoming() throws {
        let vmm = VMMHarness("vmm-termin")
        let process = try vmm.start(["--incoming", "127.0.0.1:0", "--name", "g1"])
        kill(process.process.processIdentifier, SIGTERM)
        let outcome = process.wait(timeout: 20)
        #expect(outcome.status == 1 && outcome.signal == nil, "exit \(outcome.status) \(outcome.stderr)")
    }

    /// A handoff left unresolved: a relay kills the destination vmm as COMMIT goes by, so the
    /// source has written COMMIT and never hears whether the destination resumed.
    func unresolvedSource(_ name: String) throws -> (VMMHarness, FerryProcess, VMMControlClient, PhaseFaultRelay) {
        let source = VMMHarness(name)
        let process = try source.start(["--spec", try source.specFile()])
        let destination = try VMMDestination(for: source)
        let port = try #require(destination.address.split(separator: ":").last.flatMap { UInt16($0) })
        let victim = destination.pid
        let relay = try PhaseFaultRelay(upstreamPort: port, phase: .commit, fault: .hook { kill(victim, SIGKILL) })
        let watcher = try source.client()
        _ = try watcher.call("watch")
        try source.client().call(
            "migrate", ["to": .string("127.0.0.1:\(relay.port)"), "downtime_ms": 200, "handoff_timeout_s": 3])
        let events = try VMMHarness.watch(watcher, timeout: 90) { $0["state"]?.stringValue == "unresolved" }
        #expect(events.last?["state"]?.stringValue == "unresolved", "\(events.last?.line ?? "")")
        return (source, process, watcher, relay)
    }

    @Test("resolve source: an unresolved guest continues on the source")
    func resolveSource() throws {
        let (source, _, watcher, relay) = try unresolvedSource("vmm-rsrc")
        defer { relay.stop() }
        let client = try source.client()
        #expect(throws: VMMError.self) { try client.call("resume") }
        #expect(throws: VMMError.self) { try client.call("resolve", ["guest_location": "nowhere"]) }
        #expect(try client.call("resolve", ["guest_location": "source"])["state"]?.stringValue == "running")
        let events = try VMMHarness.watch(watcher) { $0["event"]?.stringValue == "state" }
        #expect(events.last?["state"]?.stringValue == "running")
        let steps = try source.steps(client)
        usleep(300_000)
        #expect(try source.steps(client) > steps, "the resolved guest does not run")
        #expect(throws: VMMError.self) { try client.call("resolve", ["guest_location": "source"]) }
    }

    @Test("resolve destination: the unresolved source process leaves (exit 0)")
    func resolveDestination() throws {
        let (source, process, watcher, relay) = try unresolvedSource("vmm-rdst")
        defer { relay.stop() }
        #expect(try source.client().call("resolve", ["guest_location": "destination"])["state"]?.stringValue == "left")
        let events = try VMMHarness.watch(watcher) { $0["state"]?.stringValue == "left" }
        #expect(events.last?["state"]?.stringValue == "left")
        let outcome = process.wait(timeout: 20)
        #expect(outcome.status == 0 && outcome.signal == nil, "exit \(outcome.status) \(outcome.stderr)")
    }
}
