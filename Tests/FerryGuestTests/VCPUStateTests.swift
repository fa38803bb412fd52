import Testing
@testable import FerryGuest

@Suite struct VCPUStateTests {
    @Test func encodeDecodeRoundTripWithLayoutOfProtocolSection38() {
        let state = VCPUState(step: 0x0102_0304_0506_0708, rngState: .max - 5, cursor: 77, cursor2: 3,
                              creditNs: -123_456, traceEpochMs: 9_000_000_001)
        var record = [UInt8](repeating: 0xFF, count: VCPUState.recordSize)
        record.withUnsafeMutableBytes { state.encode(to: $0.baseAddress!) }
        #expect(Array(record[0..<8]) == [8, 7, 6, 5, 4, 3, 2, 1])
        #expect(Array(record[16..<24]) == [77, 0, 0, 0, 0, 0, 0, 0])
        #expect(Array(record[24..<32]) == [3, 0, 0, 0, 0, 0, 0, 0])
        #expect(Array(record[32..<40]) == [0xC0, 0x1D, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
        #expect(record[48..<64].allSatisfy { $0 == 0 })
        let decoded = record.withUnsafeBytes { VCPUState(decoding: $0.baseAddress!) }
        #expect(decoded == state)
        // Unaligned records decode too (records follow an 8-byte CPU_STATE header on the wire).
        var shifted = [UInt8](repeating: 0, count: 3) + record
        let unaligned = shifted.withUnsafeMutableBytes { VCPUState(decoding: $0.baseAddress! + 3) }
        #expect(unaligned == state)
    }

    @Test func initialStatesDifferPerVCPUAndSeed() {
        #expect(VCPUState.initial(vcpu: 0, seed: 1) == VCPUState.initial(vcpu: 0, seed: 1))
        #expect(VCPUState.initial(vcpu: 0, seed: 1).rngState != VCPUState.initial(vcpu: 1, seed: 1).rngState)
        #expect(VCPUState.initial(vcpu: 0, seed: 1).rngState != VCPUState.initial(vcpu: 0, seed: 2).rngState)
        #expect(VCPUState.initial(vcpu: 3, seed: 9).step == 0)
    }
}
