import Glibc

/// One bit per page in memory it owns, for the per-page hot paths (the destination's sinks, the
/// source's round-0 hole map).
///
/// `DirtyBitmap` is a value type over an array: kept in a class property and changed per page,
/// every change goes through Swift's dynamic exclusivity check and a uniqueness check of the
/// array (together ~5% of an idle loopback destination's CPU in a profile). A `PageBits` is a
/// reference with only constant storage, so its bit operations compile to plain loads and stores.
///
/// `@unchecked Sendable`: no synchronisation of its own; its users write disjoint pages from
/// different threads or hand it over at a synchronisation point (see each user).
final class PageBits: @unchecked Sendable {
    let count: Int
    let words: UnsafeMutableBufferPointer<UInt64>

    init(count: Int) {
        precondition(count >= 0, "a page bitmap cannot have \(count) bits")
        self.count = count
        words = allocateZeroed(UInt64.self, count: (count + 63) / 64)
    }

    deinit { free(words.baseAddress) }

    @inline(__always)
    subscript(_ page: Int) -> Bool {
        precondition(page >= 0 && page < count, "page \(page) out of 0..<\(count)")
        return words[page >> 6] & (1 << UInt64(page & 63)) != 0
    }

    @inline(__always)
    func set(_ page: Int) {
        precondition(page >= 0 && page < count, "page \(page) out of 0..<\(count)")
        words[page >> 6] |= 1 << UInt64(page & 63)
    }

    @inline(__always)
    func clear(_ page: Int) {
        precondition(page >= 0 && page < count, "page \(page) out of 0..<\(count)")
        words[page >> 6] &= ~(1 << UInt64(page & 63))
    }

    /// The lowest set bit, if any.
    var first: Int? {
        guard let word = words.firstIndex(where: { $0 != 0 }) else { return nil }
        return word << 6 | words[word].trailingZeroBitCount
    }
}

/// `count` zeroed elements from `calloc`, released with `free`. For the per-page tables sized by
/// the guest (a 2 GiB guest's hash table is 4 MiB): glibc serves such blocks from fresh mmapped
/// pages, which are zero already, so nothing touches them until they are used. Allocating and
/// then initializing them zeroed every page in setup (~3 ms per 4 MiB table here, before ACCEPT
/// on the destination).
func allocateZeroed<T: BitwiseCopyable>(_ type: T.Type, count: Int) -> UnsafeMutableBufferPointer<T> {
    precondition(count >= 0, "cannot allocate \(count) elements")
    guard let memory = calloc(max(count, 1), MemoryLayout<T>.stride) else {
        fatalError("out of memory: \(count) × \(MemoryLayout<T>.stride) bytes")
    }
    return UnsafeMutableBufferPointer(start: memory.bindMemory(to: T.self, capacity: count), count: count)
}
