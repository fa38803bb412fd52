import FerryGuest
import FerryProtocol

/// The built-in guest's registers and their format-1 wire record (Protocol.md section 3.8):
/// FerryGuest defines what the registers mean, FerryProtocol how they are laid out on the wire.
extension VCPUState {
    init(_ record: VCPURecord) {
        self.init(step: record.step, rngState: record.rngState, cursor: record.cursor, cursor2: record.cursor2,
                  creditNs: record.creditNanoseconds, traceEpochMs: record.traceEpochMilliseconds)
    }

    var record: VCPURecord {
        VCPURecord(step: step, rngState: rngState, cursor: cursor, cursor2: cursor2,
                   creditNanoseconds: creditNs, traceEpochMilliseconds: traceEpochMs)
    }
}
