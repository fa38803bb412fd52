/// The disk move (Protocol.md section 10): one disk file from a source to a destination, only its
/// allocated extents, in fixed-size blocks on a grid over the file.
public enum DiskMoveLimits {
    /// The disk-move protocol's own versions (`DISK_HELLO.version_min/max`): 2 adds a move onto
    /// an older copy (`DISK_BASE_HASHES`, `DISK_DELTA`) and resuming several streams.
    public static let version: UInt16 = 2
    public static let minVersion: UInt16 = 1
    /// Block hashes per `DISK_BASE_HASHES` frame, at most (64 KiB of hashes).
    public static let maxHashesPerFrame = 8192
    /// Blocks a destination offers base hashes for, at most (a table of 128 MiB; 1 TiB of 64 KiB
    /// blocks); a larger disk moves without a delta.
    public static let maxBaseBlocks = 1 << 24
    /// Block sizes a peer may announce: powers of two in this range.
    public static let minBlockSize = 4096
    public static let maxBlockSize = 1 << 20
    /// The block size the reference source uses (Protocol.md 10.1 says why).
    public static let defaultBlockSize = 1 << 16
    /// Bytes before a `DISK_BLOCK`'s data.
    public static let blockHeaderSize = 24
    /// Largest disk: 2^62 bytes (block arithmetic stays far from overflow).
    public static let maxDiskSize: UInt64 = 1 << 62
    /// The codecs a disk move uses: zero markers, raw and LZ4 (no `words`).
    public static let codecs: CodecSet = [.zero, .raw, .lz4]
    /// Connections that carry blocks: 1 … 16.
    public static let maxStreams = 16
    /// The reference source's striping: runs of this many blocks of its sending order go to the
    /// streams in turn (a source may stripe as it likes; each stream's blocks stay in order).
    public static let stripeBlocks = 16

    /// The stream the reference source sends the `position`-th block it sends on, with `streams` streams.
    public static func stream(ofPosition position: Int, streams: Int) -> Int { (position / stripeBlocks) % streams }
}

/// `DISK_HELLO` (source → destination, type 25): what the source will send.
public struct DiskHello: FrameMessage, ValidatingMessage, Equatable {
    public static let frameType = FrameType.diskHello
    /// ASCII `FERRYDSK`.
    public static let magic: [UInt8] = Array("FERRYDSK".utf8)

    public var versionMin: UInt16
    public var versionMax: UInt16
    public var blockSize: UInt32
    /// The file's size in bytes.
    public var diskSize: UInt64
    /// Bytes in the file's data extents (`SEEK_DATA`/`SEEK_HOLE`): what the destination may need.
    public var allocatedBytes: UInt64
    /// `DISK_BLOCK` frames that follow `DISK_ACCEPT`.
    public var blocksToSend: UInt64
    public var codecs: CodecSet
    /// Connections that carry blocks (1 … 16): this one and `streamCount - 1` that open with `DISK_JOIN`.
    public var streamCount: UInt16
    /// Labels for logs, cut to 255 UTF-8 bytes when encoded.
    public var sourceName: String
    public var diskName: String

    public init(
        versionMin: UInt16 = DiskMoveLimits.minVersion, versionMax: UInt16 = DiskMoveLimits.version,
        blockSize: UInt32, diskSize: UInt64, allocatedBytes: UInt64, blocksToSend: UInt64,
        codecs: CodecSet = DiskMoveLimits.codecs, streamCount: UInt16 = 1, sourceName: String, diskName: String
    ) {
        self.streamCount = streamCount
        self.versionMin = versionMin
        self.versionMax = versionMax
        self.blockSize = blockSize
        self.diskSize = diskSize
        self.allocatedBytes = allocatedBytes
        self.blocksToSend = blocksToSend
        self.codecs = codecs
        self.sourceName = sourceName
        self.diskName = diskName
    }

    /// Blocks on the grid: ⌈`disk_size` / `block_size`⌉.
    public var blockCount: UInt64 { (diskSize + UInt64(blockSize) - 1) / UInt64(blockSize) }

