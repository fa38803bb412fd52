import FerryAgent
import FerryTestSupport
import Foundation
import Glibc
import Testing

/// Faults during cold migrations (issue 15): kill -9 of either agent, a cancel, a destination
/// without room. After each the guest is registered exactly once, on one agent, and starts there.
@Suite(
    "cold migration faults", .serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct AgentColdMigrationFaultTests {
    typealias Cold = AgentColdMigrationTests

    /// A stopped guest whose disk holds `megabytes` MiB of random data at 40 MiB besides its
    /// journal (a guest that is not booted again: the data is only compared).
    static func stoppedGuestWithData(_ pair: AgentPair, megabytes: Int = 4) throws -> (GuestView, String) {
        let view = try Cold.guest(pair, "g1", stop: true)
        let path = try #require(view.specification.disks.first?.path)
        let handle = try #require(FileHandle(forUpdatingAtPath: path))
        try handle.seek(toOffset: 40 << 20)
        var generator = SplitMix64(seed: 42)
        try handle.write(
            contentsOf: Data((0..<(megabytes << 20)).map { _ in UInt8.random(in: 0...255, using: &generator) }))
        try handle.close()
        let copy = pair.source.scratch.file("before.raw")
        try FileManager.default.copyItem(atPath: path, toPath: copy)
        return (view, copy)
    }

    /// Polls the migration on the source until it reaches `phase` (or ends).
    static func waitForPhase(_ pair: AgentPair, _ id: String, _ phase: String, timeout: Double = 10) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let current = try pair.migration(id)
            if current.phase == phase || current.status.isFinal { return }
            usleep(20_000)
        }
    }

    /// The destination lists no guest (within 10 s) and keeps no file of it, partial or whole.
    static func expectDestinationForgets(_ pair: AgentPair) throws {
        let deadline = Date().addingTimeInterval(10)
        while try !pair.destination.list().isEmpty, Date() < deadline { usleep(50_000) }
        #expect(try pair.destination.list().isEmpty)
        let leftovers =
            (try? FileManager.default.contentsOfDirectory(atPath: pair.destination.stateDirectory + "/disks")) ?? []
        #expect(leftovers.isEmpty, "\(leftovers)")
    }

    static var slowDisk: [String: Any] { ["max_bandwidth_bytes_per_s": 1_000_000] }

    @Test("the destination agent killed during the disk move: it restarts, the move starts again, the copy verifies")
    func destinationKilledDuringDisks() throws {
        let pair = try AgentPair("kd", ownStorage: true)
        let (_, copy) = try Self.stoppedGuestWithData(pair)
        let started = try Cold.startCold(pair, "g1", options: Self.slowDisk)
        try Self.waitForPhase(pair, started.id, "disks")
        usleep(1_200_000)
        #expect(try pair.migration(started.id).phase == "disks")
        pair.destination.kill9()
        usleep(500_000)
        try pair.destination.start(port: pair.destination.port)
        let ended = try Cold.follow(pair, started.id, guest: "g1", timeout: 90)
        print("destination killed during the disk move: \(ended.json)")
        #expect(ended.status == .completed && ended.guestLocation == "destination", "\(ended.json)")
        let arrived = try pair.destination.view("g1")
        #expect(arrived.state == "stopped")
        let disk = try #require(arrived.specification.disks.first?.path)
        #expect(try Cold.same(copy, disk), "the disks differ")
        #expect(try pair.source.list().isEmpty)
        #expect(try Cold.post(pair.destination, "/v1/guests/g1/start").status == 200)
    }

    @Test(
        "a connection cut during the disk move (ss -K) resumes where it stopped; the copy verifies",
        .enabled(if: Host.tool("ss") != nil, "needs ss (iproute2) to reset a connection"))
    func cutDuringDisksResumes() throws {
        let pair = try AgentPair("kt", ownStorage: true)
        let (_, copy) = try Self.stoppedGuestWithData(pair)
        let started = try Cold.startCold(pair, "g1", options: Self.slowDisk)
        try Self.waitForPhase(pair, started.id, "disks")
        usleep(1_500_000)
        // The destination agent's listening ports other than its API: the disk-move receiver.
        let ss = try #require(Host.tool("ss"))
        let listening = try Host.run([ss, "-ltnpH"])
        let ports = listening.split(separator: "\n").filter { $0.contains("pid=\(pair.destination.pid),") }
            .compactMap { line in line.split(separator: " ", omittingEmptySubsequences: true).dropFirst(3).first }
            .compactMap { $0.split(separator: ":").last.flatMap { UInt16($0) } }
            .filter { $0 != pair.destination.port }
        let port = try #require(ports.first, "no receiver listening: \(listening)")
        _ = try Host.run([ss, "-K", "dst", "127.0.0.1", "dport", "=", ":\(port)"])
        let ended = try Cold.follow(pair, started.id, guest: "g1", timeout: 60)
        print("cut during the disk move: \(ended.json)")
        #expect(ended.status == .completed, "\(ended.json)")
        let file = try #require(ended.files?.first)
        #expect(file.resumes >= 1, "\(file)")
        #expect(file.wireBytes < UInt64(file.allocatedBytes) + UInt64(file.allocatedBytes) / 4, "\(file)")
        let disk = try #require(try pair.destination.view("g1").specification.disks.first?.path)
        #expect(try Cold.same(copy, disk), "the disks differ")
    }

    @Test("the source agent killed during the disk move: restarted, it keeps the guest and the destination forgets it")
    func sourceKilledDuringDisks() throws {
        let pair = try AgentPair("ks", ownStorage: true)
        let (view, copy) = try Self.stoppedGuestWithData(pair)
        let started = try Cold.startCold(pair, "g1", options: Self.slowDisk)
        try Self.waitForPhase(pair, started.id, "disks")
        usleep(1_200_000)
        pair.source.kill9()
        usleep(300_000)
        try pair.source.start(port: pair.source.port)
        let ended = try Cold.follow(pair, started.id, guest: "g1", timeout: 60)
        print("source killed during the disk move: \(ended.json)")
        #expect(ended.status == .failed && ended.guestLocation == "source", "\(ended.json)")
        #expect(try pair.source.waitFor("g1", state: "stopped").state == "stopped")
        // The destination forgets it: no row, no file, no partial copy.
        try Self.expectDestinationForgets(pair)
        #expect(try Cold.same(copy, try #require(view.specification.disks.first?.path)))
        #expect(try Cold.post(pair.source, "/v1/guests/g1/start").status == 200)
    }

    @Test("a source that never comes back: the destination forgets the arrival after --incoming-reservation of silence")
    func silentSourceExpires() throws {
        let pair = try AgentPair("ke", destinationExtra: ["--incoming-reservation", "2"], ownStorage: true)
        _ = try Self.stoppedGuestWithData(pair)
        let started = try Cold.startCold(pair, "g1", options: Self.slowDisk)
        try Self.waitForPhase(pair, started.id, "disks")
        usleep(800_000)
        pair.source.kill9()
        let killed = Date()
        // Its receiver holds the partial copy for the resume window (2 s here), then 2 s of silence.
        let deadline = Date().addingTimeInterval(20)
        while try !pair.destination.list().isEmpty, Date() < deadline { usleep(100_000) }
        let waited = Date().timeIntervalSince(killed)
        print("cold arrival forgotten \(String(format: "%.1f", waited)) s after its source was killed")
        #expect(try pair.destination.list().isEmpty && waited > 2)
        let status = try pair.destination.client().send("GET", "/v1/migrations/incoming/\(started.id)")
        #expect(String(decoding: status.body, as: UTF8.self).contains("abandoned"))
        let leftovers =
            (try? FileManager.default.contentsOfDirectory(atPath: pair.destination.stateDirectory + "/disks")) ?? []
        #expect(leftovers.isEmpty, "\(leftovers)")
        // The source, back, hears it and keeps its guest.
        try pair.source.start(port: pair.source.port)
        let ended = try Cold.follow(pair, started.id, guest: "g1")
        #expect(ended.status == .failed && ended.guestLocation == "source", "\(ended.json)")
        #expect(try pair.source.waitFor("g1", state: "stopped").state == "stopped")
    }

    @Test("a bit flipped in the destination's copy during a move back fails verification; nothing changes hands")
    func flippedBitOnTheWayBack() throws {
        let pair = try AgentPair("kf", ownStorage: true)
        pair.source.kill9()
        try pair.source.start(prefix: AgentPair.hiding(pair.destination.stateDirectory), port: pair.source.port)
        let (view, _) = try Self.stoppedGuestWithData(pair)
        let kept = try #require(view.specification.disks.first?.path)
        let there = try Cold.startCold(pair, "g1", options: ["keep_source": true])
        #expect(try Cold.follow(pair, there.id, guest: "g1").status == .completed)
        #expect(try Cold.post(pair.destination, "/v1/guests/g1/start").status == 200)
        usleep(1_500_000)  // its journal changes blocks there: the way back has some to send
        #expect(try Cold.post(pair.destination, "/v1/guests/g1/stop").status == 200)
        let keptBefore = pair.source.scratch.file("kept-before.raw")
        try FileManager.default.copyItem(atPath: kept, toPath: keptBefore)

        // Back, slowly, onto the kept copy; meanwhile one bit of the copy being written flips
        // (storage going bad under the move) in a block the source does not resend.
        let body =
            #"{"guest":"g1","to":"\#(pair.source.url)","kind":"cold","options":{"max_bandwidth_bytes_per_s":200000}}"#
        let posted = try pair.destination.client().send("POST", "/v1/migrations", body: Array(body.utf8))
        try #require(posted.status == 201, "\(String(decoding: posted.body, as: UTF8.self))")
        let back = try MigrationResource.decode(String(decoding: posted.body, as: UTF8.self))
        let partial = kept + ".partial"
        let deadline = Date().addingTimeInterval(20)
        while !FileManager.default.fileExists(atPath: partial), Date() < deadline { usleep(2_000) }
        usleep(600_000)  // after the copy from the kept file and its hashes, while blocks arrive
        let handle = try #require(FileHandle(forUpdatingAtPath: partial), "no partial copy at \(partial)")
        try handle.seek(toOffset: (40 << 20) + 12_345)
        let byte = try #require(try handle.read(upToCount: 1)?.first)
        try handle.seek(toOffset: (40 << 20) + 12_345)
        try handle.write(contentsOf: Data([byte ^ 0x10]))
        try handle.close()

        var ended = try pair.migration(back.id, on: pair.destination)
        while !ended.status.isFinal, Date() < deadline.addingTimeInterval(40) {
            usleep(50_000)
            ended = try pair.migration(back.id, on: pair.destination)
        }
        print("a bit flipped on the way back: \(ended.error ?? ended.json)")
        #expect(ended.status == .failed && ended.guestLocation == "source", "\(ended.json)")
        #expect(ended.error?.contains("digest") == true, "\(ended.json)")
        // The guest stays where it was registered; the kept copy is as it was; no partial left.
        #expect(try pair.destination.waitFor("g1", state: "stopped").state == "stopped")
        let settle = Date().addingTimeInterval(10)
        while try !pair.source.list().isEmpty, Date() < settle { usleep(50_000) }
        #expect(try pair.source.list().isEmpty)
        #expect(try Cold.same(keptBefore, kept), "the kept copy changed")
        #expect(!FileManager.default.fileExists(atPath: partial))
    }

    @Test("a cancel during the disk move: cancelled, the guest stays, the destination removes its partial copy")
    func cancelDuringDisks() throws {
        let pair = try AgentPair("kc", ownStorage: true)
        _ = try Self.stoppedGuestWithData(pair)
        let started = try Cold.startCold(pair, "g1", options: Self.slowDisk)
        try Self.waitForPhase(pair, started.id, "disks")
        usleep(500_000)
        let cancel = try pair.source.client().send("DELETE", "/v1/migrations/\(started.id)")
        #expect(cancel.status == 202, "\(String(decoding: cancel.body, as: UTF8.self))")
        let ended = try Cold.follow(pair, started.id, guest: "g1")
        #expect(ended.status == .cancelled && ended.guestLocation == "source", "\(ended.json)")
        #expect(try pair.source.view("g1").state == "stopped")
        try Self.expectDestinationForgets(pair)
    }

    @Test(
        "a destination without room refuses in the configuration step, before any byte; the guest stays",
        .enabled(if: Requirement.mount.met, Requirement.mount.why))
    func destinationTooSmall() throws {
        let pair = try AgentPair("kz", ownStorage: true)
        let disks = pair.destination.stateDirectory + "/disks"
        pair.destination.kill9()
        let mount = try #require(Host.tool("mount"))
        guard (try? Host.run([mount, "-t", "tmpfs", "-o", "size=2M", "tmpfs", disks])) != nil else {
            print("skipped: mount -t tmpfs failed here")
            return
        }
        defer { _ = try? Host.run([Host.tool("umount") ?? "/usr/bin/umount", "-l", disks], mustSucceed: false) }
        try pair.destination.start(port: pair.destination.port)
        _ = try Self.stoppedGuestWithData(pair)
        let started = try Cold.startCold(pair, "g1")
        let ended = try Cold.follow(pair, started.id, guest: "g1")
        print("destination without room: \(ended.error ?? "")")
        #expect(ended.status == .failed && ended.guestLocation == "source", "\(ended.json)")
        #expect(ended.error?.contains("bytes free") == true && ended.error?.contains(disks) == true, "\(ended.json)")
        #expect((ended.bytesTransferred ?? 0) == 0 && ended.phasesMs?["disks"] == nil)
        #expect(try pair.source.view("g1").state == "stopped" && pair.destination.list().isEmpty)
    }
}

