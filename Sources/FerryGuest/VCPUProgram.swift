/// What one vCPU does, derived from the guest configuration alone: which page step `s` writes
/// (a function of the registers only) and how much running time a step costs. Identical on the
/// source and the destination of a migration.
struct VCPUProgram: Sendable {
    enum Kind: Sendable {
        case idle
        case uniform
        /// Hot set: `count` pages from `start` (wrapping); `share` in [0, 1] of the writes go there.
        case hotset(start: UInt64, count: UInt64, share: Double)
        /// This vCPU's share of the image: `count` pages from `start`.
        case sweep(start: UInt64, count: UInt64)
        case trace(DirtyTrace)
    }

    let kind: Kind
    let vcpu: Int
    let vcpus: Int
    let seed: UInt64
    let pageCount: UInt64
    let pageSize: Int
    /// Nanoseconds of running time per step at throttle 0 (rate workloads; 0 otherwise).
    let stepCostNs: Double
    /// False when this vCPU can never write (idle, or a trace with no entry for it).
    let hasWork: Bool

    init(configuration c: GuestConfiguration, vcpu: Int, pageCount: Int) {
        self.vcpu = vcpu
        vcpus = c.vcpus
        seed = c.seed
        self.pageCount = UInt64(pageCount)
        pageSize = c.pageSize
        let perVCPU = (c.workload.rate?.pagesPerSecond(pageSize: c.pageSize) ?? 0) / Double(c.vcpus)
        stepCostNs = perVCPU > 0 ? 1e9 / perVCPU : 0
        switch c.workload {
        case .idle:
            kind = .idle
            hasWork = false
        case .uniform:
            kind = .uniform
            hasWork = true
        case .hotset(_, let hot, let share):
            let count = min(UInt64(pageCount), max(1, UInt64((hot / 100 * Double(pageCount)).rounded())))
            let start = Mixing.bounded(Mixing.hash(c.seed, 0x484F_5453_4554), UInt64(pageCount))
            kind = .hotset(start: start, count: count, share: share / 100)
            hasWork = true
        case .sweep:
            let first = UInt64(pageCount * vcpu / c.vcpus)
            let end = UInt64(pageCount * (vcpu + 1) / c.vcpus)
            kind = .sweep(start: first, count: end - first)
            hasWork = end > first
        case .trace:
            let trace = c.trace!
            kind = .trace(trace)
            hasWork = trace.entryCount > vcpu
        }
    }

    /// The page of the next step of a rate workload; advances the registers it uses.
    @inline(__always)
    func nextPage(_ s: inout VCPUState) -> UInt64 {
        switch kind {
        case .uniform:
            return Mixing.bounded(Mixing.next(&s.rngState), pageCount)
        case .hotset(let start, let count, let share):
            let choice = Mixing.next(&s.rngState)
            let r = Mixing.next(&s.rngState)
            if Mixing.unit(choice) < share {
                return (start + Mixing.bounded(r, count)) % pageCount
            }
            return Mixing.bounded(r, pageCount)
        case .sweep(let start, let count):
            let page = start + s.cursor % count
            s.cursor = (s.cursor + 1) % count
            return page
        case .idle, .trace:
            preconditionFailure("nextPage called for a workload without a rate")
        }
    }

    /// The next trace entry of this vCPU and the replay-clock time (ns) at which it is due.
    /// Moves `cursor`/`cursor2` (and `traceEpochMs` at the end of a pass) onto that entry without
    /// consuming it; `consumeTraceEntry` does. Requires `hasWork`. nil when the trace file no
    /// longer matches what was checked (`reader.failed`).
    func nextTraceEntry(_ s: inout VCPUState, _ reader: inout TraceReader) -> (page: UInt64, dueNs: Int64)? {
        let n = UInt64(vcpus)
        let v = UInt64(vcpu)
        let trace = reader.trace
        while true {
            if s.cursor >= UInt64(trace.lineCount) {
                s.cursor = 0
                s.cursor2 = 0
                // A trace whose lines are all at t = 0 would otherwise repeat without time passing.
                s.traceEpochMs += max(trace.durationMs, 1)
            }
            if let at = reader.entry(line: s.cursor, index: s.cursor2) {
                // Entries with global index i belong to vCPU i % vcpus.
                let owner = (at.lineStart + s.cursor2) % n
                let j = s.cursor2 + (v + n - owner) % n
                if let entry = j == s.cursor2 ? at : reader.entry(line: s.cursor, index: j) {
                    s.cursor2 = j
                    let due = (s.traceEpochMs + entry.time) * 1_000_000
                    return (entry.page, Int64(clamping: due))
                }
            }
            if reader.failed { return nil }
            s.cursor += 1
            s.cursor2 = 0
        }
    }

    /// Marks the entry `nextTraceEntry` returned as written and moves the registers onto the
    /// next entry, so the registers after a given step do not depend on when the vCPU stopped.
    @inline(__always)
    func consumeTraceEntry(_ s: inout VCPUState, _ reader: inout TraceReader) {
        s.cursor2 += UInt64(vcpus)
        _ = nextTraceEntry(&s, &reader)
    }

    /// The 16 bytes step `step` writes: the step number and a hash of (seed, vCPU, step), at byte
    /// `vcpu * 64 + (step % 4) * 16` of the page, so vCPUs never write the same bytes.
    @inline(__always)
    func write(step: UInt64, page: UInt64, memory: UnsafeMutableRawPointer) {
        let offset = Int(page) &* pageSize &+ vcpu &* 64 &+ Int(step & 3) &* 16
        memory.storeBytes(of: step.littleEndian, toByteOffset: offset, as: UInt64.self)
        memory.storeBytes(
            of: Mixing.hash(seed, UInt64(vcpu), step).littleEndian, toByteOffset: offset + 8, as: UInt64.self)
    }
}
