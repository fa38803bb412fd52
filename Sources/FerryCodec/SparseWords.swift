import FerryProtocol
import Glibc

/// The `words` page encoding (Protocol.md 3.5, encoding 4): a page that is zero except for a few
/// 8-byte words travels as a list of those words, 10 bytes each (a 2-byte word index, then the
/// word), instead of a whole page.
///
/// Mostly-zero pages are common in guest memory (page tables, freshly zeroed allocations that
/// hold a few pointers, sparse arrays). Raw they cost a page on the wire and two page copies;
/// LZ4 shrinks them too, but at LZ4's CPU cost. The encoder finds them in the pass that looks
/// for zero pages, so on a fast link (where raw wins over LZ4) they cost about what a zero page
/// costs.
public enum SparseWords {
    /// Payload bytes per listed word: the word's index (UInt16) and the word (UInt64), little-endian.
    public static let bytesPerWord = 10
    /// Most words the encoder lists by default (a 320-byte payload); a page with more non-zero
    /// words goes raw or LZ4.
    public static let defaultLimit = 32

    /// Scans the page's 8-byte words and writes each non-zero one into `slot` as a payload
    /// record. Returns the number of non-zero words (0: a zero page; `slot` untouched), or nil as
    /// soon as there are more than `limit` (the page is dense; `slot` holds garbage).
    /// `slot` needs room for `limit` records; `pageSize` must be a multiple of 64.
    @inline(__always)
    public static func scan(
        _ page: UnsafeRawPointer, pageSize: Int, limit: Int,
        into slot: UnsafeMutableRawPointer
    ) -> Int? {
        let words = page.assumingMemoryBound(to: UInt64.self)
        let total = pageSize / 8
        var count = 0
        var index = 0
        while index < total {
            let block =
                words[index] | words[index + 1] | words[index + 2] | words[index + 3]
                | words[index + 4] | words[index + 5] | words[index + 6] | words[index + 7]
            if block != 0 {
                for offset in index..<(index + 8) {
                    let word = words[offset]
                    if word == 0 { continue }
                    if count == limit { return nil }
                    let record = slot + count &* bytesPerWord
                    record.storeBytes(of: UInt16(truncatingIfNeeded: offset).littleEndian, as: UInt16.self)
                    record.storeBytes(of: word.littleEndian, toByteOffset: 2, as: UInt64.self)
                    count += 1
                }
            }
            index += 8
        }
        return count
    }

    /// Writes the page a `words` payload describes into `destination` (`pageSize` bytes).
    /// `destinationIsZero`: the memory is known to be zero, so only the listed words are stored.
    /// Checks the payload first (nothing is written when it is malformed): a whole number of
    /// records, at least one, fewer bytes than a page; indices strictly increasing and inside
    /// the page; no zero word.
    @inline(__always)
    public static func decode(
        _ payload: UnsafeRawBufferPointer, pageSize: Int,
        into destination: UnsafeMutableRawPointer, destinationIsZero: Bool
    ) throws(CodecError) {
        guard let source = payload.baseAddress, PageEncoding.words.allowsLength(payload.count, pageSize: pageSize)
        else {
            throw CodecError(
                .badLength,
                "words payload of \(payload.count) bytes: must be a non-zero multiple of \(bytesPerWord) below the page size \(pageSize)"
            )
        }
        let count = payload.count / bytesPerWord
        let limit = pageSize / 8
        var previous = -1
        for record in 0..<count {
            let at = source + record &* bytesPerWord
            let index = Int(UInt16(littleEndian: at.loadUnaligned(as: UInt16.self)))
            let word = UInt64(littleEndian: at.loadUnaligned(fromByteOffset: 2, as: UInt64.self))
            guard index > previous, index < limit else {
                throw CodecError(
                    .badPayload,
                    "words payload record \(record): word index \(index) \(index >= limit ? "is outside the \(limit)-word page" : "does not follow index \(previous)")"
                )
            }
            guard word != 0 else {
                throw CodecError(
                    .badPayload, "words payload record \(record): word \(index) is zero (zero words are not listed)")
            }
            previous = index
        }
        if !destinationIsZero { memset(destination, 0, pageSize) }
        let words = destination.assumingMemoryBound(to: UInt64.self)
        for record in 0..<count {
            let at = source + record &* bytesPerWord
            let index = Int(UInt16(littleEndian: at.loadUnaligned(as: UInt16.self)))
            words[index] = UInt64(littleEndian: at.loadUnaligned(fromByteOffset: 2, as: UInt64.self))
        }
    }
}
