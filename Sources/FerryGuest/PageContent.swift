/// The kinds of page a generated image holds.
public enum PageClass: String, Sendable, CaseIterable {
    case zero, sparse, text, random
}

/// Fills one page of a generated image. Every function is a pure function of (seed, page), so an
/// image is reproducible byte for byte.
enum PageContent {
    /// The class of `page`: a hash of (seed, page) placed on the mix's cumulative percentages.
    @inline(__always)
    static func pageClass(seed: UInt64, page: UInt64, thresholds: Thresholds) -> PageClass {
        let u = Mixing.unit(Mixing.hash(seed ^ 0x1D3A_6E5C_0B7F_9421, page))
        if u < thresholds.zero { return .zero }
        if u < thresholds.sparse { return .sparse }
        if u < thresholds.text { return .text }
        return .random
    }

    /// Cumulative upper bounds, in [0, 1], of the zero, sparse and text classes.
    struct Thresholds {
        var zero: Double
        var sparse: Double
        var text: Double

        init(_ mix: ImageMix) {
            zero = mix.zero / 100
            sparse = (mix.zero + mix.sparse) / 100
            text = (mix.zero + mix.sparse + mix.text) / 100
        }
    }

    /// A page of zero bytes except 1…8 non-zero 8-byte words at pseudo-random aligned offsets.
    static func fillSparse(_ p: UnsafeMutableRawPointer, pageSize: Int, seed: UInt64, page: UInt64) {
        p.initializeMemory(as: UInt8.self, repeating: 0, count: pageSize)
        var rng = Mixing.hash(seed ^ 0x5A5A_0F0F_3C3C_9696, page)
        let words = 1 + Int(Mixing.next(&rng) & 7)
        let slots = UInt64(pageSize / 8)
        for _ in 0..<words {
            let slot = Int(Mixing.bounded(Mixing.next(&rng), slots))
            p.storeBytes(of: (Mixing.next(&rng) | 1).littleEndian, toByteOffset: slot * 8, as: UInt64.self)
        }
    }

    /// A page of pseudo-random bytes (splitmix64 output).
    static func fillRandom(_ p: UnsafeMutableRawPointer, pageSize: Int, seed: UInt64, page: UInt64) {
        var rng = Mixing.hash(seed ^ 0x0123_4567_89AB_CDEF, page)
        let words = p.bindMemory(to: UInt64.self, capacity: pageSize / 8)
        for i in 0..<(pageSize / 8) {
            words[i] = Mixing.next(&rng).littleEndian
        }
    }

    /// A page of text: phrases from a 32-phrase vocabulary, frequent phrases more likely. The bytes
    /// are printable ASCII, spaces and newlines; LZ4 compresses such a page about 2–4×.
    static func fillText(_ p: UnsafeMutableRawPointer, pageSize: Int, seed: UInt64, page: UInt64) {
        var rng = Mixing.hash(seed ^ 0x7E57_7E57_7E57_7E57, page)
        var offset = 0
        // Each phrase is at most 16 bytes, stored as two (unaligned) 8-byte words; the bytes past
        // the phrase's length are overwritten by the next phrase.
        let limit = pageSize - 16
        Vocabulary.table.withUnsafeBufferPointer { table in
            while offset <= limit {
                var bits = Mixing.next(&rng)
                for _ in 0..<6 where offset <= limit {
                    // Two 5-bit draws, keep the smaller: a skewed (Zipf-like) phrase frequency.
                    let a = Int(bits & 31)
                    let b = Int((bits >> 5) & 31)
                    bits >>= 10
                    let entry = table[min(a, b)]
                    p.storeBytes(of: entry.low.littleEndian, toByteOffset: offset, as: UInt64.self)
                    p.storeBytes(of: entry.high.littleEndian, toByteOffset: offset + 8, as: UInt64.self)
                    offset += entry.length
                }
            }
        }
        while offset < pageSize {
            p.storeBytes(
                of: offset == pageSize - 1 ? UInt8(ascii: "\n") : UInt8(ascii: " "),
                toByteOffset: offset, as: UInt8.self)
            offset += 1
        }
    }
}

/// The text pages' vocabulary: 32 phrases of at most 16 bytes, each stored as two little-endian words.
enum Vocabulary {
    struct Entry {
        var low: UInt64
        var high: UInt64
        var length: Int
    }

    static let phrases: [String] = [
        "the ", "of the ", "and ", "to a ", "in the ", "is ", "that was ", "for it ",
        "guest memory ", "page ", "was written ", "by the host ", "dirty pages ", "are copied ",
        "over the wire. ", "round ", "after round, ", "until the ", "vCPU state ", "is sent.\n",
        "The kernel ", "tracks writes ", "with a bitmap ", "per page; ", "ferry ", "moves the ",
        "running guest ", "to another ", "host with ", "little pause. ", "Then it ", "resumes.\n",
    ]

    static let table: [Entry] = {
        precondition(phrases.count == 32, "fillText draws 5-bit phrase indices")
        return phrases.map { phrase in
            precondition(phrase.utf8.count <= 16)
            var low: UInt64 = 0
            var high: UInt64 = 0
            for (i, b) in phrase.utf8.enumerated() {
                if i < 8 { low |= UInt64(b) << (8 * UInt64(i)) } else { high |= UInt64(b) << (8 * UInt64(i - 8)) }
            }
            return Entry(low: low, high: high, length: phrase.utf8.count)
        }
    }()
}
