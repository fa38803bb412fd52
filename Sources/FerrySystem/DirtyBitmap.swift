/// One bit per page: which pages of a region are dirty.
///
/// A plain value type (copy-on-write `[UInt64]`), not thread-safe. Bit `i` is bit `i % 64` of
/// word `i / 64`; bits past `count` in the last word are always zero.
///
/// Raw access: `words` reads the storage; `withUnsafeMutableWords` hands out the storage for
/// bulk updates (e.g. by a C harvester). Bits it sets past `count` are cleared afterwards.
public struct DirtyBitmap: Sendable, Equatable {
    public private(set) var words: [UInt64]
    public let count: Int

    public init(count: Int) {
        precondition(count >= 0, "DirtyBitmap count must not be negative")
        self.count = count
        self.words = [UInt64](repeating: 0, count: (count + 63) / 64)
    }

    /// True when no bit is set.
    public var isEmpty: Bool { words.allSatisfy { $0 == 0 } }

    /// The number of set bits.
    public func popcount() -> Int {
        words.reduce(0) { $0 + $1.nonzeroBitCount }
    }

    public subscript(_ page: Int) -> Bool {
        precondition(page >= 0 && page < count, "page \(page) out of 0..<\(count)")
        return words[page >> 6] & (1 << UInt64(page & 63)) != 0
    }

    public mutating func set(_ page: Int) {
        precondition(page >= 0 && page < count, "page \(page) out of 0..<\(count)")
        words[page >> 6] |= 1 << UInt64(page & 63)
    }

    public mutating func clear(_ page: Int) {
        precondition(page >= 0 && page < count, "page \(page) out of 0..<\(count)")
        words[page >> 6] &= ~(1 << UInt64(page & 63))
    }

    public mutating func setAll() {
        set(range: 0..<count)
    }

    public mutating func clearAll() {
        words.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
    }

    /// Sets every bit in `range`, a whole word at a time where it can.
    public mutating func set(range: Range<Int>) {
        precondition(
            range.lowerBound >= 0 && range.upperBound <= count,
            "range \(range) out of 0..<\(count)")
        guard !range.isEmpty else { return }
        let firstWord = range.lowerBound >> 6
        let lastWord = (range.upperBound - 1) >> 6
        let headMask = UInt64.max << UInt64(range.lowerBound & 63)
        let tailMask = UInt64.max >> UInt64(63 - ((range.upperBound - 1) & 63))
        words.withUnsafeMutableBufferPointer { words in
            if firstWord == lastWord {
                words[firstWord] |= headMask & tailMask
                return
            }
            words[firstWord] |= headMask
            for index in (firstWord + 1)..<lastWord { words[index] = .max }
            words[lastWord] |= tailMask
        }
    }

    /// Adds every bit of `other`, which must have the same count.
    public mutating func formUnion(_ other: DirtyBitmap) {
        precondition(other.count == count, "formUnion of bitmaps of \(other.count) and \(count) pages")
        words.withUnsafeMutableBufferPointer { mine in
            other.words.withUnsafeBufferPointer { theirs in
                for index in mine.indices { mine[index] |= theirs[index] }
            }
        }
    }

    /// Calls `body` with each set page, ascending. Skips zero words.
    public func forEachSetBit(_ body: (Int) throws -> Void) rethrows {
        try words.withUnsafeBufferPointer { words in
            for (index, word) in words.enumerated() where word != 0 {
                var rest = word
                while rest != 0 {
                    try body(index << 6 | rest.trailingZeroBitCount)
                    rest &= rest &- 1
                }
            }
        }
    }

    /// Gives `body` the storage words to read and change in place; bits past `count` that
    /// `body` sets are cleared when it returns.
    public mutating func withUnsafeMutableWords<R>(
        _ body: (UnsafeMutableBufferPointer<UInt64>) throws -> R
    ) rethrows -> R {
        defer { clearBitsPastCount() }
        return try words.withUnsafeMutableBufferPointer { try body($0) }
    }

    private mutating func clearBitsPastCount() {
        let used = count & 63
        if used != 0 { words[words.count - 1] &= (1 << UInt64(used)) - 1 }
    }
}
