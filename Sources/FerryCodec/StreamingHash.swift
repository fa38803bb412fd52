import CXXHash

/// XXH3-64 (seed 0) of bytes that arrive in pieces: the same value `PageHash.hash` gives for
/// them all at once, with constant memory (a guest attachment of any length, Protocol.md 3.25).
public final class StreamingHash {
    private let state: OpaquePointer

    public init() {
        guard let state = XXH3_createState() else { fatalError("XXH3_createState: out of memory") }
        self.state = state
        XXH3_64bits_reset(state)
    }

    deinit { XXH3_freeState(state) }

    public func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
        XXH3_64bits_update(state, base, bytes.count)
    }

    public var value: UInt64 { XXH3_64bits_digest(state) }
}
