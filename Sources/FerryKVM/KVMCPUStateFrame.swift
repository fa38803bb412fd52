import FerryProtocol

/// KVM vCPU states in a `CPU_STATE` frame: format 2 (Protocol.md 3.8.1), every record padded
/// with zeros to the longest one.
extension CPUState {
    public init(kvm states: [KVMVCPUState]) {
        let records = states.map { $0.encoded() }
        let recordSize = records.map(\.count).max() ?? 0
        var bytes: [UInt8] = []
        bytes.reserveCapacity(recordSize * records.count)
        for record in records {
            bytes.append(contentsOf: record)
            bytes.append(contentsOf: repeatElement(0, count: recordSize - record.count))
        }
        self.init(format: KVMVCPUState.cpuStateFormat, vcpuCount: UInt16(truncatingIfNeeded: states.count),
                  recordSize: UInt32(recordSize), records: bytes)
    }

    /// The format 2 states, vCPU 0 first; throws if this is another format or a record is malformed.
    public func kvmStates() throws(KVMError) -> [KVMVCPUState] {
        guard format == KVMVCPUState.cpuStateFormat else {
            throw KVMError(.invalidState, "CPU_STATE format \(format) is not the KVM vCPU format \(KVMVCPUState.cpuStateFormat)")
        }
        let size = Int(recordSize)
        guard size > 0, records.count == Int(vcpuCount) * size else {
            throw KVMError(.invalidState, "CPU_STATE holds \(records.count) bytes for \(vcpuCount) records of \(size) bytes")
        }
        var states: [KVMVCPUState] = []
        for start in stride(from: 0, to: records.count, by: size) {
            states.append(try KVMVCPUState(record: Array(records[start..<(start + size)])))
        }
        return states
    }
}
