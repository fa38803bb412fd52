import FerryGuest
import FerryTestSupport
import Foundation
import Testing

/// `--disk` on `ferry run` and `ferry send`, and `ferry disk check`, run as a user runs them.
@Suite(.enabled(if: FerryProcess.built.met, FerryProcess.built.why))
struct DiskCLITests {
    /// A run writes its journal and shuts down cleanly; the next boot says where it resumed.
    @Test func aSecondRunResumesWhereTheFirstShutDown() throws {
        let scratch = Scratch("disk-cli-run")
        let image = scratch.file("vm.img")
        let disk = scratch.file("disk.img")
        #expect(try FerryProcess.run(["image", "create", image, "--size", "4M"]).status == 0)
        let first = try FerryProcess.run([
            "run", "--image", image, "--workload", "uniform:1MB/s", "--duration", "500ms", "--disk", disk,
            "--disk-size", "4MiB", "--disk-rate", "200",
        ])
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stdout.contains("disk: new journal"), "\(first.stdout)")
        let shutdown = try #require(
            first.stdout.split(separator: "\n").first { $0.hasPrefix("disk: clean shutdown at record ") },
            "\(first.stdout)")
        let record = try #require(
            UInt64(shutdown.dropFirst("disk: clean shutdown at record ".count).prefix { $0.isNumber }))
        #expect(record > 50, "about 100 records in 0.5 s at 200/s: \(shutdown)")
        #expect(try ImageFileSize.allocated(disk) < 2 << 20, "the disk is sparse")

        let second = try FerryProcess.run([
            "run", "--image", image, "--duration", "200ms", "--disk", disk, "--disk-rate", "50",
        ])
        #expect(second.status == 0, "\(second.stderr)")
        #expect(
            second.stdout.contains("disk: resumed at record \(record) (boot 1, clean shutdown: yes)"),
            "\(second.stdout)")

        let check = try FerryProcess.run(["disk", "check", disk])
        #expect(check.status == 0, "\(check.stderr)")
        #expect(check.stdout.contains("(boot 2, clean shutdown: yes)"), "\(check.stdout)")
    }

    /// The KVM guest on a disk: `ferry run --guest kvm --disk` twice, the second boot prints the
    /// record the first one's graceful shutdown left as the head.
    @Test(.enabled(if: Requirement.kvm.met, Requirement.kvm.why))
    func aKVMGuestResumesItsJournalOnTheNextRun() throws {
        let scratch = Scratch("disk-cli-kvm")
        let image = scratch.file("vm.img")
        let disk = scratch.file("disk.img")
        let arguments = [
            "run", "--guest", "kvm", "--image", image, "--size", "16MiB", "--rate", "40MB/s", "--duration", "500ms",
            "--vcpus", "1", "--disk", disk, "--disk-size", "4MiB", "--disk-rate", "200",
        ]
        let first = try FerryProcess.run(arguments)
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stdout.contains("disk: new journal"), "\(first.stdout)")
        #expect(first.stdout.contains("kvm-guest: vcpu 0 shutdown step "), "\(first.stdout)")
        let scan = try DiskJournalScan.read(path: disk)
        let head = try #require(scan.head)
        #expect(scan.firstCorruption == nil && scan.cleanShutdown && head.seq > 20, "\(head.seq) records")
        let second = try FerryProcess.run(arguments)
        #expect(second.status == 0, "\(second.stderr)")
        #expect(
            second.stdout.contains("disk: resumed at record \(head.seq) (boot 1, clean shutdown: yes)"),
            "\(second.stdout)")
        let check = try FerryProcess.run(["disk", "check", disk])
        #expect(check.status == 0 && check.stdout.contains("(boot 2, clean shutdown: yes)"), "\(check.stdout)")
    }

    /// `ferry disk check` names the damage and fails.
    @Test func checkReportsADamagedRecord() throws {
        let scratch = Scratch("disk-cli-check")
        let disk = scratch.file("disk.img")
        try DiskJournal.createDisk(path: disk, bytes: 1 << 20)
        let journal = try DiskJournal.boot(path: disk, seed: 1)
        for _ in 0..<10 { try journal.appendStep(progress: 0, checksum: 0) }
        try journal.appendCleanShutdown(progress: 0, checksum: 0)
        journal.close()
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: disk))
        try handle.seek(toOffset: 4 * 512 + 30)
        try handle.write(contentsOf: Data([0xAA]))
        try handle.close()
        let check = try FerryProcess.run(["disk", "check", disk])
        #expect(check.status == 9, "\(check.stdout)\(check.stderr)")
        #expect(check.stderr.contains("sector 4 (record 4)"), "\(check.stderr)")
    }

    /// `ferry send --disk` to `ferry receive` on loopback, the disk at the same path (shared
    /// storage): the receiver's guest continues the journal and shuts it down cleanly.
    @Test func sendWithADiskContinuesTheJournalOnTheDestination() throws {
        let scratch = Scratch("disk-cli-send")
        let image = scratch.file("vm.img")
        let disk = scratch.file("disk.img")
        #expect(try FerryProcess.run(["image", "create", image, "--size", "8M"]).status == 0)
        let receiver = try FerryProcess([
            "receive", "--listen", "127.0.0.1:0", "--image", scratch.file("in.img"), "--accept-timeout", "60s",
            "--run-for", "500ms",
        ])
        let port = try #require(FaultMatrixTests.listeningPort(receiver))
        let sent = try FerryProcess.run([
            "send", "--image", image, "--to", "127.0.0.1:\(port)", "--workload", "uniform:10MB/s", "-q",
            "--run-before", "300ms", "--disk", disk, "--disk-rate", "400",
        ])
        let received = receiver.wait()
        #expect(sent.status == 0, "\(sent.stderr)")
        #expect(received.status == 0, "\(received.stderr)")
        let scan = try DiskJournalScan.read(path: disk)
        #expect(scan.firstCorruption == nil && scan.tornSector == nil)
        #expect(scan.boots == 1 && scan.cleanShutdown && scan.oldestSeq == 1, "one boot, continued without a gap")
        #expect((scan.head?.seq ?? 0) > 250, "both ends wrote: \(scan.head?.seq ?? 0) records")
    }
}

private enum ImageFileSize {
    static func allocated(_ path: String) throws -> Int {
        var info = stat()
        guard stat(path, &info) == 0 else { throw CocoaError(.fileNoSuchFile) }
        return Int(info.st_blocks) * 512
    }
}
