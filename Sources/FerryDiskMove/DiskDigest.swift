import FerryCodec

/// The disk's digest (Protocol.md 10.4): XXH3-64 over the table of every block's hash, block 0
/// first, each as 8 little-endian bytes; a block that was not sent (all holes) counts with the
/// hash of `block_size` zero bytes. Both sides build it as the blocks go by, in constant memory:
/// blocks arrive in increasing order, and a gap is filled with the zero block's hash.
final class DiskDigest {
    let zeroBlockHash: UInt64
    private let hash = StreamingHash()
    /// The block the next `add` must be at or after.
    private(set) var nextBlock = 0
    private var zeros: [UInt64]

    init(blockSize: Int) {
        zeroBlockHash = PageHash.zeroPage(pageSize: blockSize)
        zeros = [UInt64](repeating: zeroBlockHash.littleEndian, count: 4096)
    }

    /// Adds block `index`'s hash, after the zero hashes of the blocks skipped since the last one.
    func add(block index: Int, hash value: UInt64) {
        precondition(index >= nextBlock, "blocks go in increasing order")
        skip(to: index)
        withUnsafeBytes(of: value.littleEndian) { hash.update($0) }
        nextBlock = index + 1
    }

    /// The digest of a disk of `blockCount` blocks (the ones not added are zero blocks).
    func finish(blockCount: Int) -> UInt64 {
        skip(to: blockCount)
        return hash.value
    }

    private func skip(to index: Int) {
        while nextBlock < index {
            let count = min(index - nextBlock, zeros.count)
            zeros.withUnsafeBytes { hash.update(UnsafeRawBufferPointer(rebasing: $0[0..<(count * 8)])) }
            nextBlock += count
        }
    }

    /// The digest of a whole table of block hashes, block 0 first.
    static func of(table: [UInt64], blockSize: Int) -> UInt64 {
        let digest = DiskDigest(blockSize: blockSize)
        for (index, value) in table.enumerated() { digest.add(block: index, hash: value) }
        return digest.finish(blockCount: table.count)
    }
}
