import FerryDiskMove
import FerrySystem
import Glibc

/// A guest's disk made from an image: the template's data extents copied into a new file in the
/// kernel (`copy_file_range`, a reflink where the file system shares extents), its holes left
/// holes, the file then sized to the disk. Written under a temporary name and renamed, so a crash
/// never leaves a half-copied disk under the disk's name.
enum DiskTemplate {
    static func copy(_ template: String, to path: String, sizeBytes: Int, field: String) throws(AgentAPIError) {
        let size: Int
        do { size = try ImageFile.size(path: template) } catch {
            throw AgentAPIError(
                .unprocessableContent, .invalidField,
                "\(field).template: cannot read \(template) (\(error)); give the path of a raw image on this host",
                field: "\(field).template")
        }
        guard size <= sizeBytes else {
            throw AgentAPIError(
                .unprocessableContent, .invalidField,
                "\(field).size_bytes: the template \(template) has \(size) bytes, more than the disk's \(sizeBytes);"
                    + " give the disk at least \(size) bytes", field: "\(field).size_bytes")
        }
        let partial = path + ".partial"
        do {
            try copyExtents(template, size: size, to: partial, sizeBytes: sizeBytes)
            try ImageFile.rename(from: partial, to: path)
        } catch {
            unlink(partial)
            throw AgentAPIError(
                .unprocessableContent, .invalidField,
                "\(field).template: copying \(template) to \(path) failed (\(error)); check the space and the"
                    + " permissions there", field: "\(field).template")
        }
    }

    private static func copyExtents(_ template: String, size: Int, to partial: String, sizeBytes: Int) throws {
        let source = try PositionedFile(reading: template)
        let target = try PositionedFile(creating: partial)
        let map = try DiskExtentMap.map(path: template, diskSize: size, blockSize: DiskExtentMap.granule)
        try target.truncate(to: sizeBytes)
        for extent in map.extents {
            try target.copyRange(from: source, at: extent.lowerBound, count: extent.count)
        }
        try target.sync()
    }
}
