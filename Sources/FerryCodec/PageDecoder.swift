import CLZ4
import FerryProtocol
import Glibc

/// Decodes page payloads straight into guest memory and checks each page's hash against the
/// hash the source sent, reading back the bytes actually written.
public struct PageDecoder: Sendable {
    public let pageSize: Int
    public let zeroHash: UInt64

    public init(pageSize: Int) {
        self.pageSize = pageSize
        self.zeroHash = PageHash.zeroPage(pageSize: pageSize)
    }

    /// Writes the page into `destination` (`pageSize` bytes) and returns the hash of what was written.
    ///
    /// `destinationIsZero` lets the caller skip writing zero pages (and the zeros of a words
    /// page) over memory known to be zero (a fresh sparse image), so they are never faulted in.
    @inline(__always)
    public func decode(
        encoding: PageEncoding, payload: UnsafeRawBufferPointer,
        into destination: UnsafeMutableRawPointer, destinationIsZero: Bool = false
    ) throws(CodecError) -> UInt64 {
        switch encoding {
        case .zero:
            guard payload.count == 0 else {
                throw CodecError(.badLength, "zero page with a \(payload.count)-byte payload")
            }
            if !destinationIsZero { memset(destination, 0, pageSize) }
            return zeroHash
        case .raw:
            guard payload.count == pageSize, let source = payload.baseAddress else {
                throw CodecError(.badLength, "raw page of \(payload.count) bytes, expected \(pageSize)")
            }
            memcpy(destination, source, pageSize)
        case .words:
            try SparseWords.decode(payload, pageSize: pageSize, into: destination, destinationIsZero: destinationIsZero)
        case .lz4:
            guard payload.count > 0, payload.count < pageSize, let source = payload.baseAddress else {
                throw CodecError(.badLength, "LZ4 page payload of \(payload.count) bytes")
            }
            let produced = LZ4_decompress_safe(
                source.assumingMemoryBound(to: CChar.self),
                destination.assumingMemoryBound(to: CChar.self),
                Int32(payload.count), Int32(pageSize))
            guard Int(produced) == pageSize else {
                throw CodecError(
                    .decompressFailed,
                    produced < 0
                        ? "LZ4 payload is malformed"
                        : "LZ4 payload decompressed to \(produced) bytes, expected \(pageSize)")
            }
        }
        return PageHash.hash(UnsafeRawPointer(destination), count: pageSize)
    }
}
