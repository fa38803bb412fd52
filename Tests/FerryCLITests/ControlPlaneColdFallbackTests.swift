import FerryAgent
import FerryTestSupport
import Foundation
import Glibc
import Testing

/// The drain's cold fallback (issue 18, part 1) on a real `ferry control` and three agents, each
/// in a network namespace of its own: a guest whose live migration cannot end (capped at 100 KB/s
/// by the drain, cancelled at `--move-timeout`) moves cold when its policy is `live_then_cold`
/// (the host ends drained, the guest runs elsewhere from its disk, which is intact: 1 MiB of random bytes written into it), and stays,
/// failed with both reasons, when it is `live_only`; the destination's agent killed with -9
/// during a cold move that copies the disk leaves the guest on its source, running, in one place.
@Suite(
    .serialized, .tags(.namespaces), .skippable(.namespaces),
    .enabled(if: FerryProcess.built.met, FerryProcess.built.why),
    .enabled(if: Requirement.namespaces.met, Requirement.namespaces.why))
struct ControlPlaneColdFallbackTests {
    typealias Drain = ControlPlaneDrainTests

    static func cloud(_ name: String, controllerExtra: [String], ownStorage: Bool = false) throws
        -> ControlPlaneFixture
    {
        try ControlPlaneFixture(
            name, agents: 3, namespaced: true, controllerExtra: ["--policy", "pack"] + controllerExtra,
            agentOptions: [
                1: ["--migration-listen", "10.93.0.2:0", "--incoming-reservation", "5"],
                2: ["--migration-listen", "10.93.0.3:0", "--incoming-reservation", "5"],
                3: ["--migration-listen", "10.93.0.4:0", "--incoming-reservation", "5"],
            ], ownStorage: ownStorage)
    }

    /// A running built-in guest of `policy` (on h1: the `pack` policy fills it first): its ID.
    static func guest(_ cloud: ControlPlaneFixture, _ name: String, policy: String) throws -> String {
        let body: [String: Any] = ["name": name, "flavor": "tiny", "image": "builtin", "migration_policy": policy]
        let (status, created) = try cloud.json("POST", "/v1/projects/alpha/guests", body)
        try #require(status == 202 && created["migration_policy"] as? String == policy, "\(created)")
        let id = try #require(created["id"] as? String)
        let running = try cloud.waitForGuest(id, timeout: 60) { ["running", "error"].contains($0) }
        try #require(running["state"] as? String == "running" && running["host"] as? String == "h1", "\(running)")
        return id
    }

    /// `length` bytes at `offset` of the guest's disk, as `host`'s agent holds it.
    static func data(_ cloud: ControlPlaneFixture, _ host: String, _ id: String, at offset: UInt64, length: Int)
        throws -> Data
    {
        let path = try #require(try ControlPlaneMoveTests.view(cloud, host, id).specification.disks.first?.path)
        let file = try #require(FileHandle(forReadingAtPath: path), "\(path)")
        defer { try? file.close() }
        try file.seek(toOffset: offset)
        return file.readData(ofLength: length)
    }

    /// Writes 1 MiB of random bytes at 1 MiB of the guest's disk on `host` (a hole the guest does
    /// not use: its journal is at the start): data that does not compress, for a disk move that
    /// takes a while.
    static func scribble(_ cloud: ControlPlaneFixture, _ host: String, _ id: String) throws -> Data {
        let path = try #require(try ControlPlaneMoveTests.view(cloud, host, id).specification.disks.first?.path)
        var generator = SplitMix64(seed: 18)
        let bytes = Data((0..<(1 << 20)).map { _ in UInt8(truncatingIfNeeded: generator.next()) })
        let file = try #require(FileHandle(forWritingAtPath: path), "\(path)")
        defer { try? file.close() }
        try file.seek(toOffset: 1 << 20)
        file.write(bytes)
        try file.synchronize()
        return bytes
    }

    /// The source's cold migrations of the guest (h1's agent).
    static func coldMigrations(_ cloud: ControlPlaneFixture, _ id: String) throws -> [MigrationResource] {
        let body = try ControlPlaneMoveTests.onHost(cloud, "h1") { client in
            try client.checked(try client.send("GET", "/v1/migrations")).body
        }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(MigrationList.self, from: Data(body)).migrations.filter {
            $0.kind == "cold" && $0.guest == "c-\(id)"
        }
    }

    static var capped: [String: Any] { ["max_bandwidth_bytes_per_s": 100_000] }

