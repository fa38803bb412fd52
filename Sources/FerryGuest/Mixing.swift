/// The guest's deterministic randomness: splitmix64 (Steele, Lea, Flood 2014) and its finalizer as
/// a hash. Everything the guest "decides" comes from these functions of explicit inputs, never from
/// time or thread interleaving.
enum Mixing {
    static let golden: UInt64 = 0x9E37_79B9_7F4A_7C15

    /// splitmix64's output function: a bijective 64-bit mixer.
    @inline(__always)
    static func finalize(_ x: UInt64) -> UInt64 {
        var z = x
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Hash of two values (order matters).
    @inline(__always)
    static func hash(_ a: UInt64, _ b: UInt64) -> UInt64 {
        finalize(finalize(a &+ golden) ^ (b &* 0xD6E8_FEB8_6659_FD93))
    }

    /// Hash of three values (order matters).
    @inline(__always)
    static func hash(_ a: UInt64, _ b: UInt64, _ c: UInt64) -> UInt64 {
        hash(hash(a, b), c)
    }

    /// One splitmix64 step: advances `state` and returns the next output.
    @inline(__always)
    static func next(_ state: inout UInt64) -> UInt64 {
        state &+= golden
        return finalize(state)
    }

    /// A value uniform in `0..<bound` from a 64-bit random value (Lemire's multiply-high).
    @inline(__always)
    static func bounded(_ random: UInt64, _ bound: UInt64) -> UInt64 {
        random.multipliedFullWidth(by: bound).high
    }

    /// A value uniform in [0, 1) from a 64-bit random value.
    @inline(__always)
    static func unit(_ random: UInt64) -> Double {
        Double(random >> 11) * 0x1p-53
    }
}
