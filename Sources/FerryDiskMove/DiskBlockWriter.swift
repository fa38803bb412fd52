import FerryCodec
import FerryProtocol
import FerrySystem
import Glibc

/// One stream's blocks into the destination's copy: decodes each `DISK_BLOCK`, checks its hash
/// against the bytes decoded, writes only its non-zero 4 KiB pages (so holes stay holes: the file
/// starts as one hole of the disk's size) and keeps each block's hash for the digest. With several
/// streams each has its own writer on the shared file (`pwrite` at distinct offsets).
///
/// `@unchecked Sendable`: a writer is used by one thread at a time (its stream's, then, once that
/// thread has ended, the one that verifies).
final class DiskBlockWriter: @unchecked Sendable {
    /// The granule of holes kept on the destination.
    static let granule = DiskExtentMap.granule

    let diskSize: Int
    let blockSize: Int
    private let file: PositionedFile
    private let decoder: PageDecoder
    private let buffer: UnsafeMutableRawPointer
    let stream: Int
    /// The blocks received, in order, and their hashes.
    private(set) var indices: [Int] = []
    private(set) var hashes: [UInt64] = []
    /// The lowest block index the next `DISK_BLOCK` may have.
    private(set) var nextBlock = 0
    private(set) var blocksReceived = 0
    private(set) var zeroBlocks = 0
    private(set) var lz4Blocks = 0
    private(set) var rawBlocks = 0
    private(set) var bytesWritten = 0
    /// The file started as an older copy (Protocol.md 10.8): a block's zero pages are punched.
    var punchZeros = false

    init(file: PositionedFile, diskSize: Int, blockSize: Int, stream: Int = 0) {
        self.file = file
        self.diskSize = diskSize
        self.blockSize = blockSize
        self.stream = stream
        decoder = PageDecoder(pageSize: blockSize)
        buffer = UnsafeMutableRawPointer.allocate(byteCount: blockSize, alignment: 64)
    }

    /// Creates (or empties) `path` as a hole of `size` bytes.
    static func createPartial(path: String, size: Int) throws -> PositionedFile {
        let file = try PositionedFile(creating: path)
        try file.truncate(to: size)
        return file
    }

    deinit { buffer.deallocate() }

    /// Applies one `DISK_BLOCK` payload. Blocks must come in increasing order, inside the disk.
    func apply(_ payload: UnsafeRawBufferPointer) throws {
        let (header, data) = try DiskBlockHeader.decode(payload, blockSize: blockSize)
        let blockCount = (diskSize + blockSize - 1) / blockSize
        guard header.index < UInt64(blockCount), Int(header.index) >= nextBlock else {
            throw ProtocolError(
                .invalidField,
                "DISK_BLOCK \(header.index) on stream \(stream) is out of order or past the disk's \(blockCount) blocks (next allowed: \(nextBlock))"
            )
        }
        let index = Int(header.index)
        let offset = index * blockSize
        let blockName = "block \(index) (bytes \(offset)…\(min(offset + blockSize, diskSize) - 1))"
        let hash: UInt64
        do throws(CodecError) {
            hash = try decoder.decode(encoding: header.encoding, payload: data, into: buffer)
        } catch {
            throw DiskMoveError(
                .verification,
                "\(blockName) does not decode (\(error.message)): it was damaged in transit; retry the move")
        }
        guard hash == header.hash else {
            throw DiskMoveError(
                .verification,
                "\(blockName) hashes to 0x\(hex(hash)) after decoding, the source sent 0x\(hex(header.hash)): the block was damaged in transit; retry the move"
            )
        }
        if header.encoding != .zero {
            try writeNonZeroPages(at: index * blockSize)
        } else if punchZeros {
            try file.punchHole(at: offset, count: min(blockSize, diskSize - offset))
        }
        indices.append(index)
        hashes.append(hash)
        nextBlock = index + 1
        blocksReceived += 1
        switch header.encoding {
        case .zero: zeroBlocks += 1
        case .lz4: lz4Blocks += 1
        case .raw, .words: rawBlocks += 1
        }
    }

    /// Writes the runs of non-zero granules of the decoded block; zero granules stay holes (on a
    /// base, `punchZeros`: they are punched, as the base may hold data there). Bytes past the
    /// disk's end (the last block's padding) are not written.
    private func writeNonZeroPages(at offset: Int) throws {
        let limit = min(blockSize, diskSize - offset)
        var position = 0
        while position < limit {
            let isData = !PageEncoder.isZero(UnsafeRawPointer(buffer + position), count: Self.granule)
            var end = min(position + Self.granule, limit)
            while end < limit, PageEncoder.isZero(UnsafeRawPointer(buffer + end), count: Self.granule) != isData {
                end = min(end + Self.granule, limit)
            }
            if isData {
                try file.write(
                    UnsafeRawBufferPointer(start: buffer + position, count: end - position), at: offset + position)
                bytesWritten += end - position
            } else if punchZeros {
                try file.punchHole(at: offset + position, count: end - position)
            }
            position = end
        }
    }

    /// Makes the shared file's data durable (`fdatasync`).
    func sync() throws { try file.sync() }

    /// The digest of the copy written by `writers` (one per stream): every block received, in
    /// index order (a merge of the streams' ordered lists), holes for the rest.
    /// A block that arrived on two streams is a protocol error.
    static func digest(of writers: [DiskBlockWriter], blockSize: Int, blockCount: Int) throws -> UInt64 {
        let digest = DiskDigest(blockSize: blockSize)
        var next = [Int](repeating: 0, count: writers.count)
        while true {
            var best: Int? = nil
            for (stream, writer) in writers.enumerated() where next[stream] < writer.indices.count {
                if best.map({ writer.indices[next[stream]] < writers[$0].indices[next[$0]] }) ?? true { best = stream }
            }
            guard let stream = best else { break }
            let index = writers[stream].indices[next[stream]]
            guard index >= digest.nextBlock else {
                throw ProtocolError(.invalidField, "DISK_BLOCK \(index) arrived on two streams")
            }
            digest.add(block: index, hash: writers[stream].hashes[next[stream]])
            next[stream] += 1
        }
        return digest.finish(blockCount: blockCount)
    }
}
