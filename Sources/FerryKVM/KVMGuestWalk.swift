/// The guest program's page walk for one vCPU, computed in Swift (the reference for tests and
/// for checking a migrated guest's final checksum without running KVM). It must match
/// `Tools/kvm-guest/guest.c` step for step; the tests compare the two.
public struct KVMGuestWalk: Sendable, Equatable {
    public let vcpu: Int
    public let firstPage: UInt64
    public let pageCount: UInt64
    public private(set) var random: UInt64
    public private(set) var step: UInt64 = 0
    public private(set) var checksum: UInt64 = 0

    public init(seed: UInt64, vcpu: Int, memorySize: Int) {
        self.vcpu = vcpu
        firstPage = UInt64(KVMGuestLayout.workBase / KVMGuestLayout.pageSize)
        pageCount = UInt64(KVMGuestLayout.workPages(memorySize: memorySize))
        random = seed ^ Self.mix(UInt64(vcpu) + 1)
    }

    static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }

    /// Runs `steps` steps on `memory` (a copy of the guest's memory: the walk reads what each
    /// slot held), calling `progress(step, checksum)` where the guest prints a line.
    public mutating func run(
        steps: UInt64, memory: UnsafeMutableRawPointer, printInterval: UInt64,
        progress: (UInt64, UInt64) -> Void = { _, _ in }
    ) {
        for _ in 0..<steps {
            random &+= 0x9e37_79b9_7f4a_7c15
            let r = Self.mix(random)
            let page = firstPage + r.multipliedFullWidth(by: pageCount).high
            let offset = Int(page) * KVMGuestLayout.pageSize + vcpu * 64 + Int(step & 7) * 8
            let value = Self.mix(memory.load(fromByteOffset: offset, as: UInt64.self) ^ r)
            memory.storeBytes(of: value, toByteOffset: offset, as: UInt64.self)
            checksum = Self.mix(checksum ^ value) &+ step
            step += 1
            if step % printInterval == 0 { progress(step, checksum) }
        }
    }

    /// The line the guest prints at a progress point (`done` for its final line).
    public static func line(vcpu: Int, step: UInt64, checksum: UInt64, done: Bool = false) -> String {
        let hex = String(checksum, radix: 16)
        return "kvm-guest: vcpu \(vcpu) \(done ? "done " : "")step \(step) checksum 0x"
            + String(repeating: "0", count: 16 - hex.count) + hex
    }
}

extension KVMGuestWalk {
    /// The working-area pages (indices into guest memory) that steps `steps` of `vcpu` write.
    public static func pages(seed: UInt64, vcpu: Int, memorySize: Int, steps: Range<UInt64>) -> Set<Int> {
        let walk = KVMGuestWalk(seed: seed, vcpu: vcpu, memorySize: memorySize)
        var random = walk.random
        var pages = Set<Int>()
        for step in 0..<steps.upperBound {
            random &+= 0x9e37_79b9_7f4a_7c15
            if step >= steps.lowerBound {
                pages.insert(Int(walk.firstPage + mix(random).multipliedFullWidth(by: walk.pageCount).high))
            }
        }
        return pages
    }
}
