import FerryGuest
import FerryProtocol

/// The built-in guest's registers and their format-1 record (Protocol.md section 3.8.1), the
/// body of its vCPU sections: FerryGuest defines what the registers mean, FerryProtocol how
/// they are laid out.
extension VCPUState {
    public init(_ record: VCPURecord) {
        self.init(
            step: record.step, rngState: record.rngState, cursor: record.cursor, cursor2: record.cursor2,
            creditNs: record.creditNanoseconds, traceEpochMs: record.traceEpochMilliseconds)
    }

    public var record: VCPURecord {
        VCPURecord(
            step: step, rngState: rngState, cursor: cursor, cursor2: cursor2,
            creditNanoseconds: creditNs, traceEpochMilliseconds: traceEpochMs)
    }
}
