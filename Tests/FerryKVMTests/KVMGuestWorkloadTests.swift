import FerryKVM
import Testing

@Suite("KVM guest workload text")
struct KVMGuestWorkloadTests {
    @Test("parses rates, limits and intervals, and prints text that reads back to the same parameters")
    func roundTrip() throws {
        let parsed = try KVMGuestParameters(
            workload: "kvm:120MB/s,steps=5000,interval=1024,chunk=64", seed: 9, vcpus: 2)
        #expect(parsed.writesPerSecond == 120e6 / 4096)
        #expect(parsed.stepLimit == 5000 && parsed.printInterval == 1024 && parsed.budgetChunk == 64)
        #expect(parsed.seed == 9 && parsed.vcpus == 2)
        #expect(try KVMGuestParameters(workload: parsed.workload, seed: 9, vcpus: 2) == parsed)
        let plain = try KVMGuestParameters(workload: "kvm", seed: 1, vcpus: 1)
        #expect(plain == KVMGuestParameters() && plain.workload == "kvm")
        #expect(try KVMGuestParameters(workload: "kvm:30000pages/s", seed: 1, vcpus: 1).writesPerSecond == 30000)
    }

    @Test("the journal interval for a disk rate: the rate per vCPU over it, at least 1; unpaced keeps its own")
    func journalInterval() throws {
        // 40,000 pages/s over 2 vCPUs is 20,000 steps/s of vCPU 0: 200 steps per record at 100/s.
        let paced = try KVMGuestParameters(workload: "kvm:40000pages/s", seed: 1, vcpus: 2)
        #expect(paced.journalInterval(recordsPerSecond: 100) == 200)
        #expect(paced.journalInterval(recordsPerSecond: 1e6) == 1)
        let unpaced = try KVMGuestParameters(workload: "kvm:journal=77", seed: 1, vcpus: 1)
        #expect(unpaced.journalInterval(recordsPerSecond: 100) == 77)
    }

    @Test(
        "rejects what it cannot mean",
        arguments: [
            "uniform:200MB/s", "kvm:", "kvm:fast", "kvm:100MB", "kvm:steps=0",
            "kvm:steps=x", "kvm:color=red", "kvm:100MB/s,,steps=3", "kvm:chunk=4294967295",
        ])
    func rejects(text: String) {
        #expect(throws: KVMError.self) { try KVMGuestParameters(workload: text, seed: 1, vcpus: 1) }
    }
}
