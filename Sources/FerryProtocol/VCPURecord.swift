/// A format 1 vCPU record: the built-in guest's "registers" (Protocol.md 3.8), 64 bytes.
public struct VCPURecord: Equatable, Sendable {
    public static let size = 64

    /// Writes this vCPU has completed.
    public var step: UInt64
    public var rngState: UInt64
    /// Workload position (sweep page, trace line).
    public var cursor: UInt64
    /// Second workload position (trace entry within the line).
    public var cursor2: UInt64
    /// Pacing state: nanoseconds of write budget carried over.
    public var creditNanoseconds: Int64
    /// Trace replay clock offset.
    public var traceEpochMilliseconds: UInt64

    public init(
        step: UInt64, rngState: UInt64, cursor: UInt64, cursor2: UInt64,
        creditNanoseconds: Int64, traceEpochMilliseconds: UInt64
    ) {
        self.step = step
        self.rngState = rngState
        self.cursor = cursor
        self.cursor2 = cursor2
        self.creditNanoseconds = creditNanoseconds
        self.traceEpochMilliseconds = traceEpochMilliseconds
    }

    public func encode(into out: inout [UInt8]) {
        out.appendLittleEndian(step)
        out.appendLittleEndian(rngState)
        out.appendLittleEndian(cursor)
        out.appendLittleEndian(cursor2)
        out.appendLittleEndian(creditNanoseconds)
        out.appendLittleEndian(traceEpochMilliseconds)
        out.appendZeros(16)
    }

    /// Decodes exactly 64 bytes.
    public init(bytes: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(bytes, message: "vCPU record")
        step = try reader.read(UInt64.self, "step")
        rngState = try reader.read(UInt64.self, "rng_state")
        cursor = try reader.read(UInt64.self, "cursor")
        cursor2 = try reader.read(UInt64.self, "cursor2")
        creditNanoseconds = try reader.read(Int64.self, "credit_ns")
        traceEpochMilliseconds = try reader.read(UInt64.self, "trace_epoch_ms")
        try reader.reserved(16)
        try reader.finish()
    }
}