    public func validate() throws(ProtocolError) {
        if versionMin == 0 || versionMin > versionMax {
            throw invalid("DISK_HELLO", "version range \(versionMin)…\(versionMax) is empty or starts at 0")
        }
        let size = Int(blockSize)
        if size < DiskMoveLimits.minBlockSize || size > DiskMoveLimits.maxBlockSize || size & (size - 1) != 0 {
            throw invalid(
                "DISK_HELLO",
                "block_size \(blockSize) is not a power of two in \(DiskMoveLimits.minBlockSize)…\(DiskMoveLimits.maxBlockSize)"
            )
        }
        if diskSize == 0 || diskSize > DiskMoveLimits.maxDiskSize {
            throw invalid("DISK_HELLO", "disk_size \(diskSize) is outside 1…2^62")
        }
        if allocatedBytes > diskSize {
            throw invalid("DISK_HELLO", "allocated_bytes \(allocatedBytes) exceeds disk_size \(diskSize)")
        }
        if blocksToSend > blockCount {
            throw invalid("DISK_HELLO", "blocks_to_send \(blocksToSend) exceeds the disk's \(blockCount) blocks")
        }
        if !codecs.contains(.zero) || !codecs.contains(.raw) {
            throw invalid("DISK_HELLO", "codecs 0x\(String(codecs.rawValue, radix: 16)) lack zero or raw")
        }
        if streamCount == 0 || Int(streamCount) > DiskMoveLimits.maxStreams {
            throw invalid("DISK_HELLO", "stream_count \(streamCount) is outside 1…\(DiskMoveLimits.maxStreams)")
        }
    }

    public func encode(into out: inout [UInt8]) {
        requireValid()
        out.append(contentsOf: Self.magic)
        out.appendLittleEndian(versionMin)
        out.appendLittleEndian(versionMax)
        out.appendLittleEndian(blockSize)
        out.appendLittleEndian(diskSize)
        out.appendLittleEndian(allocatedBytes)
        out.appendLittleEndian(blocksToSend)
        out.appendLittleEndian(codecs.rawValue)
        out.appendLittleEndian(streamCount)
        out.appendZeros(2)
        out.appendStr16(sourceName.truncatedUTF8(to: StringLimits.name))
        out.appendStr16(diskName.truncatedUTF8(to: StringLimits.name))
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "DISK_HELLO")
        if try reader.readBytes(8, "magic") != Self.magic {
            throw ProtocolError(
                .badMagic,
                "the first frame is not a Ferry DISK_HELLO (magic 'FERRYDSK' missing): is the peer ferry disk send?")
        }
        versionMin = try reader.read(UInt16.self, "version_min")
        versionMax = try reader.read(UInt16.self, "version_max")
        blockSize = try reader.read(UInt32.self, "block_size")
        diskSize = try reader.read(UInt64.self, "disk_size")
        allocatedBytes = try reader.read(UInt64.self, "allocated_bytes")
        blocksToSend = try reader.read(UInt64.self, "blocks_to_send")
        codecs = CodecSet(rawValue: try reader.read(UInt32.self, "codecs"))
        streamCount = try reader.read(UInt16.self, "stream_count")
        try reader.reserved(2)
        sourceName = try reader.str16("source_name", limit: StringLimits.name)
        diskName = try reader.str16("disk_name", limit: StringLimits.name)
        try reader.finish()
        try validate()
    }
}

/// `DISK_ACCEPT` (destination → source, type 26): the destination has room and a `.partial` file.
public struct DiskAccept: FrameMessage, ValidatingMessage, Equatable {
    public static let frameType = FrameType.diskAccept

    public var version: UInt16
    /// Version 2: bit 0 `base`, the destination holds an older copy and sends its block hashes
    /// (`DISK_BASE_HASHES`) next. 0 in version 1.
    public var flags: UInt16
    public static let baseFlag: UInt16 = 1
    public var codecs: CodecSet
    /// Free bytes where the disk goes (informational).
    public var freeBytes: UInt64
    /// Names this move; with `moveToken` it lets a new connection resume it (`DISK_RESUME`).
    public var moveID: UInt64
    /// A CSPRNG secret, never all zero, sent only here.
    public var moveToken: SessionToken
    public var destinationName: String

    public init(
        version: UInt16 = DiskMoveLimits.version, flags: UInt16 = 0, codecs: CodecSet = DiskMoveLimits.codecs,
        freeBytes: UInt64, moveID: UInt64, moveToken: SessionToken, destinationName: String
    ) {
        self.version = version
        self.flags = flags
        self.codecs = codecs
        self.freeBytes = freeBytes
        self.moveID = moveID
        self.moveToken = moveToken
        self.destinationName = destinationName
    }

