import CXXHash

/// XXH3-64 (seed 0) of page contents, the per-page hash of Protocol.md section 3.5.
///
/// Calls the runtime-dispatched entry point of libxxhash (SSE2/AVX2/AVX-512 picked at run time);
/// its result is identical to `XXH3_64bits`, only faster on CPUs with wider vectors.
public enum PageHash {
    @inline(__always)
    public static func hash(_ bytes: UnsafeRawPointer, count: Int) -> UInt64 {
        XXH3_64bits_dispatch(bytes, count)
    }

    public static func hash(_ buffer: UnsafeRawBufferPointer) -> UInt64 {
        guard let base = buffer.baseAddress else { return XXH3_64bits_dispatch(nil, 0) }
        return XXH3_64bits_dispatch(base, buffer.count)
    }

    /// Hash of a page of `pageSize` zero bytes.
    public static func zeroPage(pageSize: Int) -> UInt64 {
        let zeros = UnsafeMutableRawPointer.allocate(byteCount: pageSize, alignment: 64)
        defer { zeros.deallocate() }
        zeros.initializeMemory(as: UInt8.self, repeating: 0, count: pageSize)
        return hash(zeros, count: pageSize)
    }

    /// The image digest of Protocol.md section 3.9: XXH3-64 over the page hash table,
    /// stored as little-endian 8-byte values, page 0 first.
    public static func digest(ofHashTable table: UnsafeBufferPointer<UInt64>) -> UInt64 {
        #if _endian(little)
            return hash(UnsafeRawBufferPointer(table))
        #else
            let swapped = table.map { $0.littleEndian }
            return swapped.withUnsafeBytes { hash($0) }
        #endif
    }
}
