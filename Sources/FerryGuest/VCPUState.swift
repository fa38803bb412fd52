/// The registers of one built-in vCPU: everything that decides which page it writes next and how
/// much pacing budget it has. A guest paused, serialized to these records and continued in a new
/// `Guest` (in this process or another) writes exactly what it would have written without the stop.
///
/// They cross the wire as the `CPU_STATE` format-1 record of Protocol.md section 3.8, whose byte
/// layout `FerryProtocol.VCPURecord` owns; FerryMigration maps one to the other field by field.
public struct VCPUState: Equatable, Sendable, CustomStringConvertible {
    /// Writes this vCPU has completed.
    public var step: UInt64
    /// splitmix64 state for `uniform` and `hotset`.
    public var rngState: UInt64
    /// `sweep`: next page within the vCPU's share. `trace`: current line.
    public var cursor: UInt64
    /// `trace`: next entry within the current line.
    public var cursor2: UInt64
    /// Rate workloads: nanoseconds of write budget carried over. `trace`: the replay clock, in
    /// nanoseconds of (throttled) running time since the trace started.
    public var creditNs: Int64
    /// `trace`: replay clock offset of the current pass over the trace, in milliseconds.
    public var traceEpochMs: UInt64

    public init(step: UInt64, rngState: UInt64, cursor: UInt64, cursor2: UInt64, creditNs: Int64, traceEpochMs: UInt64)
    {
        self.step = step
        self.rngState = rngState
        self.cursor = cursor
        self.cursor2 = cursor2
        self.creditNs = creditNs
        self.traceEpochMs = traceEpochMs
    }

    /// The registers of vCPU `vcpu` of a freshly booted guest with workload seed `seed`.
    public static func initial(vcpu: Int, seed: UInt64) -> VCPUState {
        VCPUState(
            step: 0, rngState: Mixing.hash(seed, 0x5643_5055 &+ UInt64(vcpu)), cursor: 0, cursor2: 0,
            creditNs: 0, traceEpochMs: 0)
    }

    public var description: String {
        "step \(step) rng \(rngState) cursor \(cursor)/\(cursor2) credit \(creditNs)ns epoch \(traceEpochMs)ms"
    }
}