    public func validate() throws(ProtocolError) {
        if version == 0 { throw invalid("DISK_ACCEPT", "version is 0") }
        if flags & ~Self.baseFlag != 0 || (version < 2 && flags != 0) {
            throw invalid("DISK_ACCEPT", "flags 0x\(String(flags, radix: 16)) are not defined in version \(version)")
        }
        if !codecs.contains(.zero) || !codecs.contains(.raw) {
            throw invalid("DISK_ACCEPT", "codecs 0x\(String(codecs.rawValue, radix: 16)) lack zero or raw")
        }
        if moveToken.isNone { throw invalid("DISK_ACCEPT", "move_token is all zero") }
    }

    public func encode(into out: inout [UInt8]) {
        requireValid()
        out.appendLittleEndian(version)
        out.appendLittleEndian(flags)
        out.appendLittleEndian(codecs.rawValue)
        out.appendLittleEndian(freeBytes)
        out.appendLittleEndian(moveID)
        out.appendToken(moveToken)
        out.appendStr16(destinationName.truncatedUTF8(to: StringLimits.name))
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "DISK_ACCEPT")
        version = try reader.read(UInt16.self, "version")
        flags = try reader.read(UInt16.self, "flags")
        codecs = CodecSet(rawValue: try reader.read(UInt32.self, "codecs"))
        freeBytes = try reader.read(UInt64.self, "free_bytes")
        moveID = try reader.read(UInt64.self, "move_id")
        moveToken = try reader.token("move_token")
        destinationName = try reader.str16("destination_name", limit: StringLimits.name)
        try reader.finish()
        try validate()
    }
}

/// `DISK_RESUME` (source → destination, type 30): the first frame of a new connection (after the
/// authentication handshake) that continues a move whose connection was lost.
public struct DiskResume: FrameMessage, Equatable {
    public static let frameType = FrameType.diskResume
    public var moveID: UInt64
    public var moveToken: SessionToken

    public init(moveID: UInt64, moveToken: SessionToken) {
        self.moveID = moveID
        self.moveToken = moveToken
    }

    public func encode(into out: inout [UInt8]) {
        out.appendLittleEndian(moveID)
        out.appendToken(moveToken)
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "DISK_RESUME")
        moveID = try reader.read(UInt64.self, "move_id")
        moveToken = try reader.token("move_token")
        try reader.finish()
    }
}

/// `DISK_RESUME_STATE` (destination → source, type 31): how many of the announced blocks the
/// destination holds verified (the first `blocks_held` the source sent, in order).
public struct DiskResumeState: FrameMessage, Equatable {
    public static let frameType = FrameType.diskResumeState
    public var blocksHeld: UInt64
    /// The index of the next block the destination accepts (after the last one it holds).
    public var nextBlock: UInt64

    public init(blocksHeld: UInt64, nextBlock: UInt64) {
        self.blocksHeld = blocksHeld
        self.nextBlock = nextBlock
    }

    public func encode(into out: inout [UInt8]) {
        out.appendLittleEndian(blocksHeld)
        out.appendLittleEndian(nextBlock)
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "DISK_RESUME_STATE")
        blocksHeld = try reader.read(UInt64.self, "blocks_held")
        nextBlock = try reader.read(UInt64.self, "next_block")
        try reader.finish()
    }
}

/// `DISK_STREAMS_HELD` (destination → source, type 36, version 2): right after
/// `DISK_RESUME_STATE` (stream 0's entry) when the move has several streams, the same for
/// streams 1 … `count`: how many of the blocks the source sent on each the destination holds.
public struct DiskStreamsHeld: FrameMessage, ValidatingMessage, Equatable {
    public static let frameType = FrameType.diskStreamsHeld
    /// Streams 1 … N − 1, in order.
    public var streams: [DiskResumeState]

    public init(streams: [DiskResumeState]) { self.streams = streams }

    public func validate() throws(ProtocolError) {
        if streams.isEmpty || streams.count >= DiskMoveLimits.maxStreams {
            throw invalid("DISK_STREAMS_HELD", "count \(streams.count) is outside 1…\(DiskMoveLimits.maxStreams - 1)")
        }
    }

    public func encode(into out: inout [UInt8]) {
        requireValid()
        out.appendLittleEndian(UInt16(streams.count))
        out.appendZeros(6)
        for entry in streams {
            out.appendLittleEndian(entry.blocksHeld)
            out.appendLittleEndian(entry.nextBlock)
        }
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "DISK_STREAMS_HELD")
        let count = try reader.read(UInt16.self, "count")
        try reader.reserved(6)
        streams = []
        for _ in 0..<count {
            let held = try reader.read(UInt64.self, "blocks_held")
            streams.append(DiskResumeState(blocksHeld: held, nextBlock: try reader.read(UInt64.self, "next_block")))
        }
        try reader.finish()
        try validate()
    }
}

