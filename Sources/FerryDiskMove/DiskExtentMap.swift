import FerrySystem

/// Where a disk file holds data, as the file system says (`SEEK_DATA`/`SEEK_HOLE` through
/// `ImageHoles`), and which blocks of the move's grid that makes worth sending: a block is sent
/// when any of its bytes lies in a data extent; a block wholly in holes is never read.
public struct DiskExtentMap: Sendable, Equatable {
    /// The granule the holes are measured in (a file system block; holes are never smaller).
    public static let granule = 4096

    public let diskSize: Int
    public let blockSize: Int
    /// The data extents, in bytes, in order, not touching each other.
    public let extents: [Range<Int>]
    /// The blocks that intersect an extent, in increasing order.
    public let blocks: [Int]

    /// Bytes in the data extents.
    public var allocatedBytes: Int { extents.reduce(0) { $0 + $1.count } }
    /// Blocks on the grid, ⌈disk size / block size⌉.
    public var blockCount: Int { (diskSize + blockSize - 1) / blockSize }

    public init(diskSize: Int, blockSize: Int, extents: [Range<Int>]) {
        self.diskSize = diskSize
        self.blockSize = blockSize
        self.extents = extents
        var blocks: [Int] = []
        for extent in extents where !extent.isEmpty {
            let first = max(extent.lowerBound / blockSize, (blocks.last ?? -1) + 1)
            let last = (extent.upperBound - 1) / blockSize
            if first <= last { blocks.append(contentsOf: first...last) }
        }
        self.blocks = blocks
    }

    /// Maps the open file at `path` of `diskSize` bytes.
    public static func map(path: String, diskSize: Int, blockSize: Int) throws -> DiskExtentMap {
        let holes = try ImageHoles(path: path, pageSize: granule)
        let granules = (diskSize + granule - 1) / granule
        var extents: [Range<Int>] = []
        var cursor = 0
        try holes.forEachHole(in: 0..<granules) { hole in
            if hole.lowerBound > cursor { extents.append(cursor * granule..<min(hole.lowerBound * granule, diskSize)) }
            cursor = hole.upperBound
        }
        if cursor < granules { extents.append(cursor * granule..<diskSize) }
        return DiskExtentMap(diskSize: diskSize, blockSize: blockSize, extents: extents)
    }
}
