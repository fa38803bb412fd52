import FerryProtocol
import FerrySystem

/// Whether a destination takes the disk a `DISK_HELLO` offers, decided before any block is
/// sent (Protocol.md 10.3): a common version, no file at the path (unless replacing it), and
/// room for the disk's allocated bytes in the file system's free space (`statvfs`).
enum DiskAdmission {
    /// The `REFUSE` to send, naming the problem, the numbers and the fix; nil: take the disk.
    static func refusal(for hello: DiskHello, path: String, overwrite: Bool) throws -> Refuse? {
        if hello.versionMin > DiskMoveLimits.version || hello.versionMax < DiskMoveLimits.minVersion {
            return Refuse(
                reason: .version,
                message:
                    "the source speaks disk-move versions \(hello.versionMin)…\(hello.versionMax), this destination \(DiskMoveLimits.minVersion)…\(DiskMoveLimits.version): use the same ferry release on both hosts"
            )
        }
        if !overwrite && ImageFile.exists(path: path) {
            return Refuse(
                reason: .imageExists,
                message: "\(path) exists on the destination: remove it, or receive with --force to replace it")
        }
        let free = try ImageFile.freeBytes(directoryOf: path)
        if free < hello.allocatedBytes {
            return Refuse(
                reason: .disk,
                message:
                    "not enough free space for \(path): the disk has \(hello.allocatedBytes) bytes allocated, the destination's file system has \(free) bytes free; free \(hello.allocatedBytes - free) bytes or choose another directory"
            )
        }
        return nil
    }
}
