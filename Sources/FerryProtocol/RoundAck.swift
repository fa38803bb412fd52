/// `ROUND_ACK` (destination → source): every batch of round `round` is applied (Protocol.md 3.7).
public struct RoundAck: FrameMessage, Equatable {
    public static let frameType = FrameType.roundAck

    public var round: UInt32
    public var pagesReceived: UInt64
    /// Distinct pages received so far.
    public var pagesHeld: UInt64
    /// Time the destination spent decoding, writing and hashing this round.
    public var applyMicroseconds: UInt64
    /// Time to compute the image digest now (predicts the blackout's verification cost).
    public var digestMicroseconds: UInt64

    public init(
        round: UInt32, pagesReceived: UInt64, pagesHeld: UInt64,
        applyMicroseconds: UInt64, digestMicroseconds: UInt64
    ) {
        self.round = round
        self.pagesReceived = pagesReceived
        self.pagesHeld = pagesHeld
        self.applyMicroseconds = applyMicroseconds
        self.digestMicroseconds = digestMicroseconds
    }

    public func encode(into out: inout [UInt8]) {
        out.appendLittleEndian(round)
        out.appendZeros(4)
        out.appendLittleEndian(pagesReceived)
        out.appendLittleEndian(pagesHeld)
        out.appendLittleEndian(applyMicroseconds)
        out.appendLittleEndian(digestMicroseconds)
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "ROUND_ACK")
        round = try reader.read(UInt32.self, "round")
        try reader.reserved(4)
        pagesReceived = try reader.read(UInt64.self, "pages_received")
        pagesHeld = try reader.read(UInt64.self, "pages_held")
        applyMicroseconds = try reader.read(UInt64.self, "apply_us")
        digestMicroseconds = try reader.read(UInt64.self, "digest_us")
        try reader.finish()
    }
}
