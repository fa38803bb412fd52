import FerryGuest
import FerryProtocol
import Testing

@testable import FerryMigration

@Suite struct VCPURecordMappingTests {
    /// Registers survive the trip through a CPU_STATE frame's bytes exactly, including the signed
    /// pacing credit and values that use all 64 bits.
    @Test func registersCrossTheWireUnchanged() throws {
        let states = [
            VCPUState(step: 0x0102_0304_0506_0708, rngState: .max - 5, cursor: 77, cursor2: 3, creditNs: -123_456,
                      traceEpochMs: 9_000_000_001),
            VCPUState.initial(vcpu: 1, seed: 42),
        ]
        let payload = CPUState(builtin: states.map(\.record)).encodedPayload()
        #expect(payload.count == 8 + 2 * 64)
        // Protocol.md 3.8: step first, little-endian.
        #expect(Array(payload[8..<16]) == [8, 7, 6, 5, 4, 3, 2, 1])
        let decoded = try payload.withUnsafeBytes { try CPUState(payload: $0) }
        #expect(try decoded.builtinRecords().map(VCPUState.init) == states)
    }
}
