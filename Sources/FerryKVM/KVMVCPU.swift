import CKVM
import FerrySystem
import Glibc

/// One vCPU of a `KVMVirtualMachine`: its fd, its mapped `kvm_run` area, and the state
/// get/set ioctls.
///
/// `@unchecked Sendable`: `KVM_RUN` is issued only by the vCPU's own thread; state ioctls from
/// the controlling thread happen only while that thread is parked outside `KVM_RUN` (and the
/// kernel serialises vCPU ioctls anyway). The run area is shared with the kernel by design.
final class KVMVCPU: @unchecked Sendable {
    let index: Int
    let fd: Int32
    let run: UnsafeMutableRawPointer
    private let runSize: Int
    private let device: KVMDevice

    init(vm: KVMVirtualMachine, index: Int) throws(KVMError) {
        self.index = index
        device = vm.device
        let vmFD = vm.fd
        fd = try kvmCall("ioctl(KVM_CREATE_VCPU, \(index))") { ckvm_ioctl_value(vmFD, CKVM_CREATE_VCPU, UInt(index)) }
        runSize = device.runAreaSize
        guard let area = mmap(nil, runSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), area != MAP_FAILED else {
            let failure = SystemError.lastError("mmap(vCPU \(index) kvm_run, \(runSize) bytes)")
            close(fd)
            throw KVMError(.syscall, failed: failure)
        }
        run = area
        do throws(KVMError) {
            let kvm = device.fd
            let vcpu = fd
            try kvmCall("ioctl(KVM_SET_CPUID2, vCPU \(index))") { ckvm_set_supported_cpuid(kvm, vcpu) }
        } catch {
            munmap(run, runSize)
            close(fd)
            throw error
        }
    }

    /// The guest's TSC ticks per second (KVM_GET_TSC_KHZ), or 0 when KVM does not say.
    func tscHertz() -> UInt64 {
        let rc = ckvm_ioctl_value(fd, CKVM_GET_TSC_KHZ, 0)
        return rc > 0 ? UInt64(rc) * 1000 : 0
    }

    deinit {
        munmap(run, runSize)
        close(fd)
    }

    /// Long mode at the program's entry: paging with the identity map, 64-bit user code segment
    /// (CPL 3: under a software-virtualising KVM such as PVM, guest supervisor code is emulated
    /// instruction by instruction while user code runs natively), interrupts off, rsp = this
    /// vCPU's stack, rdi = its index.
    func setBootState() throws(KVMError) {
        var sregs = kvm_sregs()
        try get(CKVM_GET_SREGS, "KVM_GET_SREGS", &sregs)
        func segment(_ selector: UInt16, code: Bool) -> kvm_segment {
            var s = kvm_segment()
            s.base = 0
            s.limit = 0xffff_ffff
            s.selector = selector
            s.type = code ? 0xb : 0x3  // execute/read accessed; read/write accessed
            s.present = 1
            s.dpl = 3
            s.db = code ? 0 : 1
            s.s = 1
            s.l = code ? 1 : 0
            s.g = 1
            return s
        }
        sregs.cs = segment(KVMGuestLayout.userCodeSelector, code: true)
        let data = segment(KVMGuestLayout.userDataSelector, code: false)
        sregs.ds = data
        sregs.es = data
        sregs.fs = data
        sregs.gs = data
        sregs.ss = data
        sregs.tr.base = 0
        sregs.tr.limit = 0x67
        sregs.tr.selector = 0
        sregs.tr.type = 0xb  // busy 64-bit TSS
        sregs.tr.present = 1
        sregs.tr.s = 0
        sregs.tr.unusable = 0
        sregs.gdt.base = UInt64(KVMGuestLayout.gdt)
        sregs.gdt.limit = UInt16(KVMGuestLayout.gdtEntries * 8 - 1)
        sregs.idt.base = 0
        sregs.idt.limit = 0
        sregs.cr3 = UInt64(KVMGuestLayout.pml4)
        sregs.cr4 = 1 << 5 | 1 << 9 | 1 << 10  // PAE, OSFXSR, OSXMMEXCPT
        sregs.cr0 = 1 << 0 | 1 << 1 | 1 << 4 | 1 << 5 | 1 << 16 | 1 << 31  // PE, MP, ET, NE, WP, PG
        sregs.efer = 1 << 8 | 1 << 10  // LME, LMA
        try set(CKVM_SET_SREGS, "KVM_SET_SREGS", &sregs)

        var regs = kvm_regs()
        regs.rip = UInt64(KVMGuestLayout.programBase)
        regs.rsp = UInt64(KVMGuestLayout.stackTop(vcpu: index))
        regs.rdi = UInt64(index)
        regs.rflags = 0x2  // reserved bit 1; IF clear
        try set(CKVM_SET_REGS, "KVM_SET_REGS", &regs)
    }

