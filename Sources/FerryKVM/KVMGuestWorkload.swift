import FerryGuest

/// The KVM guest's parameters as one line of text, for `--workload` and for the `workload`
/// field of GUEST_CONFIG (Protocol.md 3.4), so they travel to the destination like the built-in
/// guest's workload (the seed and vCPU count travel in their own fields).
///
/// Form: `kvm`, then optionally `:` and comma-separated items: a rate (`120MB/s`, `30000pages/s`;
/// without one the guest runs unpaced), `steps=N` (per-vCPU step limit), `interval=N` (steps
/// between console lines), `chunk=N` (largest write budget), `journal=N` (with a disk: steps
/// between journal step records). E.g. `kvm:120MB/s,interval=65536`.
extension KVMGuestParameters {
    public init(workload: String, seed: UInt64, vcpus: Int) throws(KVMError) {
        self.init(seed: seed, vcpus: vcpus)
        func bad(_ text: String) -> KVMError {
            KVMError(
                .invalidConfiguration,
                "workload '\(workload)': \(text); expected kvm[:RATE][,steps=N][,interval=N][,chunk=N][,journal=N], e.g. kvm:120MB/s"
            )
        }
        guard workload == "kvm" || workload.hasPrefix("kvm:") else { throw bad("not a KVM guest workload") }
        guard workload != "kvm" else { return }
        for item in workload.dropFirst(4).split(separator: ",", omittingEmptySubsequences: false) {
            if let equals = item.firstIndex(of: "=") {
                let key = item[..<equals]
                let text = item[item.index(after: equals)...]
                guard let value = UInt64(text), value > 0 else { throw bad("'\(item)' needs a positive whole number") }
                switch key {
                case "steps": stepLimit = value
                case "interval": printInterval = value
                case "journal": journalInterval = value
                case "chunk":
                    guard value < UInt64(KVMGuestLayout.budgetShutdown) else {
                        throw bad("chunk \(value) is too large")
                    }
                    budgetChunk = UInt32(value)
                default: throw bad("unknown item '\(key)'")
                }
            } else {
                do {
                    writesPerSecond = try Rate.parse(String(item)).pagesPerSecond(pageSize: KVMGuestLayout.pageSize)
                } catch {
                    throw bad(error.description)
                }
            }
        }
        try validate()
    }

    /// The text form (`init(workload:seed:vcpus:)` reads it back to equal parameters, the rate
    /// as pages per second).
    public var workload: String {
        var items: [String] = []
        if let writesPerSecond { items.append("\(writesPerSecond)pages/s") }
        if let stepLimit { items.append("steps=\(stepLimit)") }
        if printInterval != KVMGuestParameters().printInterval { items.append("interval=\(printInterval)") }
        if budgetChunk != KVMGuestParameters().budgetChunk { items.append("chunk=\(budgetChunk)") }
        if journalInterval != KVMGuestParameters().journalInterval { items.append("journal=\(journalInterval)") }
        return items.isEmpty ? "kvm" : "kvm:" + items.joined(separator: ",")
    }
}
