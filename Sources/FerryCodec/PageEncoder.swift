import CLZ4
import FerryProtocol
import Glibc

/// How the encoder may represent non-zero pages.
public enum CompressionMode: String, Sendable, CaseIterable {
    /// LZ4 whenever it makes the page smaller, raw otherwise.
    case lz4
    /// Always raw (zero pages are still markers).
    case none
}

/// The result of encoding one page.
public struct EncodedPage: Equatable, Sendable {
    public var encoding: PageEncoding
    /// Payload bytes written to the slot (0 for zero pages).
    public var length: Int
    /// XXH3-64 of the page content that was encoded.
    public var hash: UInt64
}

/// Encodes guest pages for a `PAGE_BATCH`: zero pages as markers, mostly-zero pages as their
/// non-zero words, LZ4 where it pays, raw otherwise, every page hashed.
///
/// The guest may be writing the page while it is encoded. The encoder therefore takes one snapshot
/// of the page (a single copy) and derives the zero test, the hash and the payload from that
/// snapshot only, so the hash always describes exactly the bytes sent. A write that races with the
/// copy is caught by the dirty tracker (the page was re-protected before it was read) and the page
/// is sent again in a later round.
///
/// One encoder per thread; it owns a page-sized scratch buffer and allocates nothing per page.
public final class PageEncoder {
    public let pageSize: Int
    public var mode: CompressionMode
    /// LZ4 acceleration (1 = `LZ4_compress_default`; higher is faster and compresses less).
    public var acceleration: Int32
    /// Most non-zero 8-byte words a page may have to travel as `.words` (0: never; only for a
    /// peer that decodes the `words` codec).
    public let wordsLimit: Int

    private let scratch: UnsafeMutableRawPointer
    /// Where raw mode builds a words payload while the slot holds the snapshot.
    private let records: UnsafeMutableRawPointer
    private let zeroHash: UInt64
    private let lz4State: UnsafeMutableRawPointer

    public init(
        pageSize: Int, mode: CompressionMode = .lz4, acceleration: Int32 = 1,
        wordsLimit: Int = SparseWords.defaultLimit
    ) {
        precondition(
            pageSize >= 64 && pageSize & (pageSize - 1) == 0, "page size must be a power of two of at least 64")
        precondition(
            wordsLimit >= 0 && wordsLimit * SparseWords.bytesPerWord < pageSize,
            "a words payload of \(wordsLimit) records must be smaller than a page")
        self.pageSize = pageSize
        self.mode = mode
        self.acceleration = acceleration
        self.wordsLimit = wordsLimit
        self.scratch = UnsafeMutableRawPointer.allocate(byteCount: pageSize, alignment: 64)
        self.records = UnsafeMutableRawPointer.allocate(byteCount: pageSize, alignment: 64)
        self.zeroHash = PageHash.zeroPage(pageSize: pageSize)
        self.lz4State = UnsafeMutableRawPointer.allocate(byteCount: Int(LZ4_sizeofState()), alignment: 16)
    }

    deinit {
        scratch.deallocate()
        records.deallocate()
        lz4State.deallocate()
    }

    /// Encodes the page at `page` into `slot`, which must have room for `pageSize` bytes.
    @inline(__always)
    public func encode(page: UnsafeRawPointer, into slot: UnsafeMutableRawPointer) -> EncodedPage {
        // Raw mode copies straight into the slot: the slot is the snapshot.
        let snapshot = mode == .none ? slot : scratch
        memcpy(snapshot, page, pageSize)
        if wordsLimit > 0 {
            // LZ4 mode: the snapshot is in `scratch`, so the records go straight to the slot.
            // Raw mode: the slot is the snapshot, so they are built in `records` and copied.
            let records = mode == .none ? self.records : slot
            if let count = SparseWords.scan(
                UnsafeRawPointer(snapshot), pageSize: pageSize, limit: wordsLimit, into: records)
            {
                if count == 0 { return EncodedPage(encoding: .zero, length: 0, hash: zeroHash) }
                let hash = PageHash.hash(snapshot, count: pageSize)
                let length = count &* SparseWords.bytesPerWord
                if records != slot { memcpy(slot, records, length) }
                return EncodedPage(encoding: .words, length: length, hash: hash)
            }
        } else if PageEncoder.isZero(UnsafeRawPointer(snapshot), count: pageSize) {
            return EncodedPage(encoding: .zero, length: 0, hash: zeroHash)
        }
        let hash = PageHash.hash(snapshot, count: pageSize)
        if mode == .lz4 {
            let compressed = LZ4_compress_fast_extState(
                lz4State,
                snapshot.assumingMemoryBound(to: CChar.self),
                slot.assumingMemoryBound(to: CChar.self),
                Int32(pageSize), Int32(pageSize - 1), acceleration)
            if compressed > 0 && Int(compressed) < pageSize {
                return EncodedPage(encoding: .lz4, length: Int(compressed), hash: hash)
            }
            memcpy(slot, snapshot, pageSize)
        }
        return EncodedPage(encoding: .raw, length: pageSize, hash: hash)
    }

    /// Raw encoding without a copy: tests and hashes the page where it is, so the page itself can
    /// be the payload (gathered into the frame). If the guest writes the page before the socket
    /// has copied it, the bytes sent no longer match `hash`; the dirty tracker has then caught the
    /// write and the page is sent again, and the destination treats the mismatch as a stale page
    /// (Protocol.md 3.5). The final round runs with the guest paused, so its pages always match.
    /// A mostly-zero page (`wordsLimit`) comes back as `.words` with its records written at
    /// `slot` (room for `wordsLimit` records); a raw page's payload is the page itself.
    @inline(__always)
    public func encodeInPlace(page: UnsafeRawPointer, slot: UnsafeMutableRawPointer) -> EncodedPage {
        if wordsLimit > 0 {
            if let count = SparseWords.scan(page, pageSize: pageSize, limit: wordsLimit, into: slot) {
                if count == 0 { return EncodedPage(encoding: .zero, length: 0, hash: zeroHash) }
                return EncodedPage(
                    encoding: .words, length: count &* SparseWords.bytesPerWord,
                    hash: PageHash.hash(page, count: pageSize))
            }
        } else if PageEncoder.isZero(page, count: pageSize) {
            return EncodedPage(encoding: .zero, length: 0, hash: zeroHash)
        }
        return EncodedPage(encoding: .raw, length: pageSize, hash: PageHash.hash(page, count: pageSize))
    }

    /// True when all `count` bytes are zero. `count` must be a multiple of 64.
    ///
    /// ORs 64-byte blocks of eight words and exits at the first non-zero block; the compiler
    /// vectorises the inner OR.
    @inline(__always)
    public static func isZero(_ bytes: UnsafeRawPointer, count: Int) -> Bool {
        let words = bytes.assumingMemoryBound(to: UInt64.self)
        var index = 0
        let total = count / 8
        while index < total {
            let block =
                words[index] | words[index + 1] | words[index + 2] | words[index + 3]
                | words[index + 4] | words[index + 5] | words[index + 6] | words[index + 7]
            if block != 0 { return false }
            index += 8
        }
        return true
    }
}