    @Test func aGuestThatCannotGoLiveMovesColdAsItsPolicyAllows() throws {
        let cloud = try Self.cloud("cpc1", controllerExtra: ["--move-timeout", "1"])
        let running = try Self.guest(cloud, "g0", policy: "live_then_cold")
        let stopped = try Self.guest(cloud, "g1", policy: "live_then_cold")
        _ = try cloud.json("POST", "/v1/guests/\(stopped)/stop")
        _ = try cloud.waitForGuest(stopped) { $0 == "stopped" }
        let random = try Self.scribble(cloud, "h1", running)

        let (status, started) = try cloud.json("POST", "/v1/hosts/h1/drain", Self.capped)
        try #require(status == 202, "\(started)")
        let end = try #require(try Drain.follow(cloud, "h1", timeout: 180).last)
        #expect(end["phase"] as? String == "drained", "\(end)")
        #expect(Drain.names(end, "moved_cold") == [running, stopped].sorted(), "\(end)")
        #expect(Drain.names(end, "failed").isEmpty && Drain.names(end, "moved").isEmpty, "\(end)")
        let cold = end["moved_cold"] as? [[String: Any]] ?? []
        let entry = try #require(cold.first { $0["id"] as? String == running })
        let reason = entry["reason"] as? String ?? ""
        #expect(reason.hasPrefix("live: migration ") && reason.contains("cancelled"), "\(entry)")
        let interruption = try #require(entry["downtime_ms"] as? Double, "\(entry)")
        #expect(interruption > 0 && end["cold_downtime_ms"] as? Double == interruption, "\(end)")
        #expect(Self.drained(try Drain.host(cloud, "h1")), "the host ends drained")

        let guest = try cloud.json("GET", "/v1/guests/\(running)").1
        let host = try #require(guest["host"] as? String)
        #expect(host != "h1" && guest["state"] as? String == "running" && guest["moving_to"] == nil, "\(guest)")
        #expect(try ControlPlaneMoveTests.view(cloud, host, running).state == "running")
        let other = try cloud.json("GET", "/v1/guests/\(stopped)").1
        #expect(other["host"] as? String != "h1" && other["state"] as? String == "stopped", "\(other)")
        #expect(try cloud.guestsOnHosts().sorted() == ["c-\(running)", "c-\(stopped)"].sorted(), "one place each")
        let causes = try ControlPlaneKVMTests.journal(cloud, running).compactMap { $0["cause"] as? String }
        #expect(causes.contains { $0.contains("(drain: cold fallback after migration ") }, "\(causes)")
        #expect(causes.last?.hasPrefix("moved from h1 to \(host) (host h1: cold migration ") == true, "\(causes)")

        // Its disk is intact: the random MiB written into it, and its journal went on after a
        // clean shutdown (the first line the guest wrote on its new host).
        #expect(try Self.data(cloud, host, running, at: 1 << 20, length: 1 << 20) == random, "the random MiB")
        let migration = try #require(try Self.coldMigrations(cloud, running).last { $0.status == .completed })
        #expect(migration.status == .completed, "\(migration)")
        let line = migration.resumedLine ?? ""
        #expect(line.hasPrefix("disk: resumed at record") && line.contains("clean shutdown: yes"), "\(line)")
        let seconds = entry["seconds"] as? Double ?? 0
        print(
            "cold fallback: g0's live migration cancelled at --move-timeout 1 s, then moved cold to \(host):"
                + " \(String(format: "%.1f", seconds)) s in all, cold migration \(Int(migration.totalTimeMs ?? 0)) ms"
                + " (phases \(migration.phasesMs ?? [:])), interruption \(Int(interruption)) ms; \(line)")
    }

    @Test func aLiveOnlyGuestThatCannotGoLiveStaysNamingBothReasons() throws {
        let cloud = try Self.cloud("cpc2", controllerExtra: ["--move-timeout", "1"])
        let id = try Self.guest(cloud, "g0", policy: "live_only")
        _ = try cloud.json("POST", "/v1/hosts/h1/drain", Self.capped)
        let end = try #require(try Drain.follow(cloud, "h1", timeout: 120).last)
        #expect(end["phase"] as? String == "incomplete", "\(end)")
        #expect(Drain.names(end, "failed") == [id] && Drain.names(end, "moved_cold").isEmpty, "\(end)")
        let failed = (end["failed"] as? [[String: Any]])?.first?["reason"] as? String ?? ""
        #expect(failed.contains("its live migration to host") && failed.contains("cancelled"), "\(failed)")
        #expect(failed.hasSuffix("; policy live_only forbids a cold move"), "\(failed)")
        let guest = try cloud.json("GET", "/v1/guests/\(id)").1
        #expect(guest["host"] as? String == "h1" && guest["moving_to"] == nil, "\(guest)")
        #expect(guest["state"] as? String == "running", "\(guest)")
        #expect(try ControlPlaneMoveTests.view(cloud, "h1", id).state == "running")
        #expect(try Drain.host(cloud, "h1")["mode"] as? String == "draining")
        // The destination's reservation for the cancelled live migration goes: one place.
        let gone = Date().addingTimeInterval(30)
        while Date() < gone, try cloud.guestsOnHosts() != ["c-\(id)"] { usleep(200_000) }
        #expect(try cloud.guestsOnHosts() == ["c-\(id)"])
        #expect(try Self.coldMigrations(cloud, id).isEmpty, "no cold migration was tried")

        // Its policy changed (by the project's member: the cluster key here), a new drain moves it cold.
        let (changed, view) = try cloud.json("POST", "/v1/guests/\(id)/policy", ["migration_policy": "live_then_cold"])
        #expect(changed == 200 && view["migration_policy"] as? String == "live_then_cold", "\(view)")
        _ = try cloud.json("POST", "/v1/hosts/h1/drain", Self.capped)
        let again = try #require(try Drain.follow(cloud, "h1", timeout: 180).last)
        #expect(again["phase"] as? String == "drained" && Drain.names(again, "moved_cold") == [id], "\(again)")
    }

