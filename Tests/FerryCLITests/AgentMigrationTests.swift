import FerryAgent
import FerryHostModel
import FerrySystem
import FerryTestSupport
import FerryVMM
import Foundation
import Glibc
import Testing

/// A source `ferry vmm` (a child of the test) and a destination `ferry vmm --incoming` started the
/// way a destination agent starts one (`IncomingGuestSpawner`), both killed when the test ends.
final class AgentMigrationPair {
    let source: VMMHarness
    let sourceProcess: FerryProcess
    let destination: VMMHarness
    let incoming: IncomingGuestProcess
    /// Every outcome `onOutcome` and `onEnd` reported, in order.
    let reported = Reports()

    init(_ name: String, workload: String? = nil) throws {
        source = VMMHarness(name + "-src")
        sourceProcess = try source.start(["--spec", try source.specFile(workload: workload)])
        destination = VMMHarness(name + "-dst", id: source.id)
        let spawner = IncomingGuestSpawner(stateDirectory: destination.stateDir, executable: FerryProcess.executable)
        let reported = self.reported
        incoming = try spawner.spawn(
            id: source.id, name: try GuestName("g1"), listenHost: "127.0.0.1", keyFile: nil
        ) { outcome in reported.add("incoming \(outcome)") }
        destination.track(child: incoming.pid)
    }

    func driver(_ options: MigrationOptions = MigrationOptions(downtimeMs: 200)) -> OutgoingMigrationDriver {
        let reported = self.reported
        return OutgoingMigrationDriver(
            guest: "g1", socketPath: source.socketPath, destination: incoming.address, peer: "http://127.0.0.1:1",
            options: options
        ) { ended in reported.add("driver \(ended.status.rawValue)") }
    }

    /// Options for a migration that cannot converge by itself (a link far slower than the guest
    /// dirties memory), so it is still running when the test acts.
    static let endless = MigrationOptions(
        downtimeMs: 1, maxRounds: 10_000, autoConverge: false, maxBandwidthBytesPerSecond: 4_000_000)

    /// Whether the guest behind `harness`'s socket makes progress.
    static func runs(_ harness: VMMHarness) throws -> Bool {
        let client = try harness.client()
        let steps = try harness.steps(client)
        usleep(300_000)
        return try harness.steps(client) > steps
    }
}

/// What the callbacks reported, from whichever thread.
final class Reports: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [String] = []
    func add(_ item: String) { lock.withLock { items.append(item) } }
    var all: [String] { lock.withLock { items } }
}

