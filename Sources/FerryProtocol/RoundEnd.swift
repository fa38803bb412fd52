/// `ROUND_END` (source → destination): pre-copy round `round` is over; the source's statistics
/// for logs and reports (Protocol.md 3.6).
public struct RoundEnd: FrameMessage, ValidatingMessage, Equatable {
    public static let frameType = FrameType.roundEnd

    public var round: UInt32
    public var pagesSent: UInt64
    /// Bytes of `PAGE_BATCH` frames in this round, headers included.
    public var wireBytes: UInt64
    public var durationMicroseconds: UInt64
    /// Pages harvested as dirty at the end of the round (to send next).
    public var dirtyPages: UInt64
    /// Pages per second dirtied during the round.
    public var dirtyRate: UInt64
    /// vCPU slow-down in force, 0…99.
    public var throttlePercent: UInt32

    public init(
        round: UInt32, pagesSent: UInt64, wireBytes: UInt64, durationMicroseconds: UInt64,
        dirtyPages: UInt64, dirtyRate: UInt64, throttlePercent: UInt32
    ) {
        self.round = round
        self.pagesSent = pagesSent
        self.wireBytes = wireBytes
        self.durationMicroseconds = durationMicroseconds
        self.dirtyPages = dirtyPages
        self.dirtyRate = dirtyRate
        self.throttlePercent = throttlePercent
    }

    public func validate() throws(ProtocolError) {
        if throttlePercent > 99 {
            throw invalid("ROUND_END", "throttle_percent \(throttlePercent) is above 99")
        }
    }

    public func encode(into out: inout [UInt8]) {
        requireValid()
        out.appendLittleEndian(round)
        out.appendZeros(4)
        out.appendLittleEndian(pagesSent)
        out.appendLittleEndian(wireBytes)
        out.appendLittleEndian(durationMicroseconds)
        out.appendLittleEndian(dirtyPages)
        out.appendLittleEndian(dirtyRate)
        out.appendLittleEndian(throttlePercent)
        out.appendZeros(4)
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "ROUND_END")
        round = try reader.read(UInt32.self, "round")
        try reader.reserved(4)
        pagesSent = try reader.read(UInt64.self, "pages_sent")
        wireBytes = try reader.read(UInt64.self, "wire_bytes")
        durationMicroseconds = try reader.read(UInt64.self, "duration_us")
        dirtyPages = try reader.read(UInt64.self, "dirty_pages")
        dirtyRate = try reader.read(UInt64.self, "dirty_rate")
        throttlePercent = try reader.read(UInt32.self, "throttle_percent")
        try reader.reserved(4)
        try reader.finish()
        try validate()
    }
}
