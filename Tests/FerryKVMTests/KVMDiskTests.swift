import FerryGuest
import FerryKVMMigration
import FerryMigration
import FerrySystem
import FerryTestSupport
import FerryTransport
import Foundation
import Glibc
import Logging
import Testing

@testable import FerryKVM

/// The KVM guest's paravirtual disk (docs/disk.md): the guest program keeps its journal on a
/// real sparse file through REG_DISK_REQUEST; the Swift reader verifies what the C program wrote.
@Suite("KVM guest disk", .serialized, .tags(.kvm), .skippable(.kvm))
struct KVMDiskTests {
    let logger = {
        var logger = Logger(label: "test.kvm-disk")
        logger.logLevel = .warning
        return logger
    }()

    /// Boots a fresh guest (new memory) on `disk`, lets it run `seconds` and until vCPU 0 made
    /// `steps` (at most 20 s: a loaded machine runs the guest late, not less), shuts it down
    /// gracefully.
    private func bootAndShutDown(disk path: String, seconds: Double, steps: UInt64 = 0) throws -> KVMGuest {
        let memory = AnonymousMemory(mebibytes: 16)
        let parameters = KVMGuestParameters(seed: 21, vcpus: 2, writesPerSecond: 200_000, journalInterval: 500)
        let guest = try KVMGuest(memory: memory.base, size: memory.size, parameters: parameters, logger: logger)
        guest.attach(disk: try KVMDisk(path: path))
        guest.start()
        usleep(UInt32(seconds * 1e6))
        let deadline = Date() + 20
        while UInt64(guest.stepsPerVCPU[0]) < steps, Date() < deadline { usleep(20_000) }
        #expect(try guest.shutdown(timeoutSeconds: 10), "the guest did not halt after the shutdown request")
        #expect(guest.failure == nil, "\(guest.failure ?? "")")
        guest.disk?.release()
        return guest
    }

