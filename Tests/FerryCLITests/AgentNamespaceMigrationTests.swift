import FerryAgent
import FerryGuest
import FerryTestSupport
import FerryTransport
import Foundation
import Glibc
import Testing

/// Issue 14's acceptance: two hosts (network namespaces joined by a bridge), an agent in each, a
/// KVM guest with a disk on storage both see, live-migrated through the source agent's API. The
/// console continues on the destination, the journal on the disk continues with no new boot, and
/// at every poll of both inventories exactly one agent owns the guest.
@Suite(
    "two agents in two network namespaces: a KVM guest with a disk migrates through the API", .serialized,
    .tags(.namespaces, .kvm), .skippable(.namespaces), .skippable(.kvm),
    .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct AgentNamespaceMigrationTests {
    static let workload = "kvm:20MB/s,interval=50000"

    /// Runs `body` on a thread inside host `namespace` (the agents listen there, not here).
    static func on<T: Sendable>(_ namespace: String, _ body: @escaping @Sendable () throws -> T) throws -> T {
        try NetworkNamespaces.run(in: namespace, body)
    }

    static func guests(_ url: String, _ keyFile: String, from namespace: String) throws -> [GuestView] {
        try on(namespace) {
            try AgentClient(url: url, key: SharedKey.load(path: keyFile), timeoutMs: 30_000)
                .get("/v1/guests", as: GuestList.self).guests
        }
    }

    static func call(
        _ method: String, _ url: String, _ target: String, body: [UInt8] = [], _ keyFile: String,
        from namespace: String
    ) throws -> (status: Int, body: String) {
        try on(namespace) {
            let response = try AgentClient(url: url, key: SharedKey.load(path: keyFile), timeoutMs: 60_000)
                .send(method, target, body: body)
            return (response.status, String(decoding: response.body, as: UTF8.self))
        }
    }

    /// The console's lines (texts) from cursor 0.
    static func console(_ url: String, _ keyFile: String, from namespace: String) throws -> [String] {
        let page = try call("GET", url, "/v1/guests/kvm1/console?limit=10000", keyFile, from: namespace)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(page.body.utf8)) as? [String: Any])
        let lines = try #require(object["lines"] as? [[String: Any]], "\(page.body)")
        return lines.compactMap { $0["text"] as? String }
    }

    /// The largest step vCPU 0 printed ("kvm-guest: vcpu 0 step S checksum …").
    static func lastStep(_ lines: [String]) -> UInt64? {
        lines.compactMap { line -> UInt64? in
            guard line.hasPrefix("kvm-guest: vcpu 0 step ") else { return nil }
            return line.split(separator: " ").dropFirst(4).first.flatMap { UInt64($0) }
        }.max()
    }

    @Test(
        "a KVM guest with a shared disk live-migrates between agents on two hosts; console and journal continue",
        .enabled(if: Requirement.namespaces.met, Requirement.namespaces.why),
        .enabled(if: Requirement.kvm.met, Requirement.kvm.why))
    func kvmGuestWithADiskMigratesBetweenHosts() throws {
        let id = getpid() % 100_000
        let (hosts, addresses) = try NetworkNamespaces.bridged(
            bridgeNamespace: "fab-\(id)", hosts: ["faa-\(id)", "fad-\(id)"], subnet: "10.91.0")
        defer { hosts.remove() }
        let (a, b) = (hosts.names[1], hosts.names[2])
        let source = try GuestAgentFixture(
            "nms", extra: ["--migration-listen", addresses[0] + ":0"], host: addresses[0], prefix: hosts.exec(in: a))
        let destination = try GuestAgentFixture(
            "nmd", keyFile: source.keyFile, extra: ["--migration-listen", addresses[1] + ":0"], host: addresses[1],
            prefix: hosts.exec(in: b))
        let key = source.keyFile
        let shared = source.scratch.file("shared")
        mkdir(shared, 0o755)
        let disk = shared + "/kvm1.root.raw"

        let spec =
            #"{"name":"kvm1","kind":"kvm","vcpus":1,"memory_bytes":67108864,"seed":7,"workload":"\#(Self.workload)","disks":[{"name":"root","size_bytes":4194304,"path":"\#(disk)"}]}"#
        let created = try Self.call("POST", source.url, "/v1/guests", body: Array(spec.utf8), key, from: a)
        try #require(created.status == 201, "\(created.body)")
        let started = try Self.call("POST", source.url, "/v1/guests/kvm1/start", key, from: a)
        try #require(started.status == 200, "\(started.body)")
        usleep(1_500_000)
        let before = try Self.console(source.url, key, from: a)
        let stepBefore = try #require(Self.lastStep(before), "the guest printed no step: \(before.suffix(5))")
        #expect(before.contains { $0.hasPrefix("disk: new journal") }, "\(before.prefix(5))")
        let headBefore = try #require(try DiskJournalScan.read(path: disk, verifyData: false).head?.seq)

        // Capped so that it lasts long enough for a few dozen polls of both inventories.
        let request =
            #"{"guest":"kvm1","to":"\#(destination.url)","options":{"max_bandwidth_bytes_per_s":500000,"downtime_ms":300}}"#
        let posted = try Self.call("POST", source.url, "/v1/migrations", body: Array(request.utf8), key, from: a)
        try #require(posted.status == 201, "\(posted.body)")
        let migration = try MigrationResource.decode(posted.body)

        // Both inventories, polled until the migration ends: one owner at every poll.
        var polls = 0
        var final = migration
        let deadline = Date().addingTimeInterval(90)
        while Date() < deadline {
            let here = try Self.guests(source.url, key, from: a).first { $0.specification.name.value == "kvm1" }
            let there = try Self.guests(destination.url, key, from: b).first { $0.specification.name.value == "kvm1" }
            polls += 1
            #expect(
                AgentPair.oneOwner((here?.state, there?.state)),
                "poll \(polls): source \(here?.state ?? "-"), destination \(there?.state ?? "-")")
            final = try MigrationResource.decode(
                try Self.call("GET", source.url, "/v1/migrations/\(migration.id)", key, from: a).body)
            if final.status.isFinal { break }
            usleep(50_000)
        }
        try #require(final.status == .completed, "\(final.json)")
        print(
            "two hosts, KVM guest with a disk: migrated in \(final.totalTimeMs ?? -1) ms, downtime"
                + " \(final.downtimeMs ?? -1) ms, \(polls) polls of both inventories")

        // Settled: the destination owns it, the source lists it no more, one vmm runs it.
        var settled = false
        for _ in 0..<100 where !settled {
            let here = try Self.guests(source.url, key, from: a).contains { $0.specification.name.value == "kvm1" }
            let there = try Self.guests(destination.url, key, from: b).first { $0.specification.name.value == "kvm1" }
            settled = !here && there?.state == "running"
            if !settled { usleep(100_000) }
        }
        #expect(settled, "the destination does not own the guest alone")
        let view = try #require(try Self.guests(destination.url, key, from: b).first)
        let createdID = try #require(try JSONSerialization.jsonObject(with: Data(created.body.utf8)) as? [String: Any])[
            "id"]
        #expect(view.id == createdID as? String, "the guest ID passes through unchanged")
        let vmms = GuestAgentFixture.vmmProcesses(id: view.id)
        #expect(vmms.count == 1 && vmms.first == view.pid, "vmm processes \(vmms), the row records \(view.pid ?? -1)")

        // The console continues there: later steps, and no boot (no journal line).
        var after = try Self.console(destination.url, key, from: b)
        for _ in 0..<100 where Self.lastStep(after) == nil {
            usleep(100_000)
            after = try Self.console(destination.url, key, from: b)
        }
        let stepAfter = try #require(Self.lastStep(after), "no step on the destination: \(after.suffix(5))")
        #expect(stepAfter > stepBefore, "vCPU 0 at \(stepAfter) on the destination, \(stepBefore) before")
        #expect(!after.contains { $0.hasPrefix("disk: ") }, "the guest booted again: \(after.prefix(5))")

        // The journal continues: a graceful stop there, then one boot, no gap, a clean end.
        let stopped = try Self.call(
            "POST", destination.url, "/v1/guests/kvm1/stop", body: Array(#"{"timeout_seconds":20}"#.utf8), key,
            from: b)
        #expect(stopped.status == 200, "\(stopped.body)")
        let scan = try DiskJournalScan.read(path: disk)
        #expect(scan.firstCorruption == nil && scan.boots == 1 && scan.cleanShutdown, "\(scan.resumeLine)")
        #expect((scan.head?.seq ?? 0) > headBefore, "the journal did not grow after the migration")
        #expect(source.terminate()?.status == 0)
        #expect(destination.terminate()?.status == 0)
    }
}

