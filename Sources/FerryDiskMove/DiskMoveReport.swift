/// What one side of a disk move did, built apart from the phases that did it.
public struct DiskMoveReport: Sendable, Equatable {
    public var diskSize: Int = 0
    /// Bytes in the source's data extents.
    public var allocatedBytes: Int = 0
    public var blockSize: Int = 0
    /// Blocks on the grid, and the ones that travelled, by encoding.
    public var blockCount: Int = 0
    public var blocksSent: Int = 0
    public var zeroBlocks: Int = 0
    public var lz4Blocks: Int = 0
    public var rawBlocks: Int = 0
    /// Connections lost and resumed, and the blocks sent again after them (in flight when lost).
    public var resumes: Int = 0
    public var blocksResent: Int = 0
    /// Frame bytes this side sent and received (headers and payloads; before encryption).
    public var wireBytesSent: UInt64 = 0
    public var wireBytesReceived: UInt64 = 0
    /// Bytes the destination wrote into its copy (non-zero 4 KiB pages).
    public var bytesWritten: UInt64 = 0
    public var digest: UInt64 = 0
    /// A move onto an older copy (Protocol.md 10.8): blocks left out because the copy held them,
    /// how the destination started from it (`reflink` or `copy_file_range`; empty: no base), and
    /// the seconds this side spent on it (the source: hashing its disk; the destination: copying
    /// and hashing the old copy, and hashing the result to verify it).
    public var blocksUnchanged: Int = 0
    public var baseCopy: String = ""
    public var baseSeconds: Double = 0
    /// Bytes of the old copy's block hash table (`DISK_BASE_HASHES`, destination → source).
    public var baseHashBytes: UInt64 = 0
    public var seconds: Double = 0
    /// `plain`, `authenticated` or `encrypted (CIPHER)`.
    public var security: String = "plain"
    public var peer: String = ""

    public init() {}

    /// The wire bytes that carried the disk (what the source sent).
    public var wireBytes: UInt64 { max(wireBytesSent, wireBytesReceived) }

    /// Allocated bytes moved per second, in MB/s (10^6).
    public var megabytesPerSecond: Double { seconds > 0 ? Double(allocatedBytes) / seconds / 1e6 : 0 }
}

/// Where a move stands, for a progress line: `blocksDone` of `blocksTotal` blocks, `wireBytes` so far.
public struct DiskMoveProgress: Sendable {
    public var blocksDone: Int
    public var blocksTotal: Int
    public var wireBytes: UInt64
    public var elapsedSeconds: Double

    public var fraction: Double { blocksTotal > 0 ? Double(blocksDone) / Double(blocksTotal) : 1 }
    /// Seconds left at the rate so far; nil before anything moved.
    public var etaSeconds: Double? {
        guard blocksDone > 0, elapsedSeconds > 0 else { return nil }
        return elapsedSeconds * Double(blocksTotal - blocksDone) / Double(blocksDone)
    }
}

public typealias DiskMoveProgressHandler = @Sendable (DiskMoveProgress) -> Void
