import FerryTestSupport

/// Deterministic structure-unaware mutations of valid encodings: bit flips, interesting byte and
/// length values, truncations, extensions, deletions, duplications and splices.
struct Mutator {
    var rng: SplitMix64
    let corpus: [[UInt8]]

    init(seed: UInt64, corpus: [[UInt8]]) {
        rng = SplitMix64(seed: seed)
        self.corpus = corpus
    }

    mutating func below(_ bound: Int) -> Int { bound <= 1 ? 0 : Int(rng.next() % UInt64(bound)) }

    /// A mutated copy of a random corpus member (1…3 stacked mutations), and its index.
    mutating func next() -> (index: Int, bytes: [UInt8]) {
        let index = below(corpus.count)
        var bytes = corpus[index]
        for _ in 0...below(3) { mutate(&bytes) }
        return (index, bytes)
    }

    private static let interestingBytes: [UInt8] = [0, 1, 2, 3, 0x7F, 0x80, 0xC0, 0xED, 0xF4, 0xFE, 0xFF]
    private static let interestingWords: [UInt64] = [
        0, 1, 2, 3, 4, 24, 64, 100, 255, 256, 1023, 1024, 1025,
        4094, 4095, 4096, 4097, 65535, 65536, 1 << 24, (1 << 24) + 1,
        0x7FFF_FFFF, 0xFFFF_FFFF, .max,
    ]

    mutating func mutate(_ bytes: inout [UInt8]) {
        switch below(9) {
        case 0 where !bytes.isEmpty:  // bit flip
            bytes[below(bytes.count)] ^= 1 << UInt8(below(8))
        case 1 where !bytes.isEmpty:  // interesting byte
            bytes[below(bytes.count)] = Self.interestingBytes[below(Self.interestingBytes.count)]
        case 2 where !bytes.isEmpty:  // random byte
            bytes[below(bytes.count)] = UInt8(truncatingIfNeeded: rng.next())
        case 3:  // truncate
            bytes.removeLast(below(bytes.count + 1))
        case 4:  // extend with random bytes
            for _ in 0...below(16) { bytes.append(UInt8(truncatingIfNeeded: rng.next())) }
        case 5 where !bytes.isEmpty:  // a length-like field: 2, 4 or 8 bytes of an interesting or small value
            let width = [2, 4, 8][below(3)]
            var value = below(2) == 0 ? Self.interestingWords[below(Self.interestingWords.count)] : UInt64(below(5000))
            if below(4) == 0 { value = value &+ UInt64(bitPattern: Int64(below(5) - 2)) }
            let at = below(bytes.count)
            for i in 0..<width where at + i < bytes.count {
                bytes[at + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i)))
            }
        case 6 where !bytes.isEmpty:  // delete a range
            let start = below(bytes.count)
            bytes.removeSubrange(start..<min(bytes.count, start + 1 + below(32)))
        case 7 where !bytes.isEmpty:  // duplicate a range
            let start = below(bytes.count)
            let range = start..<min(bytes.count, start + 1 + below(64))
            bytes.insert(contentsOf: bytes[range], at: below(bytes.count + 1))
        default:  // splice: this one's prefix, another's suffix
            let other = corpus[below(corpus.count)]
            let cut = below(bytes.count + 1)
            let from = below(other.count + 1)
            bytes = Array(bytes[..<cut]) + other[from...]
        }
    }
}