/// `DISK_BASE_HASHES` (destination → source, type 34, version 2): the hashes of `count` blocks of
/// the destination's older copy from `first_block` on, the same XXH3-64 as `DISK_BLOCK.block_hash`.
public struct DiskBaseHashes: FrameMessage, ValidatingMessage, Equatable {
    public static let frameType = FrameType.diskBaseHashes
    public var firstBlock: UInt64
    public var hashes: [UInt64]

    public init(firstBlock: UInt64, hashes: [UInt64]) {
        self.firstBlock = firstBlock
        self.hashes = hashes
    }

    public func validate() throws(ProtocolError) {
        if hashes.isEmpty || hashes.count > DiskMoveLimits.maxHashesPerFrame {
            throw invalid(
                "DISK_BASE_HASHES", "count \(hashes.count) is outside 1…\(DiskMoveLimits.maxHashesPerFrame)")
        }
    }

    public func encode(into out: inout [UInt8]) {
        requireValid()
        out.appendLittleEndian(firstBlock)
        out.appendLittleEndian(UInt32(hashes.count))
        out.appendZeros(4)
        for hash in hashes { out.appendLittleEndian(hash) }
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "DISK_BASE_HASHES")
        firstBlock = try reader.read(UInt64.self, "first_block")
        let count = try reader.read(UInt32.self, "count")
        try reader.reserved(4)
        guard count >= 1, Int(count) <= DiskMoveLimits.maxHashesPerFrame else {
            throw invalid("DISK_BASE_HASHES", "count \(count) is outside 1…\(DiskMoveLimits.maxHashesPerFrame)")
        }
        hashes = []
        hashes.reserveCapacity(min(Int(count), reader.remaining / 8))
        for _ in 0..<count { hashes.append(try reader.read(UInt64.self, "hash")) }
        try reader.finish()
        try validate()
    }
}

/// `DISK_DELTA` (source → destination, type 35, version 2): after the base hashes, the number of
/// `DISK_BLOCK` frames that follow (replacing `DISK_HELLO.blocks_to_send`) and of the blocks the
/// source leaves out because the older copy holds them already.
public struct DiskDelta: FrameMessage, Equatable {
    public static let frameType = FrameType.diskDelta
    public var blocksToSend: UInt64
    public var blocksUnchanged: UInt64

    public init(blocksToSend: UInt64, blocksUnchanged: UInt64) {
        self.blocksToSend = blocksToSend
        self.blocksUnchanged = blocksUnchanged
    }

    public func encode(into out: inout [UInt8]) {
        out.appendLittleEndian(blocksToSend)
        out.appendLittleEndian(blocksUnchanged)
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "DISK_DELTA")
        blocksToSend = try reader.read(UInt64.self, "blocks_to_send")
        blocksUnchanged = try reader.read(UInt64.self, "blocks_unchanged")
        try reader.finish()
    }
}

/// The 24 bytes before a `DISK_BLOCK`'s data (type 27): which block, its hash, how it travels.
/// Read and written in place: the data follows without a copy.
public struct DiskBlockHeader: Equatable, Sendable {
    public var index: UInt64
    /// XXH3-64 of the block's `block_size` bytes (past the disk's end: zeros).
    public var hash: UInt64
    public var encoding: PageEncoding

    public init(index: UInt64, hash: UInt64, encoding: PageEncoding) {
        self.index = index
        self.hash = hash
        self.encoding = encoding
    }

    public func encode(to destination: UnsafeMutableRawPointer) {
        destination.storeBytes(of: index.littleEndian, toByteOffset: 0, as: UInt64.self)
        destination.storeBytes(of: hash.littleEndian, toByteOffset: 8, as: UInt64.self)
        destination.storeBytes(of: UInt64(encoding.rawValue).littleEndian, toByteOffset: 16, as: UInt64.self)
    }