    /// Reads the whole state. Only while the vCPU is outside KVM_RUN with no I/O pending
    /// (the guest parks its vCPUs that way).
    func readState() throws(KVMError) -> KVMVCPUState {
        let regs = try getBytes(CKVM_GET_REGS, "KVM_GET_REGS", CKVM_SIZEOF_REGS)
        let sregs = try getBytes(CKVM_GET_SREGS, "KVM_GET_SREGS", CKVM_SIZEOF_SREGS)
        let xsave = try getBytes(CKVM_GET_XSAVE, "KVM_GET_XSAVE", CKVM_SIZEOF_XSAVE)
        let xcrs = try getBytes(CKVM_GET_XCRS, "KVM_GET_XCRS", CKVM_SIZEOF_XCRS)
        let events = try getBytes(CKVM_GET_VCPU_EVENTS, "KVM_GET_VCPU_EVENTS", CKVM_SIZEOF_VCPU_EVENTS)
        let mpState = try getBytes(CKVM_GET_MP_STATE, "KVM_GET_MP_STATE", CKVM_SIZEOF_MP_STATE)
        let debugRegs = try getBytes(CKVM_GET_DEBUGREGS, "KVM_GET_DEBUGREGS", CKVM_SIZEOF_DEBUGREGS)
        let indices = device.savedMSRs
        var values = [UInt64](repeating: 0, count: indices.count)
        let vcpu = fd
        let read = try kvmCall("ioctl(KVM_GET_MSRS, vCPU \(index))") {
            values.withUnsafeMutableBufferPointer {
                ckvm_get_msrs(vcpu, indices, $0.baseAddress, UInt32(indices.count))
            }
        }
        guard Int(read) == indices.count else {
            throw KVMError(
                .syscall,
                "ioctl(KVM_GET_MSRS, vCPU \(index)): read \(read) of \(indices.count) MSRs; MSR 0x\(String(indices[Int(read)], radix: 16)) failed"
            )
        }
        return KVMVCPUState(
            regs: regs, sregs: sregs, xsave: xsave, xcrs: xcrs, events: events, mpState: mpState,
            debugRegs: debugRegs, msrs: zip(indices, values).map { .init(index: $0, value: $1) })
    }

    /// Restores `state` on this (fresh) vCPU. Order: special registers first (EFER and CR0/CR4
    /// decide what the rest means), general registers, XCR0 before the XSAVE area it enables,
    /// MSRs (TSC last of all state that moves time), debug registers, MP state, and pending
    /// events last so nothing above clears them.
    func restore(_ state: KVMVCPUState) throws(KVMError) {
        for (bytes, size, name) in [
            (state.regs, CKVM_SIZEOF_REGS, "regs"), (state.sregs, CKVM_SIZEOF_SREGS, "sregs"),
            (state.xsave, CKVM_SIZEOF_XSAVE, "xsave"), (state.xcrs, CKVM_SIZEOF_XCRS, "xcrs"),
            (state.events, CKVM_SIZEOF_VCPU_EVENTS, "events"), (state.mpState, CKVM_SIZEOF_MP_STATE, "mp_state"),
            (state.debugRegs, CKVM_SIZEOF_DEBUGREGS, "debugregs"),
        ] where bytes.count != Int(size) {
            throw KVMError(
                .invalidState, "vCPU \(index) state: \(name) is \(bytes.count) bytes, the KVM ABI struct is \(size)")
        }
        guard state.msrs.count <= 64 else {
            throw KVMError(.invalidState, "vCPU \(index) state: \(state.msrs.count) MSRs, at most 64")
        }
        var sregs = state.sregs
        var regs = state.regs
        var xcrs = state.xcrs
        var xsave = state.xsave
        var debugRegs = state.debugRegs
        var mpState = state.mpState
        try setBytes(CKVM_SET_SREGS, "KVM_SET_SREGS", &sregs)
        try setBytes(CKVM_SET_REGS, "KVM_SET_REGS", &regs)
        try setBytes(CKVM_SET_XCRS, "KVM_SET_XCRS", &xcrs)
        try setBytes(CKVM_SET_XSAVE, "KVM_SET_XSAVE", &xsave)
        let indices = state.msrs.map(\.index)
        let values = state.msrs.map(\.value)
        let vcpu = fd
        let written = try kvmCall("ioctl(KVM_SET_MSRS, vCPU \(index))") {
            ckvm_set_msrs(vcpu, indices, values, UInt32(indices.count))
        }
        guard Int(written) == indices.count else {
            throw KVMError(
                .invalidState,
                "ioctl(KVM_SET_MSRS, vCPU \(index)): wrote \(written) of \(indices.count) MSRs; this host's KVM refused MSR 0x\(String(indices[Int(written)], radix: 16)) (the hosts differ)"
            )
        }
        try setBytes(CKVM_SET_DEBUGREGS, "KVM_SET_DEBUGREGS", &debugRegs)
        try setBytes(CKVM_SET_MP_STATE, "KVM_SET_MP_STATE", &mpState)
        var events = kvm_vcpu_events()
        withUnsafeMutableBytes(of: &events) { target in state.events.withUnsafeBytes { target.copyMemory(from: $0) } }
        events.flags |= CKVM_VCPUEVENT_VALID_NMI_PENDING | CKVM_VCPUEVENT_VALID_SHADOW
        try set(CKVM_SET_VCPU_EVENTS, "KVM_SET_VCPU_EVENTS", &events)
    }

    // MARK: ioctl helpers

    private func get<T>(_ request: UInt, _ name: String, _ value: inout T) throws(KVMError) {
        let vcpu = fd
        try kvmCall("ioctl(\(name), vCPU \(index))") {
            withUnsafeMutableBytes(of: &value) { ckvm_ioctl_pointer(vcpu, request, $0.baseAddress) }
        }
    }

    private func set<T>(_ request: UInt, _ name: String, _ value: inout T) throws(KVMError) {
        try get(request, name, &value)
    }

    private func getBytes(_ request: UInt, _ name: String, _ size: UInt32) throws(KVMError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Int(size))
        try setBytes(request, name, &bytes)
        return bytes
    }

    private func setBytes(_ request: UInt, _ name: String, _ bytes: inout [UInt8]) throws(KVMError) {
        let vcpu = fd
        try kvmCall("ioctl(\(name), vCPU \(index))") {
            bytes.withUnsafeMutableBytes { ckvm_ioctl_pointer(vcpu, request, $0.baseAddress) }
        }
    }
}
