import FerryGuest
import FerryGuestMigration
import FerryKVMMigration
import FerryProtocol
import Testing

@testable import FerryMigration

@Suite struct VCPURecordMappingTests {
    /// Registers survive the trip through a DEVICE_STATE frame's bytes exactly, including the
    /// signed pacing credit and values that use all 64 bits.
    @Test func registersCrossTheWireUnchanged() throws {
        let states = [
            VCPUState(
                step: 0x0102_0304_0506_0708, rngState: .max - 5, cursor: 77, cursor2: 3, creditNs: -123_456,
                traceEpochMs: 9_000_000_001),
            VCPUState.initial(vcpu: 1, seed: 42),
        ]
        let guestState = DeviceState(
            sections: states.enumerated().map { index, state in
                var body: [UInt8] = []
                state.record.encode(into: &body)
                return DeviceStateSection(
                    kind: DeviceStateSection.vcpu, version: BuiltinGuestKind.vcpuFormat, instance: UInt32(index),
                    body: body)
            })
        let payload = guestState.encodedPayload()
        #expect(payload.count == 8 + 2 * (16 + 64))
        // Protocol.md 3.8.1: step first, little-endian, after the section header.
        #expect(Array(payload[24..<32]) == [8, 7, 6, 5, 4, 3, 2, 1])
        let decoded = try payload.withUnsafeBytes { try DeviceState(payload: $0) }
        #expect(
            try decoded.vcpuBodies.map { body in VCPUState(try body.withUnsafeBytes { try VCPURecord(bytes: $0) }) }
                == states)
    }
}
