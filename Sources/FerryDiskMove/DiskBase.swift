import FerryCodec
import FerrySystem

/// An older copy of the disk on the destination, the base of a delta move (Protocol.md 10.8):
/// `PATH.partial` starts as a copy of it (holes kept), the source learns its block hashes and sends
/// only the blocks that differ; the old copy itself is only read.
enum DiskBase {
    /// How `PATH.partial` was made from the base: `reflink` (`FICLONE`, btrfs and XFS share the
    /// blocks, no copy) or `copy_file_range` (its data extents only, copied in the kernel).
    enum CopyMethod: String, Sendable {
        case reflink
        case copyFileRange = "copy_file_range"
    }

    /// Every block's hash on the grid of `blockSize` over `diskSize` bytes of `path`: the blocks
    /// that intersect a data extent are read and hashed (past the file's end: zeros), the others
    /// are the zero block's hash without reading.
    static func blockHashes(path: String, diskSize: Int, blockSize: Int) throws -> [UInt64] {
        let file = try PositionedFile(reading: path)
        let size = min(diskSize, try file.size())
        let blockCount = (diskSize + blockSize - 1) / blockSize
        var table = [UInt64](repeating: PageHash.zeroPage(pageSize: blockSize), count: blockCount)
        guard size > 0 else { return table }
        let map = try DiskExtentMap.map(path: path, diskSize: size, blockSize: blockSize)
        let block = UnsafeMutableRawBufferPointer.allocate(byteCount: blockSize, alignment: 64)
        defer { block.deallocate() }
        for index in map.blocks {
            let offset = index * blockSize
            let read = try file.read(
                at: offset, into: UnsafeMutableRawBufferPointer(rebasing: block[0..<min(blockSize, size - offset)]))
            if read < blockSize {
                block.baseAddress!.advanced(by: read).initializeMemory(
                    as: UInt8.self, repeating: 0, count: blockSize - read)
            }
            table[index] = PageHash.hash(UnsafeRawBufferPointer(block))
        }
        return table
    }

    /// Creates `partial` as a copy of `base` cut or extended to `diskSize` bytes, holes kept: a
    /// reflink where the file system can, else each data extent with `copy_file_range`.
    static func copy(base: String, to partial: String, diskSize: Int) throws -> (
        file: PositionedFile, method: CopyMethod
    ) {
        let source = try PositionedFile(reading: base)
        let file = try PositionedFile(creating: partial)
        if file.clone(from: source) {
            try file.truncate(to: diskSize)
            return (file, .reflink)
        }
        let size = min(diskSize, try source.size())
        try file.truncate(to: diskSize)
        if size > 0 {
            let map = try DiskExtentMap.map(path: base, diskSize: size, blockSize: DiskExtentMap.granule)
            for extent in map.extents { try file.copyRange(from: source, at: extent.lowerBound, count: extent.count) }
        }
        return (file, .copyFileRange)
    }

    /// The blocks the source sends onto a base: those whose hash differs from the base's
    /// (a block of zeros where the base has data is sent too: as a zero marker).
    static func delta(source: [UInt64], base: [UInt64]) -> [Int] {
        precondition(source.count == base.count, "both tables cover the same grid")
        return source.indices.filter { source[$0] != base[$0] }
    }
}
