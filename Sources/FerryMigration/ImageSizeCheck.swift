import FerrySystem
import Logging

/// The image file truncated under the running guest (issue 4): every access beyond the file's new
/// end would raise SIGBUS and kill the source with its guest. `BusErrorGuard` turns those accesses
/// into zero pages, and the source checks after every harvest and before COMMIT whether that
/// happened or the file is shorter than its mapping, and then aborts the migration (the guest
/// stays on the source; the destination discards its partial image). Growth of the file is
/// harmless: the mapping, and the guest, keep the size they had; the bytes added are not migrated.
extension SourceAgent {
    func guardImage(log: Logger) {
        guard busGuard == nil, imagePath != nil else { return }
        do {
            busGuard = try BusErrorGuard(base: memory.regions[0].base, length: size, pageSize: pageSize)
        } catch {
            log.warning(
                "no SIGBUS guard: a truncated image file will kill the process",
                metadata: ["migration.error": "\(error)"])
        }
    }

    /// The error to abort with when the image file no longer covers the guest's memory, else nil.
    func imageShrank() -> MigrationError? {
        guard let imagePath else { return nil }
        let replaced = busGuard?.replaced
        let fileSize = (try? ImageFile.size(path: imagePath)) ?? size
        guard replaced != nil || fileSize < size else { return nil }
        let lost = min(fileSize, replaced?.firstOffset ?? fileSize)
        return MigrationError(
            .system,
            "image file \(imagePath) changed size under the running guest: \(fileSize) bytes now, \(size) mapped; the guest's memory from byte \(lost) on is gone (reads as zero)\(replaced.map { ", \($0.pages) page(s) touched there" } ?? ""). Migration aborted; restore the image before migrating this guest",
            guest: .source)
    }
}