    @Test(
        "boots on a disk, journals, shuts down gracefully; the next boot prints the record it resumed at",
        .enabled(if: Requirement.kvm.met, Requirement.kvm.why))
    func bootShutdownReboot() throws {
        let scratch = Scratch("kvm-disk-reboot")
        let path = scratch.file("disk.img")
        try DiskJournal.createDisk(path: path, bytes: 8 << 20)
        // A record every 500 steps of a vCPU: 11,000 steps of vCPU 0 alone make over 20.
        let first = try bootAndShutDown(disk: path, seconds: 0.5, steps: 11_000)
        let lines = first.consoleLines.map(\.text)
        #expect(lines.contains("disk: new journal (no records yet), sectors 16384"), "\(lines)")
        let shutdownLine = try #require(lines.first { $0.hasPrefix("kvm-guest: vcpu 0 shutdown step ") }, "\(lines)")
        var scan = try DiskJournalScan.read(path: path)
        let head = try #require(scan.head)
        #expect(scan.firstCorruption == nil && scan.tornSector == nil, "\(String(describing: scan.firstCorruption))")
        #expect(scan.superblock == DiskSuperblock(journalSectors: 4096, seed: 21))
        #expect(head.kind == .cleanShutdown && head.bootCount == 1 && scan.oldestSeq == 1)
        #expect(
            head.seq > 20, "a record every 500 steps of each vCPU, and vCPU 0 made 11,000: \(head.seq)"
        )
        #expect(shutdownLine == "kvm-guest: vcpu 0 shutdown step \(head.progress) checksum \(hex(head.checksum))")
        #expect(
            scan.verifiedDataBlocks + scan.overwrittenDataBlocks == Int(head.seq) - 2, "Swift reads C's data blocks")

        let second = try bootAndShutDown(disk: path, seconds: 0.2)
        #expect(
            second.consoleLines.map(\.text).contains(
                "disk: resumed at record \(head.seq) (boot 1, clean shutdown: yes)"),
            "\(second.consoleLines.map(\.text))")
        scan = try DiskJournalScan.read(path: path)
        #expect(scan.firstCorruption == nil && scan.boots == 2 && scan.cleanShutdown && scan.oldestSeq == 1)
    }

    @Test(
        "a guest without a disk and a guest on a foreign disk run on without a journal",
        .enabled(if: Requirement.kvm.met, Requirement.kvm.why))
    func foreignDisk() throws {
        let scratch = Scratch("kvm-disk-foreign")
        let path = scratch.file("disk.img")
        try DiskJournal.createDisk(path: path, bytes: 1 << 20)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.write(contentsOf: Data("not a journal".utf8))
        try handle.close()
        let guest = try bootAndShutDown(disk: path, seconds: 0.1)
        #expect(guest.consoleLines.contains { $0.text.hasPrefix("disk: sector 0 is not a Ferry journal") })
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)).prefix(13) == Data("not a journal".utf8))
    }

    /// A disk read lands in guest memory through the VMM (pread), which KVM's dirty log does not
    /// see: the host-write log must report its pages, or a migration would miss them.
    @Test(
        "a disk read into guest memory is reported by the dirty tracker",
        .enabled(if: Requirement.kvm.met, Requirement.kvm.why))
    func diskReadIsTracked() throws {
        let scratch = Scratch("kvm-disk-dirty")
        let path = scratch.file("disk.img")
        try DiskJournal.createDisk(path: path, bytes: 1 << 20)
        let journal = try DiskJournal.boot(path: path, seed: 4)
        journal.close()
        let memory = AnonymousMemory(mebibytes: 16)
        let guest = try KVMGuest(
            memory: memory.base, size: memory.size, parameters: KVMGuestParameters(seed: 1), logger: logger)
        let disk = try KVMDisk(path: path)
        let tracker = guest.makeDirtyTracker()
        try tracker.start()
        let pageCount = memory.size / KVMGuestLayout.pageSize
        var discard = DirtyBitmap(count: pageCount)
        try tracker.harvest(into: &discard)
        // A request to read sectors 0…8 into the page at 0x300000 (as the program would place it).
        let request = 0x60000
        let buffer = 0x30_0000
        memory.base.storeBytes(of: UInt64(0), toByteOffset: request, as: UInt64.self)
        memory.base.storeBytes(of: UInt32(9), toByteOffset: request + 8, as: UInt32.self)
        memory.base.storeBytes(of: UInt32(1), toByteOffset: request + 12, as: UInt32.self)
        memory.base.storeBytes(of: UInt64(buffer), toByteOffset: request + 16, as: UInt64.self)
        var dirty = DirtyBitmap(count: pageCount)
        try tracker.harvest(into: &dirty)
        #expect(!dirty[buffer / 4096], "nothing wrote the buffer yet")
        #expect(disk.serve(requestAt: request, machine: guest.machine) == nil)
        #expect(memory.base.load(fromByteOffset: request + 24, as: UInt32.self) == 0, "status OK")
        #expect(memory.base.load(fromByteOffset: buffer, as: UInt64.self) == DiskJournalFormat.superblockMagic)
        try tracker.harvest(into: &dirty)
        #expect(dirty[buffer / 4096] && dirty[buffer / 4096 + 1], "both pages the 9 sectors landed in")
        #expect(dirty[request / 4096], "the status the VMM stored")
        #expect(dirty.popcount() == 3)

        // Out of range and a buffer outside memory: refused by status, nothing written.
        memory.base.storeBytes(of: UInt64(1 << 20), toByteOffset: request, as: UInt64.self)
        #expect(disk.serve(requestAt: request, machine: guest.machine) == nil)
        #expect(memory.base.load(fromByteOffset: request + 24, as: UInt32.self) == 2)
        memory.base.storeBytes(of: UInt64(0), toByteOffset: request, as: UInt64.self)
        memory.base.storeBytes(of: UInt64(memory.size - 512), toByteOffset: request + 16, as: UInt64.self)
        #expect(disk.serve(requestAt: request, machine: guest.machine) == nil)
        #expect(memory.base.load(fromByteOffset: request + 24, as: UInt32.self) == 3)
    }

    /// The blackout releases the disk; a failed handover takes it back, or, when another writer
    /// holds it by then, detaches it: the program's journal stops instead of writing a disk it lost.
    @Test(
        "a failed handover takes the disk back, or runs on without it when another writer has it",
        .enabled(if: Requirement.kvm.met, Requirement.kvm.why))
    func failedHandover() throws {
        let scratch = Scratch("kvm-disk-handover")
        let path = scratch.file("disk.img")
        try DiskJournal.createDisk(path: path, bytes: 4 << 20)
        let memory = AnonymousMemory(mebibytes: 16)
        let guest = try KVMGuest(
            memory: memory.base, size: memory.size,
            parameters: KVMGuestParameters(seed: 2, vcpus: 1, writesPerSecond: 50_000, journalInterval: 100),
            logger: logger)
        guest.attach(disk: try KVMDisk(path: path))
        let migratable = KVMMigratableGuest(guest)
        guest.start()
        usleep(300_000)
        _ = migratable.pause()
        let sections = try migratable.deviceState()
        #expect(try KVMDiskSection.find(in: sections) == KVMDiskSection(path: path, sectors: 8192))
        #expect(guest.disk?.isLocked == false, "released at the blackout")
        #expect(ImageLock.conflict(path: path) == nil)
        migratable.resume()
        #expect(guest.disk?.isLocked == true, "taken back")
        usleep(100_000)

        _ = migratable.pause()
        _ = try migratable.deviceState()
        let thief = try ImageLock.acquire(path: path)  // the destination, say
        migratable.resume()
        #expect(guest.disk == nil, "detached: the disk belongs to another writer now")
        usleep(100_000)
        thief.release()
        _ = try migratable.shutdown()
        #expect(guest.consoleLines.contains { $0.text == "disk: write failed, journal stopped; status 1" })
        let scan = try DiskJournalScan.read(path: path)
        #expect(scan.firstCorruption == nil && !scan.cleanShutdown && scan.boots == 1)
    }

    @Test(
        "a disk in use by another writer is refused, naming it", .enabled(if: Requirement.kvm.met, Requirement.kvm.why))
    func lockedDisk() throws {
        let scratch = Scratch("kvm-disk-locked")
        let path = scratch.file("disk.img")
        try DiskJournal.createDisk(path: path, bytes: 1 << 20)
        let first = try KVMDisk(path: path)
        do {
            _ = try KVMDisk(path: path)
            Issue.record("a second writer opened the disk")
        } catch {
            #expect(error.message.contains("in use") && error.message.contains(path), "\(error)")
        }
        // What the destination checks before VERIFIED, without taking the lock.
        #expect(throws: KVMError.self) { try KVMDisk.checkOpenable(path: path, sectors: 2048) }
        first.release()
        try KVMDisk.checkOpenable(path: path, sectors: 2048)
        #expect(throws: KVMError.self) { try KVMDisk.checkOpenable(path: path, sectors: 4096) }
        #expect(throws: KVMError.self) { try KVMDisk.checkOpenable(path: scratch.file("missing"), sectors: 2048) }
        _ = try KVMDisk(path: path)
    }

    @Test(
        "a KVM guest with a disk migrates over loopback; the journal continues without a gap",
        .enabled(if: Requirement.kvm.met, Requirement.kvm.why))
    func migratesWithItsDisk() throws {
        let scratch = Scratch("kvm-disk-migrate")
        let size = 32 << 20
        let source = scratch.file("source.img")
        let diskPath = scratch.file("disk.img")
        try ImageFile.create(path: source, size: size, overwrite: true)
        try DiskJournal.createDisk(path: diskPath, bytes: 8 << 20)
        let parameters = KVMGuestParameters(seed: 8, vcpus: 2, writesPerSecond: 20_000, journalInterval: 50)

        var destinationOptions = DestinationOptions(
            listen: try Endpoint.parse("127.0.0.1:0"), imagePath: scratch.file("destination.img"),
            runFor: .seconds(0.5), acceptTimeout: .milliseconds(20_000))
        destinationOptions.handoffTimeout = .milliseconds(10_000)
        let destinationAgent = DestinationAgent(options: destinationOptions, logger: logger)
        let port = try destinationAgent.bind()
        let received = BackgroundThread { try destinationAgent.run() }

        let region = try MappedRegion.mapFile(path: source, writable: true)
        let guest = try KVMGuest(memory: region.base, size: size, parameters: parameters, logger: logger)
        guest.attach(disk: try KVMDisk(path: diskPath))
        guest.start()
        // The boot reads the whole ring (4096 sector requests): on a loaded host that takes a
        // while, and a migration during it would boot the journal on the destination.
        let booted = MonotonicClock.now() + 10_000_000_000
        while !guest.consoleLines.contains(where: { $0.text.hasPrefix("disk:") }) && MonotonicClock.now() < booted {
            usleep(10_000)
        }
        usleep(400_000)
        var options = SourceOptions(
            destination: try Endpoint.parse("127.0.0.1:\(port)"),
            settings: ConvergenceSettings(downtimeTarget: .seconds(0.05)))
        options.handoffTimeout = .milliseconds(5_000)
        let agent = SourceAgent(guest: KVMMigratableGuest(guest), imagePath: source, options: options, logger: logger)
        let report: MigrationReport
        do {
            report = try agent.migrate()
        } catch {
            _ = try? guest.shutdown(timeoutSeconds: 5)
            _ = try? received.wait()
            throw error
        }
        let result = try received.wait()
        #expect(
            report.guestLocation == .destination && result.outcome.failure == nil, "\(result.outcome.failure ?? "")")
        #expect(!(guest.disk?.isLocked ?? true), "the source gave the disk up")
        let console = result.kvmConsole.map(\.text)
        #expect(console.contains { $0.hasPrefix("kvm-guest: vcpu 0 shutdown step ") }, "\(console)")
        #expect(
            !console.contains { $0.hasPrefix("disk:") },
            "the destination did not boot again: \(console.filter { $0.hasPrefix("disk:") })")

        let scan = try DiskJournalScan.read(path: diskPath)
        let head = try #require(scan.head)
        #expect(scan.firstCorruption == nil && scan.tornSector == nil, "\(String(describing: scan.firstCorruption))")
        #expect(scan.oldestSeq == 1 && scan.boots == 1 && scan.cleanShutdown, "one boot, one chain")
        // Records before the handover (up to 0.4 s × 200/s) and after it on the destination.
        let sourceRecords = report.vcpuSteps[0] / 50
        #expect(sourceRecords > 10 && head.seq > sourceRecords + 20, "source \(sourceRecords), head \(head.seq)")
        #expect(head.progress == result.report.vcpuSteps[0], "the last record is the destination's vCPU 0 at shutdown")
        #expect(scan.verifiedDataBlocks + scan.overwrittenDataBlocks == Int(head.seq) - 2)
    }

    /// The guest boots on a disk whose ring is full and reads it (512 ring reads, then 4095 for the chain) while the
    /// migration's pre-copy runs: the sectors the VMM reads into guest memory are host writes
    /// only the host-write log sees. With the destination held (`--run-for 0`) its image must
    /// equal the source's byte for byte, including the sector buffer the VMM filled last.
    @Test(
        "disk reads into guest memory during pre-copy arrive at the destination",
        .enabled(if: Requirement.kvm.met, Requirement.kvm.why))
    func diskReadsDuringPrecopyArrive() throws {
        let scratch = Scratch("kvm-disk-precopy")
        let size = 8 << 20
        let source = scratch.file("source.img")
        let destination = scratch.file("destination.img")
        let diskPath = scratch.file("disk.img")
        try ImageFile.create(path: source, size: size, overwrite: true)
        try DiskJournal.createDisk(path: diskPath, bytes: 8 << 20)
        let journal = try DiskJournal.boot(path: diskPath, seed: 6)
        for step in 0..<5000 { try journal.appendStep(progress: UInt64(step), checksum: 0) }
        journal.close()

        let destinationOptions = DestinationOptions(
            listen: try Endpoint.parse("127.0.0.1:0"), imagePath: destination, runFor: .seconds(0),
            acceptTimeout: .milliseconds(20_000))
        let destinationAgent = DestinationAgent(options: destinationOptions, logger: logger)
        let port = try destinationAgent.bind()
        let received = BackgroundThread { try destinationAgent.run() }
        let region = try MappedRegion.mapFile(path: source, writable: true)
        let parameters = KVMGuestParameters(seed: 6, vcpus: 1, writesPerSecond: 1000, journalInterval: 100)
        let guest = try KVMGuest(memory: region.base, size: size, parameters: parameters, logger: logger)
        guest.attach(disk: try KVMDisk(path: diskPath))
        var options = SourceOptions(
            destination: try Endpoint.parse("127.0.0.1:\(port)"),
            settings: ConvergenceSettings(downtimeTarget: .seconds(0.05)))
        options.handoffTimeout = .milliseconds(5_000)
        let agent = SourceAgent(guest: KVMMigratableGuest(guest), imagePath: source, options: options, logger: logger)
        guest.start()
        let report = try agent.migrate()
        _ = try received.wait()
        #expect(report.guestLocation == .destination)
        let scanned = guest.consoleLines.contains { $0.text.hasPrefix("disk: resumed at record 5001") }
        print("KVM disk pre-copy: the source \(scanned ? "finished" : "was still in") its ring scan at the blackout")
        try region.sync()
        let image = try MappedRegion.mapFile(path: destination, writable: false)
        let sectorBuffer = 0x61000
        #expect(
            memcmp(image.base + sectorBuffer, region.base + sectorBuffer, 512) == 0,
            "the sector buffer the VMM read into differs at the destination")
        #expect(memcmp(image.base, region.base, size) == 0, "the destination's image differs from the source's")
    }

    private func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: 16 - digits.count) + digits
    }
}
