import FerryKVM
import FerryTestSupport
import Glibc
import Logging
import Testing

@Suite("KVM guest program", .tags(.kvm, .slow), .skippable(.kvm), .skippable(.slow))
struct KVMGuestRunTests {
    let logger = Logger(label: "test.kvm")

    /// The lines and memory a run of `steps` per vCPU must produce, computed in Swift.
    static func reference(seed: UInt64, vcpus: Int, steps: UInt64, interval: UInt64, memory: AnonymousMemory)
        -> [[String]]
    {
        (0..<vcpus).map { vcpu in
            var walk = KVMGuestWalk(seed: seed, vcpu: vcpu, memorySize: memory.size)
            var lines = [KVMGuestWalk.line(vcpu: vcpu, step: 0, checksum: 0)]
            walk.run(steps: steps, memory: memory.base, printInterval: interval) { step, checksum in
                lines.append(KVMGuestWalk.line(vcpu: vcpu, step: step, checksum: checksum))
            }
            lines.append(KVMGuestWalk.line(vcpu: vcpu, step: walk.step, checksum: walk.checksum, done: true))
            return lines
        }
    }

    static func linesByVCPU(_ lines: [KVMConsoleLine], vcpus: Int) -> [[String]] {
        (0..<vcpus).map { vcpu in lines.filter { $0.vcpu == vcpu }.map(\.text) }
    }

    @Test(
        "runs to its step limit; lines, checksums and memory equal the Swift walk",
        .enabled(if: Requirement.kvm.met, Requirement.kvm.why), arguments: [1, 2])
    func runMatchesReference(vcpus: Int) throws {
        let memory = AnonymousMemory(mebibytes: 64)
        let parameters = KVMGuestParameters(seed: 42, vcpus: vcpus, stepLimit: 300_000, printInterval: 50_000)
        let guest = try KVMGuest(memory: memory.base, size: memory.size, parameters: parameters, logger: logger)
        guest.start()
        #expect(try guest.waitUntilHalted(timeoutSeconds: 20))
        guest.stop()
        #expect(guest.stepsPerVCPU == Array(repeating: 300_000, count: vcpus))

        let expectedMemory = AnonymousMemory(mebibytes: 64)
        let expected = Self.reference(seed: 42, vcpus: vcpus, steps: 300_000, interval: 50_000, memory: expectedMemory)
        #expect(Self.linesByVCPU(guest.consoleLines, vcpus: vcpus) == expected)
        #expect(
            memory.equals(expectedMemory, from: KVMGuestLayout.workBase), "working area differs from the Swift walk's")
        #expect(guest.consoleLines.first?.text == "kvm-guest: vcpu 0 step 0 checksum 0x0000000000000000" || vcpus > 1)
    }

    @Test("a paced guest keeps its write rate", .enabled(if: Requirement.kvm.met, Requirement.kvm.why))
    func pacedRate() throws {
        let memory = AnonymousMemory(mebibytes: 16)
        let rate = 100_000.0  // writes per second
        let guest = try KVMGuest(
            memory: memory.base, size: memory.size,
            parameters: KVMGuestParameters(seed: 7, vcpus: 1, writesPerSecond: rate), logger: logger)
        guest.start()
        usleep(300_000)  // past the first touch of every page (expensive under nested KVM)
        let before = guest.stepsPerVCPU[0]
        let started = ContinuousClock.now
        usleep(1_000_000)
        let after = guest.stepsPerVCPU[0]
        let elapsed = Double((ContinuousClock.now - started) / .microseconds(1)) / 1e6
        guest.stop()
        let measured = Double(after - before) / elapsed
        print("KVM guest paced at \(rate) writes/s: measured \(Int(measured)) writes/s over \(elapsed) s")
        // The pace is a ceiling: never above it. Below it only as far as a loaded machine (the
        // other tests of a parallel run) keeps the vCPU thread from running.
        #expect(measured < rate * 1.2)
        #expect(measured > rate * 0.5)
        #expect(guest.failure == nil)
    }
}

/// The KVM guest program's own load figure (REG_LOAD: rdtsc around its budget reads) and its
/// pace changed while it runs.
@Suite("KVM guest load", .tags(.kvm, .slow), .skippable(.kvm), .skippable(.slow), .serialized)
struct KVMGuestLoadTests {
    let logger = Logger(label: "test.kvm")

    /// Waits `afterMs`, then until every vCPU has reported a load, at most 5 s.
    static func freshLoads(_ guest: KVMGuest, afterMs: Int) -> [Int] {
        usleep(UInt32(afterMs * 1000))
        for _ in 0..<100 {
            let loads = guest.loadPermillePerVCPU.compactMap { $0 }
            if loads.count == guest.parameters.vcpus { return loads }
            usleep(50_000)
        }
        return []
    }

    @Test(
        "a paced guest reports a low load, an unpaced one near 1000",
        .enabled(if: Requirement.kvm.met, Requirement.kvm.why))
    func pacedAndUnpacedLoad() throws {
        let memory = AnonymousMemory(mebibytes: 16)
        let parameters = KVMGuestParameters(seed: 5, vcpus: 2, writesPerSecond: 20_000)
        let guest = try KVMGuest(memory: memory.base, size: memory.size, parameters: parameters, logger: logger)
        #expect(guest.loadPermillePerVCPU == [nil, nil])
        guest.start()
        defer { guest.stop() }
        let paced = Self.freshLoads(guest, afterMs: 1500)
        guest.writesPerSecond = nil
        let unpaced = Self.freshLoads(guest, afterMs: 2500)
        print("KVM guest load at 20000 writes/s: \(paced) ‰; unpaced: \(unpaced) ‰")
        #expect(paced.count == 2 && paced.allSatisfy { $0 < 500 }, "paced: \(paced)")
        #expect(unpaced.count == 2 && unpaced.allSatisfy { $0 > 850 }, "unpaced: \(unpaced)")
        #expect(guest.failure == nil)
    }

    @Test(
        "a lower pace lowers the step rate and the load at once",
        .enabled(if: Requirement.kvm.met, Requirement.kvm.why))
    func lowerPace() throws {
        let memory = AnonymousMemory(mebibytes: 16)
        let parameters = KVMGuestParameters(seed: 6, vcpus: 1)
        let guest = try KVMGuest(memory: memory.base, size: memory.size, parameters: parameters, logger: logger)
        guest.start()
        defer { guest.stop() }
        let highLoad = Self.freshLoads(guest, afterMs: 1500)
        let s0 = guest.stepsPerVCPU[0]
        usleep(300_000)
        let high = Double(guest.stepsPerVCPU[0] - s0) / 0.3
        guest.writesPerSecond = 10_000
        usleep(100_000)
        let s1 = guest.stepsPerVCPU[0]
        usleep(500_000)
        let low = Double(guest.stepsPerVCPU[0] - s1) / 0.5
        let lowLoad = Self.freshLoads(guest, afterMs: 1500)
        print("KVM guest: unpaced \(Int(high)) writes/s, load \(highLoad) ‰; at 10000/s: \(Int(low)), \(lowLoad) ‰")
        #expect(low > 5_000 && low < 15_000, "\(low) writes/s after the pace fell to 10000")
        #expect(high > low * 5)
        #expect((lowLoad.first ?? 1000) < (highLoad.first ?? 0) / 2, "\(highLoad) then \(lowLoad)")
        #expect(guest.failure == nil)
    }
}
