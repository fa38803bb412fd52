import FerryGuest
import FerryMigration
import FerrySystem
import Glibc
import Logging

/// "Migrated equals never migrated": the reference run and the byte-for-byte comparison.
public enum Transparency {
    /// Runs the guest on `imagePath` from its initial registers until each vCPU has done exactly
    /// `steps[v]` writes, then stops it and flushes the image. Unpaced: only the step counts
    /// matter, so the reference takes CPU time, not the original run's wall time.
    public static func runReference(imagePath: String, setup: GuestSetup, steps: [UInt64], logger: Logger) throws {
        guard steps.count == setup.configuration.vcpus else {
            throw MigrationError(
                .configuration, "\(steps.count) step counts given for \(setup.configuration.vcpus) vCPUs",
                guest: .notHere)
        }
        let region = try MappedRegion.mapFile(path: imagePath, writable: true)
        let guest = try Guest(
            memory: region.base, size: region.size, configuration: setup.configuration,
            stepLimits: steps, paced: false, logger: logger)
        guest.start()
        guest.waitUntilStepLimits()
        _ = guest.stop()
        try region.sync()
    }

    /// nil when both files hold the same bytes, else a sentence naming the first difference.
    public static func difference(between first: String, and second: String) throws -> String? {
        let a = try MappedRegion.mapFile(path: first, writable: false)
        let b = try MappedRegion.mapFile(path: second, writable: false)
        guard a.size == b.size else { return "\(first) has \(a.size) bytes, \(second) has \(b.size)" }
        let chunk = 1 << 20
        var offset = 0
        while offset < a.size {
            let length = min(chunk, a.size - offset)
            if memcmp(a.base + offset, b.base + offset, length) != 0 {
                var byte = offset
                while a.base.load(fromByteOffset: byte, as: UInt8.self)
                    == b.base.load(fromByteOffset: byte, as: UInt8.self)
                { byte += 1 }
                let pageSize = systemPageSize
                var differingPages = 0
                var page = byte / pageSize
                while page < a.size / pageSize {
                    if memcmp(a.base + page * pageSize, b.base + page * pageSize, pageSize) != 0 { differingPages += 1 }
                    page += 1
                }
                return
                    "\(first) and \(second) differ from byte \(byte) (page \(byte / pageSize)); \(differingPages) page(s) differ"
            }
            offset += length
        }
        return nil
    }
}
