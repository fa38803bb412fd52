import CKVM

/// Everything KVM holds about one x86-64 vCPU that a continuation elsewhere needs, as the raw
/// x86-64 KVM ABI structs, plus the MSRs in use. Serialised as CPU state format 2
/// (Protocol.md 3.8.1).
///
/// Not included, on purpose: the local APIC, PIC/IOAPIC and PIT (Ferry's VMM creates no
/// in-kernel irqchip; the guest runs with interrupts off), kvmclock (the guest does not use it;
/// its TSC is carried as MSR 0x10), nested state, CPUID (both sides set the host's supported
/// CPUID; hosts must match).
public struct KVMVCPUState: Equatable, Sendable {
    /// `struct kvm_regs` (144 bytes): rax…r15, rip, rflags.
    public var regs: [UInt8]
    /// `struct kvm_sregs` (312 bytes): segments, GDT/IDT, CR0/2/3/4/8, EFER, APIC base, pending
    /// interrupt bitmap.
    public var sregs: [UInt8]
    /// `struct kvm_xsave` (4096 bytes): x87/SSE/AVX state in XSAVE layout.
    public var xsave: [UInt8]
    /// `struct kvm_xcrs` (392 bytes): XCR0.
    public var xcrs: [UInt8]
    /// `struct kvm_vcpu_events` (64 bytes): pending exception, interrupt, NMI, SMI, interrupt shadow.
    public var events: [UInt8]
    /// `struct kvm_mp_state` (4 bytes).
    public var mpState: [UInt8]
    /// `struct kvm_debugregs` (128 bytes): DR0–3, DR6, DR7.
    public var debugRegs: [UInt8]
    /// (index, value) of each MSR saved, in `candidateMSRs` order.
    public var msrs: [MSR]

    public struct MSR: Equatable, Sendable {
        public var index: UInt32
        public var value: UInt64
        public init(index: UInt32, value: UInt64) {
            self.index = index
            self.value = value
        }
    }

    /// The MSRs worth carrying for a 64-bit guest; those KVM does not list on this host are left
    /// out. TSC (0x10) carries the guest's time stamp counter: restored, the guest's TSC
    /// continues from the value it had when paused.
    public static let candidateMSRs: [UInt32] = [
        0x10,  // IA32_TSC
        0x3b,  // IA32_TSC_ADJUST
        0x174, 0x175, 0x176,  // SYSENTER_CS/ESP/EIP
        0x1a0,  // IA32_MISC_ENABLE
        0x277,  // IA32_PAT
        0x2ff,  // MTRR default type
        0xc000_0081,  // STAR
        0xc000_0082,  // LSTAR
        0xc000_0083,  // CSTAR
        0xc000_0084,  // SFMASK
        0xc000_0100,  // FS_BASE
        0xc000_0101,  // GS_BASE
        0xc000_0102,  // KERNEL_GS_BASE
        0xc000_0103,  // TSC_AUX
    ]

    public static let tscMSR: UInt32 = 0x10

    public init(
        regs: [UInt8], sregs: [UInt8], xsave: [UInt8], xcrs: [UInt8], events: [UInt8],
        mpState: [UInt8], debugRegs: [UInt8], msrs: [MSR]
    ) {
        self.regs = regs
        self.sregs = sregs
        self.xsave = xsave
        self.xcrs = xcrs
        self.events = events
        self.mpState = mpState
        self.debugRegs = debugRegs
        self.msrs = msrs
    }

    /// General register `index` of `struct kvm_regs` (0 rax, 1 rbx, 2 rcx, 3 rdx, 4 rsi, 5 rdi,
    /// 6 rsp, 7 rbp, 8–15 r8–r15, 16 rip, 17 rflags).
    public func register(_ index: Int) -> UInt64 { regs.loadLittleEndian(at: index * 8) }
    public var rip: UInt64 { register(16) }
    public var rsp: UInt64 { register(6) }
    /// EFER from `struct kvm_sregs` (offset 264).
    public var efer: UInt64 { sregs.loadLittleEndian(at: 264) }
    public var tsc: UInt64? { msrs.first { $0.index == Self.tscMSR }?.value }

    // MARK: - format 2 record

    /// CPU_STATE format number of these records.
    public static let cpuStateFormat: UInt16 = 2
    static let recordVersion: UInt16 = 1

    enum Section: UInt16, CaseIterable {
        case regs = 1
        case sregs, xsave, xcrs, msrs, events, mpState, debugRegs

        var fixedSize: Int? {
            switch self {
            case .regs: Int(CKVM_SIZEOF_REGS)
            case .sregs: Int(CKVM_SIZEOF_SREGS)
            case .xsave: Int(CKVM_SIZEOF_XSAVE)
            case .xcrs: Int(CKVM_SIZEOF_XCRS)
            case .events: Int(CKVM_SIZEOF_VCPU_EVENTS)
            case .mpState: Int(CKVM_SIZEOF_MP_STATE)
            case .debugRegs: Int(CKVM_SIZEOF_DEBUGREGS)
            case .msrs: nil
            }
        }
    }

