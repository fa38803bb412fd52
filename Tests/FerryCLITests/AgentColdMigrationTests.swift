import FerryAgent
import FerryHostModel
import FerryInventory
import FerrySystem
import FerryTestSupport
import Foundation
import Glibc
import Testing

/// Cold migration between two `ferry agent` processes (issue 15, docs/cold-migration.md): the
/// five phases, the disk move, the registration as the one switch of owner, and the faults.
@Suite(
    "cold migration between two ferry agents", .serialized,
    .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct AgentColdMigrationTests {
    /// Defines a built-in guest with one 64 MiB disk at the agent's default path (each agent's
    /// own `disks/`: not shared), or at `path`; starts it unless told not to.
    @discardableResult
    static func guest(
        _ pair: AgentPair, _ name: String, path: String? = nil, stop: Bool = false, memoryMiB: Int = 32
    ) throws -> GuestView {
        var disk: [String: Any] = ["name": "d", "size_bytes": 64 << 20]
        if let path { disk["path"] = path }
        let body: [String: Any] = [
            "name": name, "kind": "builtin", "vcpus": 1, "memory_bytes": memoryMiB << 20, "seed": 7,
            "workload": "idle", "disks": [disk],
        ]
        let client = try pair.source.client()
        let created = try client.send(
            "POST", "/v1/guests", body: Array(try JSONSerialization.data(withJSONObject: body)))
        try #require(created.status == 201, "create: \(String(decoding: created.body, as: UTF8.self))")
        let started = try client.send("POST", "/v1/guests/\(name)/start")
        try #require(started.status == 200, "start: \(String(decoding: started.body, as: UTF8.self))")
        if stop {
            usleep(300_000)  // a few journal records on the disk
            let stopped = try client.send("POST", "/v1/guests/\(name)/stop")
            try #require(stopped.status == 200, "stop: \(String(decoding: stopped.body, as: UTF8.self))")
        }
        return try pair.source.view(name)
    }

    static func post(_ agent: GuestAgentFixture, _ target: String, _ body: [String: Any] = [:]) throws -> AgentResponse
    {
        try agent.client().send(
            "POST", target, body: body.isEmpty ? [] : Array(try JSONSerialization.data(withJSONObject: body)))
    }

    /// `POST /v1/migrations {kind: cold}` on the source; the migration as it started.
    static func startCold(_ pair: AgentPair, _ guest: String, options: [String: Any] = [:]) throws -> MigrationResource
    {
        var body: [String: Any] = ["guest": guest, "to": pair.destination.url, "kind": "cold"]
        if !options.isEmpty { body["options"] = options }
        let response = try post(pair.source, "/v1/migrations", body)
        try #require(response.status == 201, "\(String(decoding: response.body, as: UTF8.self))")
        return try MigrationResource.decode(String(decoding: response.body, as: UTF8.self))
    }

    /// One owner: never both agents in a settled state (not `migrating-*`), never neither listing
    /// the guest. An agent that does not answer (killed) is skipped.
    static func oneOwner(_ pair: AgentPair, _ guest: String) -> (ok: Bool, seen: String)? {
        guard let here = try? pair.source.list(), let there = try? pair.destination.list() else { return nil }
        let source = here.first { $0.specification.name.value == guest }?.state
        let destination = there.first { $0.specification.name.value == guest }?.state
        let settled = { (state: String?) in state.map { !$0.hasPrefix("migrating") } ?? false }
        let ok = (source != nil || destination != nil) && !(settled(source) && settled(destination))
        return (ok, "source \(source ?? "-"), destination \(destination ?? "-")")
    }

    /// Polls both agents every 20 ms until the migration ends; every poll must show one owner.
    static func follow(_ pair: AgentPair, _ id: String, guest: String, timeout: Double = 60) throws -> MigrationResource
    {
        let deadline = Date().addingTimeInterval(timeout)
        var polls = 0
        while Date() < deadline {
            if let owner = oneOwner(pair, guest) {
                polls += 1
                #expect(owner.ok, "poll \(polls): \(owner.seen)")
            }
            if let current = try? pair.migration(id), current.status.isFinal { return current }
            usleep(20_000)
        }
        Issue.record("cold migration \(id) did not end in \(timeout) s")
        return try pair.migration(id)
    }

    static func same(_ a: String, _ b: String) throws -> Bool {
        guard let left = FileManager.default.contents(atPath: a), let right = FileManager.default.contents(atPath: b)
        else { return false }
        return left == right
    }

    static func allocated(_ path: String) -> Int {
        var info = stat()
        return stat(path, &info) == 0 ? Int(info.st_blocks) * 512 : -1
    }

    @Test("a stopped guest moves: its disk compares equal, holes stay holes, the source keeps nothing; one owner")
    func stoppedGuest() throws {
        let pair = try AgentPair("cs", ownStorage: true)
        let before = try Self.guest(pair, "g1", stop: true)
        let sourceDisk = try #require(before.specification.disks.first?.path)
        let copy = pair.source.scratch.file("before.raw")
        try FileManager.default.copyItem(atPath: sourceDisk, toPath: copy)
        let started = try Self.startCold(pair, "g1")
        #expect(started.kind == "cold")
        let ended = try Self.follow(pair, started.id, guest: "g1")
        print("cold migration of a stopped guest: \(ended.json)")
        #expect(ended.status == .completed && ended.guestLocation == "destination", "\(ended.json)")
        #expect(ended.phasesMs?["shutdown"] == nil && ended.phasesMs?["disks"] != nil, "\(ended.json)")
        #expect(ended.phasesMs?["power_on"] == nil && ended.interruptionMs == nil)
        let file = try #require(ended.files?.first)
        #expect(!file.shared && file.wireBytes > 0 && file.wireBytes < UInt64(file.allocatedBytes) + 4096, "\(file)")

        let arrived = try pair.destination.view("g1")
        #expect(arrived.state == "stopped" && arrived.id == before.id)
        let destinationDisk = try #require(arrived.specification.disks.first?.path)
        #expect(destinationDisk.hasPrefix(pair.destination.stateDirectory + "/disks/"), "\(destinationDisk)")
        #expect(try Self.same(copy, destinationDisk), "the disks differ")
        let (kept, moved) = (Self.allocated(copy), Self.allocated(destinationDisk))
        #expect(Double(moved) <= Double(kept) * 1.05 + 4096, "allocated: source \(kept), destination \(moved)")
        #expect(!FileManager.default.fileExists(atPath: sourceDisk), "\(sourceDisk) left on the source")
        #expect(try pair.source.list().allSatisfy { $0.specification.name.value != "g1" })
        let left = try #require(try AgentPair.journal(pair.source, "g1").last)
        #expect(left.to == nil && left.cause.contains("cold-migrated to \(pair.destination.url)"), "\(left)")
        let registered = try AgentPair.journal(pair.destination, "g1").filter { $0.cause.contains("registered") }
        #expect(registered.count == 1)

        // The registration is keyed by the migration: asked again, it answers the same and
        // registers nothing twice.
        let again = try Self.post(pair.destination, "/v1/migrations/incoming/\(started.id)/register")
        #expect(again.status == 200 && String(decoding: again.body, as: UTF8.self).contains("arrived"))
        #expect(try AgentPair.journal(pair.destination, "g1").filter { $0.cause.contains("registered") }.count == 1)
        // It starts where it is registered.
        #expect(try Self.post(pair.destination, "/v1/guests/g1/start").status == 200)
        #expect(try pair.destination.view("g1").state == "running")
    }

    /// The name held at the destination by an arrival that is ending (a live attempt that
    /// failed just before, torn down when its reservation expires): the destination answers
    /// `busy`, the source asks again, and the cold move goes through once the name is free.
    @Test("a cold move that finds the destination still ending an earlier arrival of the guest waits for it")
    func waitsForAnEndingArrival() throws {
        let pair = try AgentPair("cb", destinationExtra: ["--incoming-reservation", "2"], ownStorage: true)
        let before = try Self.guest(pair, "g1", stop: true)
        let held = try AgentMigrationWindowTests.reserve(
            on: pair.destination, "g1", migration: "m-held", id: before.id)
        let started = try Self.startCold(pair, "g1")
        let ended = try Self.follow(pair, started.id, guest: "g1")
        #expect(ended.status == .completed && ended.guestLocation == "destination", "\(ended.json)")
        let waited = Date().timeIntervalSince(held.reservation.expiresAt)
        #expect(waited > -0.5, "the move ended \(-waited) s before the held name was released")
        #expect(try pair.destination.view("g1").state == "stopped")
        #expect(try pair.destination.client().incomingStatus(migrationID: "m-held").state == .abandoned)
        print("cold move behind an ending arrival: ended \(String(format: "%.2f", waited)) s after its expiry")
    }

    @Test(
        "a running guest shuts down, moves and boots from its disk there; the report has every step and the interruption"
    )
    func runningGuest() throws {
        let pair = try AgentPair("cr", ownStorage: true)
        try Self.guest(pair, "g1")
        usleep(800_000)
        let started = try Self.startCold(pair, "g1")
        let ended = try Self.follow(pair, started.id, guest: "g1")
        print("cold migration of a running guest: \(ended.json)")
        #expect(ended.status == .completed && ended.error == nil, "\(ended.json)")
        for phase in ["shutdown", "configuration", "disks", "registration", "power_on"] {
            #expect(ended.phasesMs?[phase] != nil, "no \(phase) in \(ended.json)")
        }
        let interruption = try #require(ended.interruptionMs)
        #expect(interruption < 3000 && interruption >= (ended.phasesMs?["disks"] ?? 0))
        // The journal continues: the guest resumed from its disk after a clean shutdown.
        let line = try #require(ended.resumedLine)
        #expect(line.contains("disk: resumed at record") && line.contains("clean shutdown: yes"), "\(line)")
        #expect(!line.contains("record 0 "), "\(line)")
        #expect(try pair.destination.view("g1").state == "running")
        #expect(try pair.source.list().isEmpty)
    }

    @Test(
        "a running KVM guest with a disk moves cold and boots from its disk there; its journal continues",
        .enabled(if: Requirement.kvm.met, Requirement.kvm.why))
    func kvmGuest() throws {
        let pair = try AgentPair("cv", ownStorage: true)
        let spec =
            #"{"name":"k1","kind":"kvm","vcpus":1,"memory_bytes":67108864,"seed":7,"workload":"kvm:20MB/s,interval=50000","disks":[{"name":"root","size_bytes":4194304}]}"#
        let client = try pair.source.client()
        let created = try client.send("POST", "/v1/guests", body: Array(spec.utf8))
        try #require(created.status == 201, "\(String(decoding: created.body, as: UTF8.self))")
        try #require(try client.send("POST", "/v1/guests/k1/start").status == 200)
        usleep(1_500_000)
        let started = try Self.startCold(pair, "k1", options: ["shutdown_timeout_s": 20])
        let ended = try Self.follow(pair, started.id, guest: "k1", timeout: 90)
        print("cold migration of a KVM guest: \(ended.json)")
        #expect(ended.status == .completed && ended.error == nil, "\(ended.json)")
        let line = try #require(ended.resumedLine, "\(ended.json)")
        #expect(line.contains("disk: resumed at record"), "\(line)")
        #expect(!(ended.files?.first?.shared ?? true) && (ended.files?.first?.wireBytes ?? 0) > 0)
        #expect(try pair.destination.view("k1").state == "running")
        #expect(try pair.source.list().isEmpty)
    }

    @Test("a suspended guest's memory and state move too, and it resumes there instead of booting")
    func suspendedGuest() throws {
        let pair = try AgentPair("cp", ownStorage: true)
        let before = try Self.guest(pair, "g1")
        usleep(300_000)
        #expect(try Self.post(pair.source, "/v1/guests/g1/suspend").status == 200)
        let started = try Self.startCold(pair, "g1")
        let ended = try Self.follow(pair, started.id, guest: "g1")
        #expect(ended.status == .completed && ended.error == nil, "\(ended.json)")
        let names = Set((ended.files ?? []).filter { !$0.shared }.map(\.name))
        #expect(names.isSuperset(of: ["memory", "suspend"]), "\(ended.json)")
        let arrived = try pair.destination.waitFor("g1", state: "running")
        #expect(arrived.state == "running" && arrived.id == before.id)
        // Its disk is this host's copy, and its device state was pointed at it (the guest runs on
        // writing its journal there).
        let disk = try #require(arrived.specification.disks.first?.path)
        #expect(disk.hasPrefix(pair.destination.stateDirectory + "/disks/"), "\(disk)")
        let journal = try AgentPair.journal(pair.destination, "g1").map(\.cause)
        #expect(journal.contains { $0.contains("restoring the suspended guest") }, "\(journal)")
        #expect(!FileManager.default.fileExists(atPath: "\(pair.source.guestsDirectory)/\(before.id).suspend"))
    }

    @Test("a disk both agents see is proved shared by its claim token and not copied")
    func sharedDisk() throws {
        let pair = try AgentPair("cd")
        let path = "\(pair.shared)/g1.d.raw"
        try Self.guest(pair, "g1", path: path, stop: true)
        let started = try Self.startCold(pair, "g1")
        let ended = try Self.follow(pair, started.id, guest: "g1")
        #expect(ended.status == .completed, "\(ended.json)")
        let file = try #require(ended.files?.first)
        #expect(file.shared && file.wireBytes == 0, "\(file)")
        #expect(try pair.destination.view("g1").specification.disks.first?.path == path)
        #expect(FileManager.default.fileExists(atPath: path), "the shared disk was removed")
        #expect(ExtendedAttribute.get(path: path, name: "user.ferry.claim") == nil, "the claim token was left")
    }

    @Test("revert after keep_source: the guest moves back onto the kept copy, only the blocks that differ cross")
    func revertMovesOnlyWhatDiffers() throws {
        let pair = try AgentPair("cb", ownStorage: true)
        // The source must not see the destination's files either (the way back is a move too).
        pair.source.kill9()
        try pair.source.start(prefix: AgentPair.hiding(pair.destination.stateDirectory), port: pair.source.port)
        let (before, _) = try AgentColdMigrationFaultTests.stoppedGuestWithData(pair)
        let sourceDisk = try #require(before.specification.disks.first?.path)
        let there = try Self.startCold(pair, "g1", options: ["keep_source": true])
        let away = try Self.follow(pair, there.id, guest: "g1")
        #expect(away.status == .completed && away.retained == [sourceDisk], "\(away.json)")
        // It runs a while on the destination: its journal writes a few blocks there.
        #expect(try Self.post(pair.destination, "/v1/guests/g1/start").status == 200)
        usleep(400_000)
        #expect(try Self.post(pair.destination, "/v1/guests/g1/stop").status == 200)
        let destinationDisk = try #require(try pair.destination.view("g1").specification.disks.first?.path)
        let expected = pair.source.scratch.file("expected.raw")
        try FileManager.default.copyItem(atPath: destinationDisk, toPath: expected)

        let revert = try Self.post(pair.source, "/v1/migrations/\(there.id)/revert")
        try #require(revert.status == 202, "\(String(decoding: revert.body, as: UTF8.self))")
        let back = try MigrationResource.decode(String(decoding: revert.body, as: UTF8.self))
        let deadline = Date().addingTimeInterval(60)
        var ended = try pair.migration(back.id, on: pair.destination)
        while !ended.status.isFinal, Date() < deadline {
            usleep(50_000)
            ended = try pair.migration(back.id, on: pair.destination)
        }
        print("revert: \(ended.json)")
        #expect(ended.status == .completed, "\(ended.json)")
        let file = try #require(ended.files?.first)
        let full = away.files?.first?.wireBytes ?? 0
        print("revert: \(file.wireBytes) bytes on the wire back, \(full) the way there")
        #expect(!file.shared && file.wireBytes < full / 8, "back \(file.wireBytes), there \(full)")
        let home = try pair.source.view("g1")
        #expect(home.state == "stopped" && home.specification.disks.first?.path == sourceDisk)
        #expect(try Self.same(expected, sourceDisk), "the disk back differs from the destination's")
        // The kept copy is the guest's disk again: confirming the old migration removes nothing.
        #expect(try pair.migration(there.id).retained == [])
        #expect(try Self.post(pair.source, "/v1/migrations/\(there.id)/confirm").status == 200)
        #expect(FileManager.default.fileExists(atPath: sourceDisk))
    }

    @Test("keep_source keeps the source's files until confirm")
    func keepSourceUntilConfirm() throws {
        let pair = try AgentPair("ck", ownStorage: true)
        let before = try Self.guest(pair, "g1", stop: true)
        let sourceDisk = try #require(before.specification.disks.first?.path)
        let started = try Self.startCold(pair, "g1", options: ["keep_source": true])
        let ended = try Self.follow(pair, started.id, guest: "g1")
        #expect(ended.status == .completed && ended.retained == [sourceDisk], "\(ended.json)")
        #expect(FileManager.default.fileExists(atPath: sourceDisk))
        #expect(try pair.source.list().isEmpty)
        let confirm = try Self.post(pair.source, "/v1/migrations/\(started.id)/confirm")
        #expect(confirm.status == 200)
        #expect(!FileManager.default.fileExists(atPath: sourceDisk))
    }
}
