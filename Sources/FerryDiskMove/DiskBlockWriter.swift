import FerryCodec
import FerryProtocol
import FerrySystem
import Glibc

/// The destination's copy while blocks arrive: decodes each `DISK_BLOCK`, checks its hash against
/// the bytes decoded, writes only its non-zero 4 KiB pages (so holes stay holes: the file starts
/// as one hole of the disk's size) and feeds the digest.
final class DiskBlockWriter {
    /// The granule of holes kept on the destination.
    static let granule = DiskExtentMap.granule

    let diskSize: Int
    let blockSize: Int
    private let file: PositionedFile
    private let decoder: PageDecoder
    private let buffer: UnsafeMutableRawPointer
    private let digestState: DiskDigest
    private(set) var blocksReceived = 0
    private(set) var zeroBlocks = 0
    private(set) var lz4Blocks = 0
    private(set) var rawBlocks = 0
    private(set) var bytesWritten = 0

    /// Creates (or empties) `partialPath` as a hole of `diskSize` bytes.
    init(partialPath: String, diskSize: Int, blockSize: Int) throws {
        self.diskSize = diskSize
        self.blockSize = blockSize
        file = try PositionedFile(creating: partialPath)
        try file.truncate(to: diskSize)
        decoder = PageDecoder(pageSize: blockSize)
        buffer = UnsafeMutableRawPointer.allocate(byteCount: blockSize, alignment: 64)
        digestState = DiskDigest(blockSize: blockSize)
    }

    deinit { buffer.deallocate() }

    /// Applies one `DISK_BLOCK` payload. Blocks must come in increasing order, inside the disk.
    func apply(_ payload: UnsafeRawBufferPointer) throws {
        let (header, data) = try DiskBlockHeader.decode(payload, blockSize: blockSize)
        let blockCount = (diskSize + blockSize - 1) / blockSize
        guard header.index < UInt64(blockCount), Int(header.index) >= digestState.nextBlock else {
            throw ProtocolError(
                .invalidField,
                "DISK_BLOCK \(header.index) is out of order or past the disk's \(blockCount) blocks (next allowed: \(digestState.nextBlock))"
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
        if header.encoding != .zero { try writeNonZeroPages(at: index * blockSize) }
        digestState.add(block: index, hash: hash)
        blocksReceived += 1
        switch header.encoding {
        case .zero: zeroBlocks += 1
        case .lz4: lz4Blocks += 1
        case .raw, .words: rawBlocks += 1
        }
    }

    /// Writes the runs of non-zero granules of the decoded block; zero granules stay holes.
    /// Bytes past the disk's end (the last block's padding) are not written.
    private func writeNonZeroPages(at offset: Int) throws {
        let limit = min(blockSize, diskSize - offset)
        var runStart: Int? = nil
        var position = 0
        while position <= limit {
            let isData =
                position < limit && !PageEncoder.isZero(UnsafeRawPointer(buffer + position), count: Self.granule)
            if isData, runStart == nil { runStart = position }
            if !isData, let start = runStart {
                let end = min(position, limit)
                try file.write(UnsafeRawBufferPointer(start: buffer + start, count: end - start), at: offset + start)
                bytesWritten += end - start
                runStart = nil
            }
            if position == limit { break }
            position = min(position + Self.granule, limit)
        }
    }

    /// The lowest block index the next `DISK_BLOCK` may have.
    var nextBlock: Int { digestState.nextBlock }

    /// Checks that the source sent as many blocks as it announced and as arrived.
    func checkCount(announced: Int, sent: Int) throws {
        guard sent == announced, sent == blocksReceived else {
            throw DiskMoveError(
                .verification,
                "DISK_END says \(sent) blocks were sent, DISK_HELLO announced \(announced) and \(blocksReceived) arrived: retry the move"
            )
        }
    }

    /// The digest of the copy: every block received, holes for the rest.
    func digest() -> UInt64 { digestState.finish(blockCount: (diskSize + blockSize - 1) / blockSize) }

    func sync() throws { try file.sync() }
}
