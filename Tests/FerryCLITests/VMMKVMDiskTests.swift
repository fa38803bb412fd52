import FerryGuest
import FerryHostModel
import FerrySystem
import FerryTestSupport
import FerryVMM
import Foundation
import Glibc
import Testing

/// `ferry vmm --spec` with a KVM guest on the specification's disk: the guest program's journal,
/// its resume line in the console, the clean-shutdown record of a graceful end, and a guest
/// that moves on from a vmm that received it.
@Suite(
    "ferry vmm: a KVM guest's disk", .serialized, .tags(.kvm), .skippable(.kvm),
    .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct VMMKVMDiskTests {
    static let workload = "kvm:20MB/s,interval=50000"

    @Test(
        "a KVM guest boots on its disk, prints where its journal resumed, and shutdown writes a clean record",
        .enabled(if: Requirement.kvm.met, Requirement.kvm.why))
    func bootShutdownRestart() throws {
        let vmm = VMMHarness("vmm-kvm-disk")
        let spec = try vmm.specFile(
            kind: "kvm", vcpus: 1, workload: Self.workload,
            disks: [DiskSpecification(name: "root", sizeBytes: VMMDiskTests.diskBytes)])
        let disk = "\(vmm.stateDir)/\(vmm.id.hex).root.disk"
        let process = try vmm.start(["--spec", spec])
        let client = try vmm.client()
        usleep(600_000)
        let console = try VMMDiskTests.console(client)
        #expect(console.contains("disk: new journal (no records yet), sectors 8192"), "\(console)")
        // Read while the guest writes: the head only (the ring may move on under the reader).
        let running = try DiskJournalScan.read(path: disk, verifyData: false)
        #expect((running.head?.seq ?? 0) > 10, "\(running.resumeLine)")
        #expect(try client.call("shutdown", ["timeout_ms": 5000])["state"]?.stringValue == "stopped")
        #expect(process.wait(timeout: 15).status == 0)
        let stopped = try DiskJournalScan.read(path: disk)
        let head = try #require(stopped.head)
        #expect(stopped.firstCorruption == nil && stopped.cleanShutdown && stopped.boots == 1, "\(stopped.resumeLine)")

        let again = try vmm.start(["--spec", spec])
        usleep(500_000)
        let resumed = try VMMDiskTests.console(try vmm.client())
        #expect(resumed.contains("disk: resumed at record \(head.seq) (boot 1, clean shutdown: yes)"), "\(resumed)")
        kill(again.process.processIdentifier, SIGTERM)
        #expect(again.wait(timeout: 15).status == 0)
        let second = try DiskJournalScan.read(path: disk)
        #expect(second.firstCorruption == nil && second.cleanShutdown && second.boots == 2, "\(second.resumeLine)")
    }

    @Test(
        "vmm A → B → C with a KVM guest on a shared disk: B exits at once after the guest left, the journal has no gap",
        .enabled(if: Requirement.kvm.met, Requirement.kvm.why))
    func onwardMigrationFromAReceivingVMM() throws {
        let a = VMMHarness("vmm-kvm-a")
        let disk = a.scratch.file("shared.disk")
        let spec = try a.specFile(
            kind: "kvm", vcpus: 1, workload: Self.workload,
            disks: [DiskSpecification(name: "root", sizeBytes: VMMDiskTests.diskBytes, path: disk)])
        let first = try a.start(["--spec", spec])
        let b = try VMMDestination(for: a)
        let c = try VMMDestination(for: b.harness)
        usleep(300_000)
        try Self.migrate(a, to: b)
        #expect(first.wait(timeout: 20).status == 0)
        usleep(300_000)
        let began = Date()
        try Self.migrate(b.harness, to: c)
        let left = Date().timeIntervalSince(began)
        try VMMDiskTests.waitForExit(b.pid)
        let exited = Date().timeIntervalSince(began) - left
        print(
            "vmm B: the guest left after \(String(format: "%.2f", left)) s; B exited \(String(format: "%.2f", exited)) s later"
        )
        #expect(exited < 3, "B took \(exited) s to exit after the guest left")
        let arrived = try c.harness.client()
        usleep(300_000)
        #expect(try arrived.call("status")["disk"]?["path"]?.stringValue == disk)
        // C shuts the guest it received down once: no second shutdown waits out its timeout.
        let stopping = Date()
        #expect(try arrived.call("shutdown")["state"]?.stringValue == "stopped")
        try VMMDiskTests.waitForExit(c.pid)
        let stopTook = Date().timeIntervalSince(stopping)
        print("vmm C: shutdown and exit took \(String(format: "%.2f", stopTook)) s")
        #expect(stopTook < 3, "C took \(stopTook) s to shut down and exit")
        let scan = try DiskJournalScan.read(path: disk)
        #expect(scan.firstCorruption == nil && scan.cleanShutdown, "\(String(describing: scan.firstCorruption))")
        #expect(scan.boots == 1 && scan.oldestSeq == 1 && (scan.head?.seq ?? 0) > 50, "\(scan.resumeLine)")
    }

    @Test(
        "journal=N in the KVM workload sets the interval; without it about 100 records a second",
        .enabled(if: Requirement.kvm.met, Requirement.kvm.why))
    func journalIntervalFromTheWorkload() throws {
        var heads: [UInt64] = []
        for workload in [Self.workload, Self.workload + ",journal=100000000"] {
            let vmm = VMMHarness("vmm-kvm-jrnl")
            let spec = try vmm.specFile(
                kind: "kvm", vcpus: 1, workload: workload,
                disks: [DiskSpecification(name: "root", sizeBytes: VMMDiskTests.diskBytes)])
            let process = try vmm.start(["--spec", spec])
            usleep(700_000)
            #expect(try vmm.client().call("shutdown")["state"]?.stringValue == "stopped")
            #expect(process.wait(timeout: 15).status == 0)
            let scan = try DiskJournalScan.read(path: "\(vmm.stateDir)/\(vmm.id.hex).root.disk")
            #expect(scan.cleanShutdown && scan.firstCorruption == nil, "\(workload): \(scan.resumeLine)")
            heads.append(scan.head?.seq ?? 0)
        }
        // 20 MB/s is 4,883 steps/s: 49 steps a record. A record per 10^8 steps: boot and shutdown only.
        #expect(heads[0] > 30 && heads[1] == 2, "records: \(heads)")
    }

    @Test(
        "suspend and --restore keep a KVM guest's disk: its journal continues in the same boot",
        .enabled(if: Requirement.kvm.met, Requirement.kvm.why))
    func suspendRestore() throws {
        let vmm = VMMHarness("vmm-kvm-dsusp")
        let disk = vmm.scratch.file("kvm.disk")
        let spec = try vmm.specFile(
            kind: "kvm", vcpus: 1, workload: Self.workload,
            disks: [DiskSpecification(name: "root", sizeBytes: VMMDiskTests.diskBytes, path: disk)])
        let process = try vmm.start(["--spec", spec])
        usleep(400_000)
        let file = try #require(try vmm.client().call("suspend")["file"]?.stringValue)
        #expect(process.wait(timeout: 10).status == 0)
        let saved = try #require(try DiskJournalScan.read(path: disk).head?.seq)
        let restored = try vmm.detach(["--restore", file])
        let client = try vmm.client()
        usleep(500_000)
        let status = try client.call("status")["disk"]
        #expect(status?["path"]?.stringValue == disk && status?["locked"]?.boolValue == true, "\(status?.line ?? "")")
        #expect(try client.call("shutdown")["state"]?.stringValue == "stopped")
        try VMMDiskTests.waitForExit(restored.pid)
        let scan = try DiskJournalScan.read(path: disk)
        #expect(scan.firstCorruption == nil && scan.cleanShutdown, "\(String(describing: scan.firstCorruption))")
        #expect(scan.boots == 1 && (scan.head?.seq ?? 0) > saved + 20, "continued from \(saved): \(scan.resumeLine)")
    }

    /// Migrates `source`'s guest to `destination` and waits until it left.
    static func migrate(_ source: VMMHarness, to destination: VMMDestination) throws {
        let watcher = try source.client()
        _ = try watcher.call("watch")
        _ = try source.client().call("migrate", ["to": .string(destination.address), "downtime_ms": 200])
        let events = try VMMHarness.watch(watcher) {
            ["left", "running", "unresolved"].contains($0["state"]?.stringValue)
        }
        try #require(events.last?["state"]?.stringValue == "left", "\(events.map(\.line))")
    }
}
