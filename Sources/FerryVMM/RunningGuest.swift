import FerryGuest
import FerryGuestMigration
import FerryHostModel
import FerryKVM
import FerryKVMMigration
import FerryMigration
import FerrySystem
import Glibc

/// The guest this process runs, whichever its kind: the engine's `MigratableGuest` over it (the
/// same object pauses it, migrates it and saves its state), plus what the control socket reports.
/// `mapping` owns the memory when this process mapped it (boot, restore); a guest received by
/// migration runs over the destination session's mapping instead.
final class RunningGuest: @unchecked Sendable {
    let migratable: any MigratableGuest
    let kind: GuestSpecification.Kind
    let mapping: ImageMapping?

    init(_ migratable: any MigratableGuest, kind: GuestSpecification.Kind, mapping: ImageMapping?) {
        self.migratable = migratable
        self.kind = kind
        self.mapping = mapping
    }

    /// Each vCPU's steps so far (writes for the built-in guest, loop iterations for the KVM guest).
    var stepsPerVCPU: [UInt64] {
        if let builtin = migratable as? BuiltinMigratableGuest { return builtin.guest.stepsPerVCPU }
        if let kvm = migratable as? KVMMigratableGuest { return kvm.guest.stepsPerVCPU }
        return []
    }

    /// Each vCPU thread's CPU time in this process so far, in nanoseconds (a guest that arrived
    /// by migration starts again from 0 here).
    var cpuNanosecondsPerVCPU: [UInt64] {
        if let builtin = migratable as? BuiltinMigratableGuest { return builtin.guest.cpuNanosecondsPerVCPU }
        if let kvm = migratable as? KVMMigratableGuest { return kvm.guest.cpuNanosecondsPerVCPU }
        return []
    }

    /// Why the guest failed, if it did (a KVM guest's unexpected exit).
    var failure: String? { (migratable as? KVMMigratableGuest)?.guest.failure }

    /// The path of the disk this process holds for the guest, if it has one.
    var diskPath: String? {
        if let builtin = migratable as? BuiltinMigratableGuest { return builtin.disk?.cursor.path }
        if let kvm = migratable as? KVMMigratableGuest { return kvm.guest.disk?.path }
        return nil
    }

    /// What the guest's disk says now: its path, and the built-in writer's records and failure.
    var diskStatus: JSONValue {
        if let builtin = migratable as? BuiltinMigratableGuest, let writer = builtin.disk {
            let cursor = writer.cursor
            return [
                "path": .string(cursor.path), "next_seq": JSONValue(cursor.nextSeq),
                "boot_count": JSONValue(cursor.bootCount), "records_written": JSONValue(writer.recordsWritten),
                "failure": JSONValue(writer.failure),
            ]
        }
        if let kvm = migratable as? KVMMigratableGuest, let disk = kvm.guest.disk {
            return ["path": .string(disk.path), "sectors": JSONValue(disk.sectors), "locked": .bool(disk.isLocked)]
        }
        return .null
    }

    /// Stops the guest for good, gracefully: with a disk, the built-in guest's writer finishes
    /// its record and writes the clean-shutdown record; the KVM guest's program is asked to
    /// (it has `timeoutSeconds` to halt; its vCPUs stop either way); the disk is flushed and
    /// released. Without a disk the vCPUs just stop. Returns a note when the KVM program did
    /// not halt in time.
    func shutdown(timeoutSeconds: Double) throws -> String? {
        if let builtin = migratable as? BuiltinMigratableGuest, builtin.disk != nil {
            _ = try builtin.shutdown()
            return nil
        }
        if let kvm = migratable as? KVMMigratableGuest, let disk = kvm.guest.disk {
            defer { disk.release() }
            if try !kvm.guest.shutdown(timeoutSeconds: timeoutSeconds) {
                return
                    "the guest did not halt within \(timeoutSeconds) s of the shutdown request; its disk was synced as it is"
            }
            return nil
        }
        _ = migratable.stopForHandover()
        return nil
    }

    /// Writes the guest's memory back to its image file (msync), so that a process that exits
    /// now leaves the image as the guest last wrote it.
    func flushMemory() throws(VMMError) {
        for region in migratable.memory.regions {
            guard msync(region.base, region.size, MS_SYNC) == 0 else {
                throw VMMError.system("msync", "flushing the guest's memory image")
            }
        }
    }
}

/// A guest image file mapped shared and locked by this process for the guest's life.
final class ImageMapping: @unchecked Sendable {
    let path: String
    let region: MappedRegion
    let lock: ImageLock
    /// The image's large holes as the fault-in left them (`SourceOptions.imageHoles`).
    let holes: ImageHoles

    init(path: String, size: Int, create: Bool) throws(VMMError) {
        do {
            if create && !ImageFile.exists(path: path) {
                try ImageFile.create(path: path, size: size, overwrite: false)
            }
            let actual = try ImageFile.size(path: path)
            guard actual == size else {
                throw VMMError(
                    .configuration,
                    "the image \(path) is \(actual) bytes but the guest has \(size) bytes of memory; remove the image or fix memory_bytes"
                )
            }
            lock = try ImageLock.acquire(path: path)
            region = try MappedRegion.mapFile(path: path, writable: true)
            // Resident before the guest runs, as `ferry send`'s image and a VMM's guest RAM are:
            // otherwise round 0 of a migration takes one fault per page it reads (measured: a
            // 1 GiB guest's migration took x1.3 to x1.6 as long as `ferry send`'s). Large holes
            // stay holes; the migration gets where they are.
            holes = try SourceAgent.faultIn(region, path: path, pageSize: systemPageSize)
        } catch let error as VMMError {
            throw error
        } catch {
            throw VMMError(.system, "cannot use the guest image \(path): \(error)", cause: error)
        }
        self.path = path
    }

    deinit { lock.release() }
}