    /// Each agent's storage its own: the live migration cannot reach h1's disk (and is capped
    /// past `--move-timeout` anyway), so the guest moves cold and its disk (1 MiB of random bytes
    /// written into it) is copied at 200 KB/s; the destination's agent is killed with -9 while
    /// the disk moves. The controller cancels the cold move at `--cold-move-timeout` (honoured
    /// before the registration), the source's agent puts the guest back as it was (started
    /// again): it runs on h1, recorded there, in one place; the destination started again
    /// forgets its half arrival. A second drain then moves it cold for real: the disk copied, byte
    /// for byte.
    @Test func aDestinationKilledDuringTheColdMoveLeavesTheGuestOnItsSource() throws {
        let cloud = try Self.cloud(
            "cpc3", controllerExtra: ["--move-timeout", "2", "--cold-move-timeout", "8"], ownStorage: true)
        let id = try Self.guest(cloud, "g0", policy: "live_then_cold")
        let random = try Self.scribble(cloud, "h1", id)
        _ = try cloud.json("POST", "/v1/hosts/h1/drain", ["max_bandwidth_bytes_per_s": 200_000])
        let victimHost = try Self.waitForDisks(cloud, id)
        let victim = cloud.agents[Int(victimHost.dropFirst())! - 1]
        victim.kill9()
        let killed = Date()

        let end = try #require(try Drain.follow(cloud, "h1", timeout: 120).last)
        #expect(end["phase"] as? String == "incomplete", "\(end)")
        #expect(Drain.names(end, "failed") == [id], "\(end)")
        let reason = (end["failed"] as? [[String: Any]])?.first?["reason"] as? String ?? ""
        #expect(reason.contains("then its cold move failed") && reason.contains("cold migration"), "\(reason)")
        let guest = try ControlPlaneMoveTests.waitUntilSettled(cloud, id, timeout: 60)
        #expect(guest["host"] as? String == "h1" && guest["moving_to"] == nil, "\(guest)")
        #expect(guest["state"] as? String == "running", "\(guest)")
        let source = try ControlPlaneMoveTests.view(cloud, "h1", id).state
        #expect(source == "running", "h1's agent says \(source)")
        let migration = try #require(try Self.coldMigrations(cloud, id).last)
        #expect(migration.status == .cancelled && migration.guestLocation == "source", "\(migration)")
        print(
            "cold fallback, destination \(victimHost) killed in the disks phase: the guest back on h1"
                + " \(String(format: "%.1f", Date().timeIntervalSince(killed))) s later: \(migration.error ?? "")")

        // The destination back: its half arrival expires (--incoming-reservation 5); one place.
        try victim.start()
        let expired = Date().addingTimeInterval(40)
        while Date() < expired, try cloud.guestsOnHosts() != ["c-\(id)"] { usleep(200_000) }
        let held = try Drain.holdings(cloud)
        #expect(held == ["h1: c-\(id) running"], "\(held)")

        // Drained again, uncapped: the disk is copied and arrives whole.
        _ = try cloud.json("POST", "/v1/hosts/h1/drain")
        let again = try #require(try Drain.follow(cloud, "h1", timeout: 180).last)
        #expect(again["phase"] as? String == "drained" && Drain.names(again, "moved_cold") == [id], "\(again)")
        let host = try #require(try cloud.json("GET", "/v1/guests/\(id)").1["host"] as? String)
        #expect(try Self.data(cloud, host, id, at: 1 << 20, length: 1 << 20) == random, "the random MiB")
        let moved = try #require(try Self.coldMigrations(cloud, id).last { $0.status == .completed })
        let wire = moved.files?.reduce(UInt64(0)) { $0 + $1.wireBytes } ?? 0
        #expect(moved.files?.first?.shared == false && wire >= 1 << 20, "\(String(describing: moved.files))")
        print(
            "cold fallback with the disk copied: \(wire) bytes on the wire, cold migration"
                + " \(Int(moved.totalTimeMs ?? 0)) ms, interruption \(Int(moved.interruptionMs ?? 0)) ms")
    }

    /// Waits until the guest's cold move out of h1 copies its disk: the host it goes to.
    static func waitForDisks(_ cloud: ControlPlaneFixture, _ id: String) throws -> String {
        var phase = ""
        let deadline = Date().addingTimeInterval(90)
        while Date() < deadline {
            let migration = try Self.coldMigrations(cloud, id).last
            phase = migration?.phase ?? ""
            if phase == "disks", let destination = try cloud.json("GET", "/v1/guests/\(id)").1["moving_to"] as? String {
                return destination
            }
            if migration?.status.isFinal == true { break }
            usleep(20_000)
        }
        Issue.record("the cold move never reached its disks (phase \(phase))")
        throw CancellationError()
    }

    static func drained(_ host: [String: Any]) -> Bool {
        host["mode"] as? String == "drained" && host["used_memory_bytes"] as? Int == 0
    }
}
