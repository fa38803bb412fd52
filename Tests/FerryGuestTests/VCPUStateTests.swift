import Testing

@testable import FerryGuest

@Suite struct VCPUStateTests {
    @Test func initialStatesDifferPerVCPUAndSeed() {
        #expect(VCPUState.initial(vcpu: 0, seed: 1) == VCPUState.initial(vcpu: 0, seed: 1))
        #expect(VCPUState.initial(vcpu: 0, seed: 1).rngState != VCPUState.initial(vcpu: 1, seed: 1).rngState)
        #expect(VCPUState.initial(vcpu: 0, seed: 1).rngState != VCPUState.initial(vcpu: 0, seed: 2).rngState)
        #expect(VCPUState.initial(vcpu: 3, seed: 9).step == 0)
    }
}
