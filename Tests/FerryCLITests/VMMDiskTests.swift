import FerryGuest
import FerryHostModel
import FerrySystem
import FerryTestSupport
import FerryVMM
import Foundation
import Glibc
import Testing

/// `ferry vmm --spec` with the specification's disk: the built-in guest's journal on it, a
/// graceful end that leaves a clean-shutdown record, a restart, suspend/restore and a live
/// migration that continue the journal, all read back from the disk file.
@Suite(
    "ferry vmm: the guest's disk", .serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct VMMDiskTests {
    static let diskBytes = 4 << 20

    @Test(
        "the built-in guest's journal grows on its default disk; shutdown leaves a clean record, a restart resumes it")
    func journalGrowsShutdownAndRestart() throws {
        let vmm = VMMHarness("vmm-disk")
        let spec = try vmm.specFile(disks: [DiskSpecification(name: "root", sizeBytes: Self.diskBytes)])
        let disk = "\(vmm.stateDir)/\(vmm.id.hex).root.disk"
        let process = try vmm.start(["--spec", spec])
        let client = try vmm.client()
        #expect(try client.call("status")["disk"]?["path"]?.stringValue == disk)
        #expect(try Self.console(client).contains("disk: new journal (no records yet)"))
        usleep(300_000)
        // Read while the guest writes: the head only (the ring may move on under the reader).
        let early = try #require(try DiskJournalScan.read(path: disk, verifyData: false).head?.seq)
        usleep(500_000)
        let later = try DiskJournalScan.read(path: disk, verifyData: false)
        #expect((later.head?.seq ?? 0) >= early + 25, "100 records/s: \(early) then \(later.head?.seq ?? 0)")

        #expect(try client.call("shutdown", ["timeout_ms": 5000])["state"]?.stringValue == "stopped")
        #expect(process.wait(timeout: 10).status == 0)
        let stopped = try DiskJournalScan.read(path: disk)
        let head = try #require(stopped.head)
        #expect(stopped.firstCorruption == nil && stopped.cleanShutdown && stopped.boots == 1, "\(head)")

        // A restart on the same disk resumes the journal; SIGTERM ends it as gracefully.
        let again = try vmm.start(["--spec", spec])
        let console = try Self.console(try vmm.client())
        #expect(console.contains("disk: resumed at record \(head.seq) (boot 1, clean shutdown: yes)"), "\(console)")
        usleep(300_000)
        kill(again.process.processIdentifier, SIGTERM)
        #expect(again.wait(timeout: 15).status == 0)
        let second = try DiskJournalScan.read(path: disk)
        #expect(second.firstCorruption == nil && second.cleanShutdown && second.boots == 2)
        #expect((second.head?.seq ?? 0) > head.seq + 10 && second.oldestSeq == 1, "one chain over both boots")
    }

    @Test("suspend releases the disk and --restore continues its journal in the same boot")
    func suspendRestoreContinuesTheJournal() throws {
        let vmm = VMMHarness("vmm-disk-susp")
        let disk = vmm.scratch.file("shared.disk")
        let spec = try vmm.specFile(disks: [DiskSpecification(name: "data", sizeBytes: Self.diskBytes, path: disk)])
        let process = try vmm.start(["--spec", spec])
        usleep(400_000)
        let file = try #require(try vmm.client().call("suspend")["file"]?.stringValue)
        #expect(process.wait(timeout: 10).status == 0)
        let saved = try #require(try DiskJournalScan.read(path: disk).head?.seq)
        let restored = try vmm.detach(["--restore", file])
        let client = try vmm.client()
        usleep(500_000)
        let status = try client.call("status")["disk"]
        #expect(
            status?["path"]?.stringValue == disk && (status?["records_written"]?.intValue ?? 0) > 10,
            "\(status?.line ?? "")")
        #expect(try client.call("shutdown")["state"]?.stringValue == "stopped")
        try Self.waitForExit(restored.pid)
        let scan = try DiskJournalScan.read(path: disk)
        #expect(scan.firstCorruption == nil && scan.cleanShutdown, "\(String(describing: scan.firstCorruption))")
        #expect(scan.boots == 1 && scan.oldestSeq == 1 && (scan.head?.seq ?? 0) > saved + 10, "continued: \(saved)")
    }

    @Test("a live migration vmm → vmm continues the journal on the shared disk without a gap")
    func migrationLeavesNoGap() throws {
        let source = VMMHarness("vmm-disk-src")
        let disk = source.scratch.file("shared.disk")
        let spec = try source.specFile(
            disks: [DiskSpecification(name: "root", sizeBytes: Self.diskBytes, path: disk)])
        let process = try source.start(["--spec", spec])
        let destination = try VMMDestination(for: source)
        let watcher = try source.client()
        _ = try watcher.call("watch")
        usleep(300_000)
        _ = try source.client().call("migrate", ["to": .string(destination.address), "downtime_ms": 200])
        _ = try VMMHarness.watch(watcher) { $0["state"]?.stringValue == "left" }
        #expect(process.wait(timeout: 20).status == 0)
        let handedOver = try #require(try DiskJournalScan.read(path: disk).head?.seq)
        let arrived = try destination.harness.client()
        usleep(500_000)
        let status = try arrived.call("status")["disk"]
        #expect(status?["path"]?.stringValue == disk, "\(status?.line ?? "")")
        #expect(try arrived.call("shutdown")["state"]?.stringValue == "stopped")
        try Self.waitForExit(destination.pid)
        let scan = try DiskJournalScan.read(path: disk)
        #expect(scan.firstCorruption == nil && scan.tornSector == nil)
        #expect(scan.boots == 1 && scan.cleanShutdown && scan.oldestSeq == 1, "one boot, one chain")
        #expect(
            (scan.head?.seq ?? 0) > handedOver + 20, "the destination wrote: \(handedOver) → \(scan.head?.seq ?? 0)")
    }

    @Test("a specification with two disks is refused naming the fix; so is a disk file of another size")
    func twoDisksRefused() throws {
        let vmm = VMMHarness("vmm-disk-two")
        let spec = try vmm.specFile(disks: [
            DiskSpecification(name: "root", sizeBytes: Self.diskBytes),
            DiskSpecification(name: "data", sizeBytes: Self.diskBytes),
        ])
        let two = try FerryProcess.run(["vmm", "--spec", spec, "--id", vmm.id.hex, "--state-dir", vmm.stateDir])
        #expect(two.status == 9, "\(two.stderr)")
        #expect(
            two.stderr.contains("2 disks (root, data)") && two.stderr.contains("keep one in disks"), "\(two.stderr)")
        #expect(!FileManager.default.fileExists(atPath: vmm.socketPath))

        let disk = vmm.scratch.file("small.disk")
        try DiskJournal.createDisk(path: disk, bytes: 1 << 20)
        let other = try vmm.specFile(disks: [DiskSpecification(name: "root", sizeBytes: Self.diskBytes, path: disk)])
        let sized = try FerryProcess.run(["vmm", "--spec", other, "--id", vmm.id.hex, "--state-dir", vmm.stateDir])
        #expect(
            sized.status == 9 && sized.stderr.contains("is 1048576 bytes but the specification says"), "\(sized.stderr)"
        )
    }

    @Test("kill -9 mid-journal: the disk holds an intact chain and a restart resumes it, not clean")
    func killNineThenRestart() throws {
        let vmm = VMMHarness("vmm-disk-kill")
        let disk = vmm.scratch.file("crash.disk")
        let spec = try vmm.specFile(disks: [DiskSpecification(name: "root", sizeBytes: Self.diskBytes, path: disk)])
        let process = try vmm.start(["--spec", spec])
        usleep(400_000)
        kill(process.process.processIdentifier, SIGKILL)
        #expect(process.wait(timeout: 10).signal == SIGKILL)
        let crashed = try DiskJournalScan.read(path: disk)
        let head = try #require(crashed.head)
        #expect(crashed.firstCorruption == nil && !crashed.cleanShutdown && head.seq > 20, "\(crashed.resumeLine)")
        let again = try vmm.start(["--spec", spec])
        let console = try Self.console(try vmm.client())
        #expect(console.contains("disk: resumed at record \(head.seq) (boot 1, clean shutdown: no)"), "\(console)")
        #expect(try vmm.client().call("shutdown")["state"]?.stringValue == "stopped")
        #expect(again.wait(timeout: 10).status == 0)
        let scan = try DiskJournalScan.read(path: disk)
        #expect(scan.firstCorruption == nil && scan.cleanShutdown && scan.boots == 2, "\(scan.resumeLine)")
    }

    @Test("a second vmm on a disk another one holds is refused naming the holder; the first keeps writing")
    func diskHeldByAnotherVMM() throws {
        let first = VMMHarness("vmm-disk-held")
        let disk = first.scratch.file("held.disk")
        let disks = [DiskSpecification(name: "root", sizeBytes: Self.diskBytes, path: disk)]
        let process = try first.start(["--spec", try first.specFile(disks: disks)])
        let second = VMMHarness("vmm-disk-held2")
        let refused = try FerryProcess.run([
            "vmm", "--spec", try second.specFile(disks: disks), "--id", second.id.hex, "--state-dir", second.stateDir,
        ])
        #expect(refused.status == 9, "\(refused.stderr)")
        #expect(
            refused.stderr.contains(disk) && refused.stderr.contains("\(process.process.processIdentifier)"),
            "\(refused.stderr)")
        let client = try first.client()
        let written = try client.call("status")["disk"]?["records_written"]?.intValue ?? 0
        usleep(300_000)
        #expect(try client.call("status")["disk"]?["records_written"]?.intValue ?? 0 > written + 10)
        #expect(try client.call("shutdown")["state"]?.stringValue == "stopped")
        #expect(process.wait(timeout: 10).status == 0)
        #expect(try DiskJournalScan.read(path: disk).cleanShutdown)
    }

    /// Every console line's text.
    static func console(_ client: VMMControlClient) throws -> [String] {
        try client.call("console", ["since": 0, "limit": 10000])["lines"]?.arrayValue?.compactMap {
            $0["text"]?.stringValue
        } ?? []
    }

    /// Waits until `pid` (a detached process) is gone.
    static func waitForExit(_ pid: pid_t, timeout: Double = 20) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while ProcessIdentity.of(pid: pid) != nil && !VMMProcessTests.isZombie(pid) && Date() < deadline {
            usleep(10_000)
        }
        try #require(ProcessIdentity.of(pid: pid) == nil || VMMProcessTests.isZombie(pid), "process \(pid) still runs")
    }
}