    private func bytes(of section: Section) -> [UInt8] {
        switch section {
        case .regs: return regs
        case .sregs: return sregs
        case .xsave: return xsave
        case .xcrs: return xcrs
        case .events: return events
        case .mpState: return mpState
        case .debugRegs: return debugRegs
        case .msrs:
            var out: [UInt8] = []
            out.appendLittleEndian(UInt32(msrs.count))
            out.appendLittleEndian(UInt32(0))
            for msr in msrs {
                out.appendLittleEndian(msr.index)
                out.appendLittleEndian(UInt32(0))
                out.appendLittleEndian(msr.value)
            }
            return out
        }
    }

    /// The record: header (version, section count, used length), then each section as
    /// (tag, 0, length, bytes padded to 8). Protocol.md 3.8.1.
    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.appendLittleEndian(Self.recordVersion)
        out.appendLittleEndian(UInt16(Section.allCases.count))
        out.appendLittleEndian(UInt32(0))  // patched below
        for section in Section.allCases {
            let body = bytes(of: section)
            out.appendLittleEndian(section.rawValue)
            out.appendLittleEndian(UInt16(0))
            out.appendLittleEndian(UInt32(body.count))
            out.append(contentsOf: body)
            out.append(contentsOf: repeatElement(0, count: (8 - body.count % 8) % 8))
        }
        let used = UInt32(out.count)
        withUnsafeBytes(of: used.littleEndian) { out.replaceSubrange(4..<8, with: $0) }
        return out
    }

    /// Decodes a record (which may be followed by zero padding up to the CPU_STATE record size).
    public init(record: [UInt8]) throws(KVMError) {
        func bad(_ text: String) -> KVMError { KVMError(.invalidState, "CPU state format 2 record: \(text)") }
        guard record.count >= 8 else { throw bad("\(record.count) bytes, shorter than its 8-byte header") }
        let version: UInt16 = record.loadLittleEndian(at: 0)
        guard version == Self.recordVersion else {
            throw bad("version \(version), this VMM reads version \(Self.recordVersion)")
        }
        let sectionCount = Int(record.loadLittleEndian(at: 2) as UInt16)
        let used = Int(record.loadLittleEndian(at: 4) as UInt32)
        guard used >= 8, used <= record.count else { throw bad("used length \(used) outside 8…\(record.count)") }
        guard record[used...].allSatisfy({ $0 == 0 }) else { throw bad("padding after byte \(used) is not zero") }
        var found: [Section: [UInt8]] = [:]
        var offset = 8
        for _ in 0..<sectionCount {
            guard used - offset >= 8 else { throw bad("section header at \(offset) runs past the used length \(used)") }
            let rawTag: UInt16 = record.loadLittleEndian(at: offset)
            let reserved: UInt16 = record.loadLittleEndian(at: offset + 2)
            let length = Int(record.loadLittleEndian(at: offset + 4) as UInt32)
            guard let section = Section(rawValue: rawTag) else { throw bad("unknown section tag \(rawTag)") }
            guard reserved == 0 else { throw bad("section \(section) has reserved field \(reserved), not 0") }
            guard found[section] == nil else { throw bad("section \(section) appears twice") }
            let padded = length + (8 - length % 8) % 8
            guard padded <= used - offset - 8 else {
                throw bad("section \(section) of \(length) bytes runs past the used length \(used)")
            }
            if let size = section.fixedSize, size != length {
                throw bad("section \(section) is \(length) bytes, the KVM ABI struct is \(size)")
            }
            found[section] = Array(record[(offset + 8)..<(offset + 8 + length)])
            offset += 8 + padded
        }
        guard offset == used else { throw bad("sections end at \(offset), the header says \(used)") }
        for section in Section.allCases where found[section] == nil { throw bad("section \(section) is missing") }
        let msrBytes = found[.msrs]!
        guard msrBytes.count >= 8 else { throw bad("MSR section of \(msrBytes.count) bytes, shorter than its count") }
        let msrCount = Int(msrBytes.loadLittleEndian(at: 0) as UInt32)
        guard msrBytes.count == 8 + msrCount * 16 else {
            throw bad("MSR section of \(msrBytes.count) bytes for \(msrCount) MSRs")
        }
        msrs = (0..<msrCount).map { i in
            MSR(index: msrBytes.loadLittleEndian(at: 8 + i * 16), value: msrBytes.loadLittleEndian(at: 16 + i * 16))
        }
        regs = found[.regs]!
        sregs = found[.sregs]!
        xsave = found[.xsave]!
        xcrs = found[.xcrs]!
        events = found[.events]!
        mpState = found[.mpState]!
        debugRegs = found[.debugRegs]!
    }
}

extension Array where Element == UInt8 {
    mutating func appendLittleEndian<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }

    func loadLittleEndian<T: FixedWidthInteger>(at offset: Int) -> T {
        withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: T.self)) }
    }
}