/// Cold migrations back and forth, each with `kill -9` of the source agent, the destination
/// agent or both at a random moment (every phase gets hit), the killed ones started again:
/// after each, exactly one agent lists the guest, it starts there, and every poll while it
/// settles shows one owner.
@Suite(.serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct AgentColdMigrationChaosTests {
    static let iterations = 15
    static let phases = ["shutdown", "configuration", "disks", "registration", "power_on"]

    /// When to kill, aiming at `phase`: its start plus half its length, from the last completed
    /// migration's `phases_ms` (1 s before there is one), with ±20% jitter.
    static func aim(at phase: String, after last: [String: Double]?, using random: inout SplitMix64) -> UInt32 {
        guard let last else { return UInt32.random(in: 0...1_000_000, using: &random) }
        let before = phases.prefix { $0 != phase }.reduce(0) { $0 + (last[$1] ?? 0) }
        let target = (before + (last[phase] ?? 0) / 2) * Double.random(in: 0.8...1.2, using: &random)
        return UInt32(max(0, target) * 1000)
    }

    @Test func killingAgentsDuringColdMigrationsLosesAndDoublesNothing() throws {
        let seed = UInt64.random(in: 1...UInt64.max)
        print("cold migration chaos: seed \(seed)")
        var random = SplitMix64(seed: seed)
        let pair = try AgentPair("cx", ownStorage: true)
        try AgentColdMigrationTests.guest(pair, "g1")
        let agents = [pair.source, pair.destination]
        var owner = 0
        var phasesHit: [String: Int] = [:]
        var outcomes: [String: Int] = [:]
        var lastPhases: [String: Double]?
        for iteration in 1...Self.iterations {
            let (from, to) = (agents[owner], agents[1 - owner])
            let request =
                #"{"guest":"g1","to":"\#(to.url)","kind":"cold","options":{"max_bandwidth_bytes_per_s":150000}}"#
            let started = try AgentPair.postRetryingBusy(from, "/v1/migrations", body: Array(request.utf8))
            try #require(
                started.status == 201, "iteration \(iteration): \(String(decoding: started.body, as: UTF8.self))")
            let id = try MigrationResource.decode(String(decoding: started.body, as: UTF8.self)).id
            let aimed = Self.phases[(iteration - 1) % Self.phases.count]
            usleep(Self.aim(at: aimed, after: lastPhases, using: &random))
            let phase =
                (try? MigrationResource.decode(
                    String(decoding: try from.client().send("GET", "/v1/migrations/\(id)").body, as: UTF8.self)))?.phase
                ?? "?"
            let victims = [[from], [to], [from, to]].randomElement(using: &random)!
            phasesHit[
                "\(phase) (\(victims.count == 2 ? "both" : victims[0] === from ? "source" : "destination"))", default: 0
            ] += 1
            for agent in victims { agent.kill9() }
            usleep(UInt32.random(in: 0...300_000, using: &random))
            for agent in victims { try agent.start(port: agent.port) }

            let deadline = Date().addingTimeInterval(60)
            var final: MigrationResource?
            while Date() < deadline {
                if let seen = try? Self.owners(from, to) {
                    #expect(seen.ok, "iteration \(iteration) settling (killed at \(phase)): \(seen.text)")
                    if let ended = try? MigrationResource.decode(
                        String(decoding: try from.client().send("GET", "/v1/migrations/\(id)").body, as: UTF8.self)),
                        ended.status.isFinal, !seen.moving
                    {
                        final = ended
                        break
                    }
                }
                usleep(50_000)
            }
            let ended = try #require(final, "iteration \(iteration) (killed at \(phase)) did not settle")
            outcomes[ended.status.rawValue, default: 0] += 1
            if ended.status == .completed, ended.phasesMs?.count == Self.phases.count { lastPhases = ended.phasesMs }
            let seen = try Self.owners(from, to)
            try #require(seen.ok && seen.listed == 1, "iteration \(iteration) (killed at \(phase)): \(seen.text)")
            owner = seen.onSource ? owner : 1 - owner
            // It starts where it is registered (or runs there already).
            let home = agents[owner]
            // A power-on the killed source asked for may still be running there: wait it out.
            var state = try home.view("g1").state
            if state == "starting" { state = try home.waitFor("g1", state: "running").state }
            if state != "running" {
                let start = try home.client().send("POST", "/v1/guests/g1/\(state == "suspended" ? "resume" : "start")")
                try #require(
                    start.status == 200,
                    "iteration \(iteration): \(state): \(String(decoding: start.body, as: UTF8.self))")
            }
            _ = try home.waitFor("g1", state: "running")
        }
        print(
            "cold migration chaos: \(Self.iterations) migrations; killed at \(phasesHit.sorted { $0.key < $1.key }); outcomes \(outcomes)"
        )
    }

    /// Both agents' rows of g1: one owner (never both settled, never neither listed).
    static func owners(_ from: GuestAgentFixture, _ to: GuestAgentFixture) throws -> (
        ok: Bool, listed: Int, moving: Bool, onSource: Bool, text: String
    ) {
        let here = try from.list().first { $0.specification.name.value == "g1" }?.state
        let there = try to.list().first { $0.specification.name.value == "g1" }?.state
        let settled = { (state: String?) in state.map { !$0.hasPrefix("migrating") } ?? false }
        let moving = [here, there].contains { $0?.hasPrefix("migrating") == true }
        return (
            (here != nil || there != nil) && !(settled(here) && settled(there)), [here, there].compactMap { $0 }.count,
            moving, here != nil, "source \(here ?? "-"), destination \(there ?? "-")"
        )
    }
}
