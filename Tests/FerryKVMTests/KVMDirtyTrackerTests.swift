import FerryKVM
import FerrySystem
import FerryTestSupport
import Glibc
import Logging
import Testing

@Suite("KVM dirty log tracker", .tags(.kvm), .skippable(.kvm))
struct KVMDirtyTrackerTests {
    let logger = Logger(label: "test.kvm")
    static let reservedPages = KVMGuestLayout.workBase / KVMGuestLayout.pageSize

    @Test(
        "reports the pages the guest wrote between two harvests and no others; merges the VMM's writes",
        .enabled(if: Requirement.kvm.met, Requirement.kvm.why))
    func guestAndVMMWrites() throws {
        let memory = AnonymousMemory(mebibytes: 64)
        let seed: UInt64 = 99
        let guest = try KVMGuest(
            memory: memory.base, size: memory.size,
            parameters: KVMGuestParameters(seed: seed, vcpus: 1, writesPerSecond: 20_000), logger: logger)
        let tracker = guest.makeDirtyTracker()
        #expect(tracker.kind == .kvm)
        try tracker.start()
        let pageCount = memory.size / KVMGuestLayout.pageSize
        guest.start()
        usleep(50_000)
        guest.pause()
        let first = guest.stepsPerVCPU[0]
        var discard = DirtyBitmap(count: pageCount)
        try tracker.harvest(into: &discard)
        guest.resume()
        // 100 ms at 20,000 writes/s, or longer on a loaded machine: enough writes to judge.
        usleep(100_000)
        let deadline = ContinuousClock.now + .seconds(20)
        while guest.stepsPerVCPU[0] < first + 1024, ContinuousClock.now < deadline { usleep(10_000) }
        guest.pause()
        let second = guest.stepsPerVCPU[0]
        var dirty = DirtyBitmap(count: pageCount)
        let found = try tracker.harvest(into: &dirty)
        #expect(second > first + 256, "the guest wrote too little between the harvests to judge")
        // A parked vCPU may be up to one budget (256 steps) past its published step.
        let must = KVMGuestWalk.pages(seed: seed, vcpu: 0, memorySize: memory.size, steps: (first + 256)..<second)
        let may = KVMGuestWalk.pages(seed: seed, vcpu: 0, memorySize: memory.size, steps: first..<(second + 256))
        let missing = must.filter { !dirty[$0] }
        #expect(missing.isEmpty, "\(missing.count) written pages not reported")
        var extra = 0
        dirty.forEachSetBit { page in if page >= Self.reservedPages && !may.contains(page) { extra += 1 } }
        #expect(extra == 0, "\(extra) working-area pages reported that the guest did not write")
        #expect(found == dirty.popcount())
        print(
            "KVM dirty log: \(second - first) steps between harvests, \(must.count)…\(may.count) pages written, \(found) reported"
        )

        // Paused: only the VMM writes now, and the harvest reports exactly its pages.
        let untouched = (Self.reservedPages..<pageCount).first { !may.contains($0) && !dirty[$0] }!
        withUnsafeBytes(of: UInt64(0x1234_5678)) {
            guest.machine.writeGuestMemory(at: untouched * KVMGuestLayout.pageSize + 8, $0)
        }
        var afterWrite = DirtyBitmap(count: pageCount)
        try tracker.harvest(into: &afterWrite)
        #expect(afterWrite.popcount() == 1 && afterWrite[untouched])
        var empty = DirtyBitmap(count: pageCount)
        #expect(try tracker.harvest(into: &empty) == 0)
        guest.stop()
        tracker.stop()
    }

    @Test(
        "deferred start: unprotected pages are reported until protected; protected ones only when written",
        .enabled(if: Requirement.kvm.met, Requirement.kvm.why))
    func deferredStart() throws {
        let memory = AnonymousMemory(mebibytes: 16)
        let guest = try KVMGuest(
            memory: memory.base, size: memory.size, parameters: KVMGuestParameters(), logger: logger)
        let tracker = guest.makeDirtyTracker()
        let pageCount = memory.size / KVMGuestLayout.pageSize
        try tracker.startDeferred()
        try tracker.protect(pages: 0..<1024)
        var first = DirtyBitmap(count: pageCount)
        #expect(
            try tracker.harvest(into: &first) == pageCount - 1024,
            "pages never protected are reported, protected ones are not")
        var second = DirtyBitmap(count: pageCount)
        #expect(try tracker.harvest(into: &second) == 0)
        tracker.stop()
        // Stopped and started again: a fresh slot, nothing protected.
        try tracker.startDeferred()
        var third = DirtyBitmap(count: pageCount)
        #expect(try tracker.harvest(into: &third) == pageCount)
        tracker.stop()
    }
}