/// Issue 15's acceptance on two hosts: network namespaces joined by a bridge, an agent in each,
/// and each agent also in a mount namespace of its own where the other's state directory is an
/// empty tmpfs (separate storage). A running KVM guest with a local disk cold-migrates through
/// the source agent's API: its disk moves over the bridge, it boots from it on the destination
/// and its journal continues; every poll of both inventories shows one owner.
@Suite(
    "two agents in two network namespaces: a KVM guest with a local disk migrates cold", .serialized,
    .tags(.namespaces, .kvm), .skippable(.namespaces), .skippable(.kvm),
    .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct AgentNamespaceColdMigrationTests {
    typealias Hosts = AgentNamespaceMigrationTests

    @Test(
        "a running KVM guest with a local disk cold-migrates between agents on two hosts; the disk moves",
        .enabled(if: Requirement.namespaces.met, Requirement.namespaces.why),
        .enabled(if: Requirement.kvm.met, Requirement.kvm.why))
    func kvmGuestMovesColdBetweenHosts() throws {
        let id = getpid() % 100_000
        let (hosts, addresses) = try NetworkNamespaces.bridged(
            bridgeNamespace: "fcb-\(id)", hosts: ["fca-\(id)", "fcd-\(id)"], subnet: "10.92.0")
        defer { hosts.remove() }
        let (a, b) = (hosts.names[1], hosts.names[2])
        let source = try GuestAgentFixture(
            "ncs", extra: ["--migration-listen", addresses[0] + ":0"], host: addresses[0], prefix: hosts.exec(in: a))
        let destination = try GuestAgentFixture(
            "ncd", keyFile: source.keyFile, extra: ["--migration-listen", addresses[1] + ":0"], host: addresses[1],
            prefix: hosts.exec(in: b) + AgentPair.hiding(source.stateDirectory))
        let key = source.keyFile
        let spec =
            #"{"name":"kvm1","kind":"kvm","vcpus":1,"memory_bytes":67108864,"seed":7,"workload":"\#(Hosts.workload)","disks":[{"name":"root","size_bytes":8388608}]}"#
        let created = try Hosts.call("POST", source.url, "/v1/guests", body: Array(spec.utf8), key, from: a)
        try #require(created.status == 201, "\(created.body)")
        try #require(try Hosts.call("POST", source.url, "/v1/guests/kvm1/start", key, from: a).status == 200)
        usleep(1_500_000)

        let request = #"{"guest":"kvm1","to":"\#(destination.url)","kind":"cold"}"#
        let posted = try Hosts.call("POST", source.url, "/v1/migrations", body: Array(request.utf8), key, from: a)
        try #require(posted.status == 201, "\(posted.body)")
        let migration = try MigrationResource.decode(posted.body)
        var polls = 0
        var final = migration
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            let here = try Hosts.guests(source.url, key, from: a).first?.state
            let there = try Hosts.guests(destination.url, key, from: a).first?.state
            let settled = { (state: String?) in state.map { !$0.hasPrefix("migrating") } ?? false }
            polls += 1
            #expect(
                (here != nil || there != nil) && !(settled(here) && settled(there)),
                "poll \(polls): source \(here ?? "-"), destination \(there ?? "-")")
            final = try MigrationResource.decode(
                try Hosts.call("GET", source.url, "/v1/migrations/\(migration.id)", key, from: a).body)
            if final.status.isFinal { break }
            usleep(20_000)
        }
        print("cold migration between two hosts (\(polls) polls): \(final.json)")
        #expect(final.status == .completed && final.error == nil, "\(final.json)")
        let file = try #require(final.files?.first)
        #expect(!file.shared && file.wireBytes > 0, "\(file)")
        #expect(final.resumedLine?.contains("disk: resumed at record") == true, "\(final.json)")
        let arrived = try #require(try Hosts.guests(destination.url, key, from: a).first)
        #expect(arrived.state == "running")
        #expect(arrived.specification.disks.first?.path?.hasPrefix(destination.stateDirectory + "/disks/") == true)
        #expect(try Hosts.guests(source.url, key, from: a).isEmpty)
    }
}