@Suite(
    "the agent's migration driver and incoming spawner against real ferry vmm processes", .serialized,
    .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct AgentMigrationTests {
    @Test("a guest migrates through the driver and the spawner; figures, events and their SSE text agree")
    func migrates() async throws {
        let pair = try AgentMigrationPair("am-live")
        #expect(pair.incoming.port > 0 && pair.incoming.address.hasPrefix("127.0.0.1:"))
        #expect(ProcessIdentity.of(pid: pair.incoming.pid)?.startTicks == pair.incoming.processStartTicks)
        let own = try pair.source.client()  // the vmm's own report, beside the driver
        _ = try own.call("watch")
        let driver = pair.driver()
        try driver.start()
        let ended = try #require(driver.waitUntilEnded(timeoutSeconds: 120))
        #expect(ended.status == .completed && ended.guestLocation == "destination", "\(ended.json)")
        let vmmEvents = try VMMHarness.watch(own) { $0["state"]?.stringValue == "left" }
        let report = try #require(vmmEvents.last { $0["event"]?.stringValue == "migration" }?["migration"])
        #expect(ended.rounds == report["rounds"]?.intValue)
        #expect(ended.bytesTransferred == report["bytes_sent"]?.doubleValue.map { UInt64($0) })
        #expect(ended.downtimeMs == report["downtime_ms"]?.doubleValue)
        #expect(ended.totalTimeMs == report["total_ms"]?.doubleValue)
        #expect(pair.incoming.waitForOutcome(timeoutSeconds: 30) == .running)
        #expect(pair.sourceProcess.wait(timeout: 20).status == 0)
        #expect(try AgentMigrationPair.runs(pair.destination), "the guest does not run on the destination")
        #expect(throws: MigrationDriverError.self) { try driver.cancel() }
        #expect(pair.reported.all.sorted() == ["driver completed", "incoming running"])

        let events = driver.events.snapshot()
        #expect(events.map(\.id) == Array(1...UInt64(events.count)), "ids: \(events.map(\.id))")
        #expect(events.last?.name == .end && events.filter { $0.name == .end }.count == 1)
        let rounds = events.filter { $0.name == .round }.compactMap { try? MigrationResource.decode($0.data).round }
        #expect(!rounds.isEmpty && rounds == rounds.sorted(), "round events: \(rounds)")
        let phases = events.filter { $0.name == .phase }.map(\.data)
        #expect(phases.first?.contains("\"active\"") == true && phases.last?.contains("\"completed\"") == true)
        let final = try MigrationResource.decode(try #require(events.last).data)
        #expect(final.status == .completed && final.rounds == ended.rounds && final.downtimeMs == ended.downtimeMs)

        // The text/event-stream encoding parses back to the same events.
        var parser = ServerSentEventParser()
        let text = events.map(\.eventStreamText).joined()
        let parsed = text.split(separator: "\n", omittingEmptySubsequences: false).compactMap {
            parser.take(line: String($0)).flatMap(MigrationEvent.init)
        }
        #expect(parsed == events)
        // A subscriber that resumes with Last-Event-ID gets exactly what followed.
        let resumeAfter = UInt64(events.count / 2)
        var resumed: [MigrationEvent] = []
        for await event in driver.events.stream(after: resumeAfter) { resumed.append(event) }
        #expect(resumed == Array(events.dropFirst(Int(resumeAfter))))
        print("agent driver migration: \(ended.json); \(events.count) events")
    }

    @Test("cancel mid-migration: cancelled, the guest runs on the source, the incoming vmm exits 1")
    func cancels() throws {
        let pair = try AgentMigrationPair("am-cancel", workload: "uniform:400MB/s")
        let driver = pair.driver(AgentMigrationPair.endless)
        try driver.start()
        #expect(driver.events.wait(after: 0, timeoutMs: 30_000).isEmpty == false)
        _ = driver.events.wait(after: 2, timeoutMs: 30_000)
        #expect(driver.current.status == .active, "\(driver.current.json)")
        #expect(try driver.cancel())
        let ended = try #require(driver.waitUntilEnded(timeoutSeconds: 60))
        #expect(ended.status == .cancelled && ended.guestLocation == "source", "\(ended.json)")
        #expect(try pair.source.client().call("hello")["state"]?.stringValue == "running")
        #expect(try AgentMigrationPair.runs(pair.source), "the guest does not run on the source after the cancel")
        let outcome = pair.incoming.waitForOutcome(timeoutSeconds: 30)
        guard case .failed(let status, _) = outcome else {
            Issue.record("the incoming vmm did not fail: \(String(describing: outcome))")
            return
        }
        #expect(status == 1)
        #expect(pair.reported.all.contains("driver cancelled"), "\(pair.reported.all)")
        #expect(
            pair.reported.all.contains { $0.hasPrefix("incoming failed(exitStatus: Optional(1)") },
            "\(pair.reported.all)")
        let names = driver.events.snapshot().filter { $0.name == .phase }.map(\.data)
        #expect(names.contains { $0.contains("\"cancelling\"") } && names.last?.contains("\"cancelled\"") == true)
    }

    @Test("the destination vmm killed with SIGKILL mid-migration: failed, the guest runs on the source")
    func destinationKilled() throws {
        let pair = try AgentMigrationPair("am-dkill", workload: "uniform:400MB/s")
        let driver = pair.driver(AgentMigrationPair.endless)
        try driver.start()
        _ = driver.events.wait(after: 2, timeoutMs: 30_000)
        #expect(driver.current.bytesTransferred ?? 0 > 0, "\(driver.current.json)")
        kill(pair.incoming.pid, SIGKILL)
        let ended = try #require(driver.waitUntilEnded(timeoutSeconds: 120))
        #expect(ended.status == .failed && ended.guestLocation == "source", "\(ended.json)")
        #expect(ended.error?.isEmpty == false)
        #expect(try AgentMigrationPair.runs(pair.source), "the guest does not run on the source")
        #expect(pair.incoming.waitForOutcome(timeoutSeconds: 30) == .failed(exitStatus: 128 + SIGKILL, reason: nil))
    }

    @Test("the source vmm killed with SIGKILL mid-migration: unresolved (only the destination can say)")
    func sourceKilled() throws {
        let pair = try AgentMigrationPair("am-skill", workload: "uniform:400MB/s")
        let driver = pair.driver(AgentMigrationPair.endless)
        try driver.start()
        _ = driver.events.wait(after: 2, timeoutMs: 30_000)
        kill(pair.sourceProcess.process.processIdentifier, SIGKILL)
        let ended = try #require(driver.waitUntilEnded(timeoutSeconds: 60))
        #expect(ended.status == .unresolved && ended.guestLocation == "unknown", "\(ended.json)")
        #expect(ended.error?.contains("vanished") == true)
        guard case .failed = pair.incoming.waitForOutcome(timeoutSeconds: 60) else {
            Issue.record("the incoming vmm should fail once its source is gone")
            return
        }
    }

    @Test("a source vmm stopped (SIGSTOP) for longer than the watch timeout is waited for, not declared gone")
    func sourceStopped() throws {
        let pair = try AgentMigrationPair("am-sstop", workload: "uniform:400MB/s")
        let driver = pair.driver(AgentMigrationPair.endless)
        try driver.start()
        _ = driver.events.wait(after: 2, timeoutMs: 30_000)
        let pid = pair.sourceProcess.process.processIdentifier
        kill(pid, SIGSTOP)
        usleep(12_000_000)  // past a watch timeout (5 s) and a probe's (5 s)
        #expect(!driver.hasEnded, "the driver gave up on a stopped vmm: \(driver.current.json)")
        kill(pid, SIGCONT)
        _ = try? driver.cancel()
        let ended = try #require(driver.waitUntilEnded(timeoutSeconds: 60))
        #expect(ended.status != .unresolved && ended.guestLocation == "source", "\(ended.json)")
        #expect(try AgentMigrationPair.runs(pair.source), "the guest does not run on the source")
    }

    @Test("start fails cleanly: no vmm behind the socket, or a vmm that is not running a guest")
    func startRefused() throws {
        let nobody = VMMHarness("am-none")
        let lost = OutgoingMigrationDriver(guest: "g1", socketPath: nobody.socketPath, destination: "127.0.0.1:9")
        #expect(throws: MigrationDriverError.self) { try lost.start() }
        #expect(lost.current.status == .failed && lost.current.guestLocation == "source")
        #expect(lost.events.snapshot().last?.name == .end)

        let pair = try AgentMigrationPair("am-refuse")
        let wrong = OutgoingMigrationDriver(
            guest: "g1", socketPath: pair.destination.socketPath, destination: "127.0.0.1:9")
        do {
            try wrong.start()
            Issue.record("a vmm waiting for an incoming guest accepted migrate")
        } catch {
            #expect(error.code == .refused && error.message.contains("wrong_state"), "\(error.message)")
        }
        #expect(pair.incoming.abandon() == .abandoned, "nothing arrived: abandon kills the incoming vmm")
        #expect(pair.incoming.waitForOutcome(timeoutSeconds: 30) == .failed(exitStatus: 128 + SIGKILL, reason: nil))
    }

    @Test(
        "overhead: the same guest migrated by the driver and by ferry send/receive (printed, not asserted)",
        .tags(.slow), .skippable(.slow))
    func overhead() throws {
        var lines: [String] = []
        for run in 1...3 {
            let pair = try AgentMigrationPair("am-cost\(run)")
            usleep(500_000)
            let driver = pair.driver()
            let started = Date()
            try driver.start()
            let ended = try #require(driver.waitUntilEnded(timeoutSeconds: 120))
            let wall = Date().timeIntervalSince(started) * 1000
            #expect(ended.status == .completed)
            lines.append(
                "driver  run \(run): total \(ended.totalTimeMs ?? -1) ms, downtime \(ended.downtimeMs ?? -1) ms, start→end seen by the driver \(String(format: "%.1f", wall)) ms"
            )
        }
        for run in 1...3 {
            let (total, downtime) = try Self.sendReceive(run: run)
            lines.append("send    run \(run): total \(total) ms, downtime \(downtime) ms")
        }
        print(
            "migration overhead (64 MiB built-in guest, 2 vCPUs, uniform:8MB/s, loopback):\n"
                + lines.joined(separator: "\n"))
    }

    /// `ferry send`/`ferry receive` of the guest the vmm tests boot (64 MiB, 2 vCPUs, seed 7,
    /// uniform:8MB/s); returns the source report's total and downtime.
    static func sendReceive(run: Int) throws -> (Double, Double) {
        let scratch = Scratch("am-send\(run)")
        let image = scratch.file("source.img")
        #expect(try FerryProcess.run(["image", "create", image, "--size", "64M", "--seed", "7"]).status == 0)
        let receiver = try FerryProcess([
            "receive", "--listen", "127.0.0.1:0", "--image", scratch.file("received.img"), "--accept-timeout", "60s",
        ])
        let listening = try #require(receiver.waitForStderrLine(containing: "listening on"))
        let port = try #require(
            listening.split(separator: ":").last.flatMap { Int($0.split(separator: ",").first ?? "") })
        let sent = try FerryProcess.run([
            "send", "--image", image, "--to", "127.0.0.1:\(port)", "--workload", "uniform:8MB/s", "--vcpus", "2",
            "--seed", "7", "--run-before", "500ms", "--downtime-ms", "200", "--json", scratch.file("send.json"),
        ])
        _ = receiver.wait()
        #expect(sent.status == 0, "\(sent.stderr)")
        let data = try Data(contentsOf: URL(fileURLWithPath: scratch.file("send.json")))
        let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        return (json["total_ms"] as? Double ?? -1, json["downtime_ms"] as? Double ?? -1)
    }
}
