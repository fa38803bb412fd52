/// `CPU_STATE` (source → destination), during blackout: one record per vCPU (Protocol.md 3.8).
public struct CPUState: FrameMessage, ValidatingMessage, Equatable {
    public static let frameType = FrameType.cpuState
    /// Format 1: the Ferry built-in vCPU record (`VCPURecord`, 64 bytes).
    public static let builtinFormat: UInt16 = 1
    static let headerSize = 8

    public var format: UInt16
    public var vcpuCount: UInt16
    public var recordSize: UInt32
    /// `vcpuCount × recordSize` bytes, vCPU 0 first.
    public var records: [UInt8]

    public init(format: UInt16, vcpuCount: UInt16, recordSize: UInt32, records: [UInt8]) {
        self.format = format
        self.vcpuCount = vcpuCount
        self.recordSize = recordSize
        self.records = records
    }

    /// Format 1 state from the built-in guest's records, vCPU 0 first.
    public init(builtin vcpus: [VCPURecord]) {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(vcpus.count * VCPURecord.size)
        for vcpu in vcpus { vcpu.encode(into: &bytes) }
        self.init(format: Self.builtinFormat, vcpuCount: UInt16(truncatingIfNeeded: vcpus.count),
                  recordSize: UInt32(VCPURecord.size), records: bytes)
    }

    /// The format 1 records; throws if this is another format.
    public func builtinRecords() throws(ProtocolError) -> [VCPURecord] {
        if format != Self.builtinFormat || recordSize != UInt32(VCPURecord.size) {
            throw invalid("CPU_STATE", "format \(format) with \(recordSize)-byte records is not the built-in format 1")
        }
        var result: [VCPURecord] = []
        result.reserveCapacity(Int(vcpuCount))
        try records.withUnsafeBytesTyped { (bytes) throws(ProtocolError) in
            for start in stride(from: 0, to: bytes.count, by: VCPURecord.size) {
                result.append(try VCPURecord(bytes: UnsafeRawBufferPointer(rebasing: bytes[start..<(start + VCPURecord.size)])))
            }
        }
        return result
    }

    public func validate() throws(ProtocolError) {
        if format == 0 { throw invalid("CPU_STATE", "format is 0") }
        if vcpuCount < 1 || Int(vcpuCount) > ProtocolLimits.maxVCPUs {
            throw invalid("CPU_STATE", "vcpu_count \(vcpuCount) is outside 1…\(ProtocolLimits.maxVCPUs)")
        }
        if recordSize == 0 { throw invalid("CPU_STATE", "record_size is 0") }
        if format == Self.builtinFormat && recordSize != UInt32(VCPURecord.size) {
            throw invalid("CPU_STATE", "format 1 records are \(VCPURecord.size) bytes, not \(recordSize)")
        }
        let expected = UInt64(vcpuCount) * UInt64(recordSize)
        if expected > UInt64(FrameType.cpuState.maxPayload - Self.headerSize) {
            throw ProtocolError(.tooLarge, "CPU_STATE \(vcpuCount) records of \(recordSize) bytes exceed the 64 KiB payload")
        }
        if UInt64(records.count) != expected {
            throw invalid("CPU_STATE", "holds \(records.count) record bytes, \(vcpuCount) × \(recordSize) = \(expected) expected")
        }
        if format == Self.builtinFormat {
            _ = try builtinRecords()
        }
    }

    public func encode(into out: inout [UInt8]) {
        requireValid()
        out.appendLittleEndian(format)
        out.appendLittleEndian(vcpuCount)
        out.appendLittleEndian(recordSize)
        out.append(contentsOf: records)
    }

    public init(payload: UnsafeRawBufferPointer) throws(ProtocolError) {
        var reader = PayloadReader(payload, message: "CPU_STATE")
        format = try reader.read(UInt16.self, "format")
        vcpuCount = try reader.read(UInt16.self, "vcpu_count")
        recordSize = try reader.read(UInt32.self, "record_size")
        let length = UInt64(vcpuCount) * UInt64(recordSize)
        if length > UInt64(reader.remaining) {
            throw ProtocolError(.truncated, "CPU_STATE \(vcpuCount) records of \(recordSize) bytes need \(length) bytes, \(reader.remaining) left")
        }
        records = try reader.readBytes(Int(length), "records")
        try reader.finish()
        try validate()
    }
}

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

    public init(step: UInt64, rngState: UInt64, cursor: UInt64, cursor2: UInt64,
                creditNanoseconds: Int64, traceEpochMilliseconds: UInt64) {
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
        var reader = PayloadReader(bytes, message: "CPU_STATE record")
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
