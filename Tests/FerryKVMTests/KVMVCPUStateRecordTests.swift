import FerryKVM
import Testing

@Suite("CPU state format 2 record")
struct KVMVCPUStateRecordTests {
    static func sample() -> KVMVCPUState {
        func bytes(_ count: Int, _ seed: UInt8) -> [UInt8] {
            (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ Int(seed)) }
        }
        return KVMVCPUState(
            regs: bytes(144, 1), sregs: bytes(312, 2), xsave: bytes(4096, 3), xcrs: bytes(392, 4),
            events: bytes(64, 5), mpState: bytes(4, 6), debugRegs: bytes(128, 7),
            msrs: [.init(index: 0x10, value: 123_456_789), .init(index: 0xc000_0100, value: 0xdead_beef)])
    }

    @Test("encodes and decodes to the same state, also with zero padding after it")
    func roundTrip() throws {
        let state = Self.sample()
        let record = state.encoded()
        #expect(record.count % 8 == 0)
        #expect(try KVMVCPUState(record: record) == state)
        #expect(try KVMVCPUState(record: record + [UInt8](repeating: 0, count: 64)) == state)
    }

    @Test("rejects a wrong version, a truncated record, a wrong struct size, non-zero padding, a missing section")
    func rejectsMalformed() throws {
        let record = Self.sample().encoded()
        var badVersion = record
        badVersion[0] = 9
        #expect(throws: KVMError.self) { try KVMVCPUState(record: badVersion) }
        #expect(throws: KVMError.self) { try KVMVCPUState(record: Array(record.prefix(record.count - 8))) }
        #expect(throws: KVMError.self) { try KVMVCPUState(record: record + [1]) }
        var wrongSize = Self.sample()
        wrongSize.regs.append(0)
        #expect(throws: KVMError.self) { try KVMVCPUState(record: wrongSize.encoded()) }
        var fewerSections = record
        fewerSections[2] = 7  // section count 7 of 8: the used length no longer matches
        #expect(throws: KVMError.self) { try KVMVCPUState(record: fewerSections) }
        for cut in stride(from: 0, to: record.count, by: 97) {
            _ = try? KVMVCPUState(record: Array(record.prefix(cut)))  // never crashes
        }
    }
}
