import FerryGuest
import FerryKVM
import FerryMigration
import FerrySystem
import Foundation
import Logging

/// `ferry run --guest kvm`: runs the KVM guest program on an image and shows its console.
struct KVMRun {
    var image: String
    var size: SizeOption?
    var rate: Rate?
    var vcpus: Int
    var seed: UInt64
    var steps: String?
    var duration: DurationOption?
    var disk: DiskOptions

    /// Returns the run's report (`--json` writes it).
    func run(logger: Logger, draft: ReportDraft) throws -> MigrationReport {
        draft.minimal.workload = "kvm\(rate.map { ":\($0)" } ?? "")"
        if !ImageFile.exists(path: image) {
            guard let size else {
                throw CommandError.configuration("image \(image) does not exist; give --size to create it")
            }
            try ImageFile.create(path: image, size: size.bytes, overwrite: false)
        }
        let lock = try ImageLock.acquire(path: image)
        defer { lock.release() }
        let bytes = try ImageFile.size(path: image)
        draft.minimal.imageBytes = UInt64(max(bytes, 0))
        var parameters = KVMGuestParameters(seed: seed, vcpus: vcpus)
        if let rate {
            parameters.writesPerSecond = rate.pagesPerSecond(pageSize: KVMGuestLayout.pageSize)
        }
        if let steps {
            guard let limit = UInt64(steps.trimmingCharacters(in: .whitespaces)) else {
                throw CommandError.configuration("--steps '\(steps)': with --guest kvm, one step count for every vCPU")
            }
            parameters.stepLimit = limit
        }
        parameters.journalInterval = disk.kvmJournalInterval(parameters)
        let region = try MappedRegion.mapFile(path: image, writable: true)
        let guest = try KVMGuest(memory: region.base, size: bytes, parameters: parameters, logger: logger) { line in
            HumanOutput.print(line.text)
        }
        if let kvmDisk = try disk.openForKVM() { guest.attach(disk: kvmDisk) }
        let start = MonotonicClock.now()
        guest.start()
        if parameters.stepLimit != nil {
            while try !guest.waitUntilHalted(timeoutSeconds: 1) {}
        } else {
            MonotonicClock.sleep(seconds: duration?.seconds ?? 0)
        }
        if let kvmDisk = guest.disk {
            // Graceful: the program writes its clean-shutdown record and flushes; the disk is synced.
            if try !guest.shutdown(timeoutSeconds: 10) {
                HumanOutput.print("disk: the guest did not halt within 10 s of the shutdown request; synced as it is")
            }
            kvmDisk.release()
        }
        guest.stop()
        if let failure = guest.failure { throw KVMError(.guestFailed, failure) }
        let seconds = MonotonicClock.seconds(since: start)
        try region.sync()
        let total = guest.stepsPerVCPU.reduce(0, +)
        HumanOutput.print(
            "ran the KVM guest on \(image) with \(vcpus) vCPU(s) in \(String(format: "%.2f", seconds)) s; vCPU steps "
                + guest.stepsPerVCPU.map(String.init).joined(separator: ",")
                + String(
                    format: "; %.0f writes/s (%.0f MB/s of pages)", Double(total) / seconds,
                    Double(total) * 4096 / seconds / 1e6))
        return draft.ran(seconds: seconds, steps: guest.stepsPerVCPU, pageSize: KVMGuestLayout.pageSize)
    }
}
