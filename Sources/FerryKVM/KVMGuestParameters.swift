/// What the KVM guest program is told, and how the VMM paces it.
public struct KVMGuestParameters: Sendable, Equatable {
    /// Seeds every vCPU's page walk.
    public var seed: UInt64
    public var vcpus: Int
    /// Writes per second for the whole guest, each to a pseudo-random page of the working area
    /// (so about this many distinct pages per second while the working area is much larger than
    /// what a second touches); nil runs unpaced, as fast as the vCPUs go.
    public var writesPerSecond: Double?
    /// Per vCPU: the step at which it prints its final line and halts; nil runs until stopped.
    public var stepLimit: UInt64?
    /// Steps between progress lines.
    public var printInterval: UInt64
    /// Largest budget one request of a paced guest returns (one exit per this many writes at
    /// most); an unpaced guest gets at least `KVMVCPURunner.unpacedGrant` (65,536) per request.
    public var budgetChunk: UInt32
    /// With a disk: vCPU 0's steps between journal step records (docs/disk.md).
    public var journalInterval: UInt64

    public init(
        seed: UInt64 = 1, vcpus: Int = 1, writesPerSecond: Double? = nil, stepLimit: UInt64? = nil,
        printInterval: UInt64 = 1 << 16, budgetChunk: UInt32 = 256, journalInterval: UInt64 = 4096
    ) {
        self.journalInterval = journalInterval
        self.seed = seed
        self.vcpus = vcpus
        self.writesPerSecond = writesPerSecond
        self.stepLimit = stepLimit
        self.printInterval = printInterval
        self.budgetChunk = budgetChunk
    }

    /// A guest dirtying `bytesPerSecond` worth of 4 KiB pages.
    public static func dirtying(bytesPerSecond: Double, seed: UInt64 = 1, vcpus: Int = 1, stepLimit: UInt64? = nil)
        -> Self
    {
        Self(
            seed: seed, vcpus: vcpus, writesPerSecond: bytesPerSecond / Double(KVMGuestLayout.pageSize),
            stepLimit: stepLimit)
    }

    /// vCPU 0's steps between journal step records for about `recordsPerSecond` records a
    /// second: the guest's rate per vCPU over it (at least 1); `journalInterval` as it is for an
    /// unpaced guest, whose step rate is unknown.
    public func journalInterval(recordsPerSecond: Double) -> UInt64 {
        guard let rate = writesPerSecond else { return journalInterval }
        return UInt64(max(1, (rate / Double(vcpus) / recordsPerSecond).rounded()))
    }

    func validate() throws(KVMError) {
        guard (1...KVMGuestLayout.maxVCPUs).contains(vcpus) else {
            throw KVMError(
                .invalidConfiguration, "\(vcpus) vCPUs: the KVM guest supports 1 to \(KVMGuestLayout.maxVCPUs)")
        }
        if let rate = writesPerSecond, !(rate > 0 && rate.isFinite) {
            throw KVMError(
                .invalidConfiguration, "rate \(rate) writes/s: must be a positive number, or nil for unpaced")
        }
        guard printInterval > 0 else {
            throw KVMError(.invalidConfiguration, "print interval 0: must be at least 1 step")
        }
        guard budgetChunk > 0, budgetChunk < KVMGuestLayout.budgetShutdown else {
            throw KVMError(
                .invalidConfiguration, "budget chunk \(budgetChunk): must be in 1…\(KVMGuestLayout.budgetShutdown - 1)")
        }
        guard journalInterval > 0 else {
            throw KVMError(.invalidConfiguration, "journal interval 0: must be at least 1 step")
        }
    }
}

/// One line the guest printed through its console register.
public struct KVMConsoleLine: Sendable, Equatable, CustomStringConvertible {
    public var vcpu: Int
    public var text: String
    public init(vcpu: Int, text: String) {
        self.vcpu = vcpu
        self.text = text
    }
    public var description: String { text }
}