    /// Decodes the header of a `DISK_BLOCK` payload and returns it with the data after it; checks
    /// the reserved bytes, the encoding and the data's length for `blockSize`.
    public static func decode(_ payload: UnsafeRawBufferPointer, blockSize: Int) throws(ProtocolError)
        -> (header: DiskBlockHeader, data: UnsafeRawBufferPointer)
    {
        var reader = PayloadReader(payload, message: "DISK_BLOCK")
        let index = try reader.read(UInt64.self, "block_index")
        let hash = try reader.read(UInt64.self, "block_hash")
        let code = try reader.read(UInt8.self, "encoding")
        try reader.reserved(7)
        guard let encoding = PageEncoding(rawValue: code), encoding != .words else {
            throw invalid("DISK_BLOCK", "block \(index) has encoding \(code); a disk move uses 1 zero, 2 raw, 3 LZ4")
        }
        let data = UnsafeRawBufferPointer(rebasing: payload[DiskMoveLimits.blockHeaderSize...])
        guard encoding.allowsLength(data.count, pageSize: blockSize) else {
            throw invalid(
                "DISK_BLOCK", "block \(index): \(data.count) bytes of data do not fit encoding \(encoding)")
        }
        return (DiskBlockHeader(index: index, hash: hash, encoding: encoding), data)
    }
}

/// `DISK_END` (source → destination, type 28): every block was sent; the digest to check.
public struct DiskEnd: FrameMessage, Equatable {
    public static let frameType = FrameType.diskEnd
    public var blocksSent: UInt64
    /// XXH3-64 over the table of every block's hash (Protocol.md 10.4).
    public var digest: UInt64

    public init(blocksSent: UInt64, digest: UInt64) {
        self.blocksSent = blocksSent
        self.digest = digest
    }

    public func encode(into out: inout [UInt8]) {
        out.appendLittleEndian(blocksSent)
        out.appendLittleEndian(digest)
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "DISK_END")
        blocksSent = try reader.read(UInt64.self, "blocks_sent")
        digest = try reader.read(UInt64.self, "digest")
        try reader.finish()
    }
}

/// `DISK_VERIFIED` (destination → source, type 29): the digest matched and the disk is in place.
public struct DiskVerified: FrameMessage, Equatable {
    public static let frameType = FrameType.diskVerified
    public var digest: UInt64
    /// Bytes the destination wrote (its non-zero 4 KiB pages).
    public var bytesWritten: UInt64

    public init(digest: UInt64, bytesWritten: UInt64) {
        self.digest = digest
        self.bytesWritten = bytesWritten
    }

    public func encode(into out: inout [UInt8]) {
        out.appendLittleEndian(digest)
        out.appendLittleEndian(bytesWritten)
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "DISK_VERIFIED")
        digest = try reader.read(UInt64.self, "digest")
        bytesWritten = try reader.read(UInt64.self, "bytes_written")
        try reader.finish()
    }
}

/// `DISK_JOIN` (source → destination, type 32): the first frame (after the authentication
/// handshake) of block stream `stream_index` of a move with several streams.
public struct DiskJoin: FrameMessage, ValidatingMessage, Equatable {
    public static let frameType = FrameType.diskJoin
    public var moveID: UInt64
    public var moveToken: SessionToken
    public var streamIndex: UInt16

    public init(moveID: UInt64, moveToken: SessionToken, streamIndex: UInt16) {
        self.moveID = moveID
        self.moveToken = moveToken
        self.streamIndex = streamIndex
    }

    public func validate() throws(ProtocolError) {
        if streamIndex == 0 || Int(streamIndex) >= DiskMoveLimits.maxStreams {
            throw invalid("DISK_JOIN", "stream_index \(streamIndex) is outside 1…\(DiskMoveLimits.maxStreams - 1)")
        }
    }

    public func encode(into out: inout [UInt8]) {
        requireValid()
        out.appendLittleEndian(moveID)
        out.appendToken(moveToken)
        out.appendLittleEndian(streamIndex)
        out.appendZeros(6)
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "DISK_JOIN")
        moveID = try reader.read(UInt64.self, "move_id")
        moveToken = try reader.token("move_token")
        streamIndex = try reader.read(UInt16.self, "stream_index")
        try reader.reserved(6)
        try reader.finish()
        try validate()
    }
}

/// `DISK_STREAM_END` (source → destination, type 33): the last frame of block stream 1 … N − 1.
public struct DiskStreamEnd: FrameMessage, Equatable {
    public static let frameType = FrameType.diskStreamEnd
    /// `DISK_BLOCK` frames sent on this stream.
    public var blocksSent: UInt64

    public init(blocksSent: UInt64) { self.blocksSent = blocksSent }

    public func encode(into out: inout [UInt8]) { out.appendLittleEndian(blocksSent) }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "DISK_STREAM_END")
        blocksSent = try reader.read(UInt64.self, "blocks_sent")
        try reader.finish()
    }
}
