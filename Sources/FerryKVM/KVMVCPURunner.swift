import CKVM
import FerrySystem
import Glibc
import Synchronization

/// The thread of one vCPU: KVM_RUN in a loop, handling the exits the guest program makes
/// (MMIO registers: parameters, budget, console, halt), parking between exits when a pause is asked.
///
/// Pausing: the controller sets `kvm_run.immediate_exit` and sends `KVMGuest.kickSignal`, so
/// KVM_RUN returns EINTR at once or, if an I/O exit is being completed, right after completing
/// it. The thread parks only after such an EINTR, so a parked vCPU is always at an instruction
/// boundary with nothing pending: its state can be read and restored elsewhere.
///
/// `@unchecked Sendable`: the pacing fields are used only by the vCPU's own thread; `thread` is
/// written by the controller before the thread starts and read by it after.
final class KVMVCPURunner: @unchecked Sendable {
    let vcpu: KVMVCPU
    private let memory: UnsafeMutableRawPointer
    private let memorySize: Int
    private let parameters: KVMGuestParameters
    private let control: KVMGuestControl
    private let console: KVMConsole
    private let disk: KVMDiskSlot
    private let machine: KVMVirtualMachine
    /// The guest's TSC ticks per second (PARAM_TSC_HZ; 0 if KVM does not say).
    private let tscHertz: UInt64
    var thread: pthread_t?
    /// The last REG_LOAD value (per mille); -1 before the first.
    private let publishedLoad = Atomic<Int>(-1)
    /// The vCPU thread's CPU time, as the scheduler accounts it.
    let cpuTime = ThreadCPUTime()

    private var selectedParameter: UInt32 = 0
    /// The guest wrote PORT_HALT: it is finished; the thread stops running it.
    private var halted = false
    private var credit: Double = 0
    private var lastRefill: UInt64 = 0

    init(
        vcpu: KVMVCPU, machine: KVMVirtualMachine, parameters: KVMGuestParameters, control: KVMGuestControl,
        console: KVMConsole, disk: KVMDiskSlot
    ) {
        self.machine = machine
        self.disk = disk
        let memory = machine.memory
        let memorySize = machine.size
        self.vcpu = vcpu
        self.memory = memory
        self.memorySize = memorySize
        self.parameters = parameters
        self.control = control
        self.console = console
        tscHertz = vcpu.tscHertz()
    }

    /// The load the guest last published for this vCPU (per mille), nil before its first report.
    var loadPermille: Int? {
        let value = publishedLoad.load(ordering: .relaxed)
        return value < 0 ? nil : value
    }

    func run() {
        lastRefill = MonotonicClock.now()
        let run = vcpu.run
        let fd = vcpu.fd
        while true {
            let keepGoing = control.parkIfRequested {
                ckvm_run_set_immediate_exit(run, 0)
                lastRefill = MonotonicClock.now()
            }
            if !keepGoing { return }
            do throws(SystemError) {
                // EINTR is a kick (a pause or stop request), not a failure: the loop looks again.
                try valueOrErrno("ioctl(KVM_RUN)", .negatedErrno, retryOnInterrupt: false) {
                    ckvm_ioctl_value(fd, CKVM_RUN, 0)
                }
            } catch {
                if error.errno == .interrupted { continue }
                control.failAndWaitForStop("vCPU \(vcpu.index): \(error)")
                return
            }
            switch ckvm_run_exit_reason(run) {
            case CKVM_EXIT_MMIO:
                if let problem = handleMMIO() {
                    control.failAndWaitForStop("vCPU \(vcpu.index) at rip \(ripText()): \(problem)")
                    return
                }
                if halted {
                    // Completing the store moves rip past it to the guest's `jmp` back to it, so a
                    // saved halted vCPU halts again when restored.
                    ckvm_run_set_immediate_exit(run, 1)
                    _ = try? valueOrErrno("ioctl(KVM_RUN)", .negatedErrno, retryOnInterrupt: false) {
                        ckvm_ioctl_value(fd, CKVM_RUN, 0)  // returns EINTR at once, after completing the store
                    }
                    control.haltAndWaitForStop()
                    return
                }
            case CKVM_EXIT_HLT:
                control.haltAndWaitForStop()
                return
            case CKVM_EXIT_INTR:
                continue
            case let reason:
                control.failAndWaitForStop(
                    "vCPU \(vcpu.index) at rip \(ripText()): \(exitDescription(reason)); the guest program crashed or the VMM set it up wrong"
                )
                return
            }
        }
    }

    /// Handles one KVM_EXIT_MMIO; nil when fine, else what was wrong.
    private func handleMMIO() -> String? {
        var address: UInt64 = 0
        var length: UInt32 = 0
        var isWrite: UInt8 = 0
        var data: UnsafeMutableRawPointer?
        ckvm_run_mmio(vcpu.run, &address, &length, &isWrite, &data)
        let offset = address &- KVMGuestLayout.mmioBase
        guard let data, length == 4, offset < 0x1000 else {
            return
                "\(length)-byte access at guest-physical 0x\(String(address, radix: 16)): outside guest memory and not a 4-byte VMM register"
        }
        switch (offset, isWrite != 0) {
        case (KVMGuestLayout.regParamSelect, true):
            selectedParameter = data.load(as: UInt32.self)
        case (KVMGuestLayout.regParamData, false):
            data.storeBytes(of: parameterHalf(selectedParameter), as: UInt32.self)
        case (KVMGuestLayout.regBudget, false):
            data.storeBytes(of: budget(), as: UInt32.self)
        case (KVMGuestLayout.regLine, true):
            return printLine(at: Int(data.load(as: UInt32.self)))
        case (KVMGuestLayout.regHalt, true):
            halted = true
        case (KVMGuestLayout.regLoad, true):
            publishedLoad.store(Int(min(data.load(as: UInt32.self), 1000)), ordering: .relaxed)
        case (KVMGuestLayout.regDiskRequest, true):
            return diskRequest(at: Int(data.load(as: UInt32.self)))
        default:
            return
                "\(isWrite != 0 ? "write to" : "read of") VMM register 0x\(String(offset, radix: 16)), which does not exist"
        }
        return nil
    }

    private func parameterHalf(_ index: UInt32) -> UInt32 {
        let value: UInt64 =
            switch index & ~1 {
            case KVMGuestLayout.paramSeed: parameters.seed
            case KVMGuestLayout.paramWorkFirst: UInt64(KVMGuestLayout.workBase / KVMGuestLayout.pageSize)
            case KVMGuestLayout.paramWorkPages: UInt64(KVMGuestLayout.workPages(memorySize: memorySize))
            case KVMGuestLayout.paramPrintInterval: parameters.printInterval
            case KVMGuestLayout.paramDiskSectors: disk.disk?.sectors ?? 0
            case KVMGuestLayout.paramJournalInterval: parameters.journalInterval
            case KVMGuestLayout.paramTSCHertz: tscHertz
            default: 0
            }
        return UInt32(truncatingIfNeeded: index & 1 == 0 ? value : value >> 32)
    }

    /// Least budget an unpaced guest gets per request: a few milliseconds of writes, so that the
    /// exits (tens of microseconds under nested KVM) cost it little and its load reads near 1000.
    static let unpacedGrant: UInt32 = 1 << 16

    /// How many writes the guest may do now. Blocks for pacing; a pause or stop interrupts the
    /// wait with 0 ("ask again"), so the vCPU parks within microseconds.
    private func budget() -> UInt32 {
        if control.shutdownRequested.load(ordering: .relaxed) { return KVMGuestLayout.budgetShutdown }
        let step = KVMGuestLayout.publishedStep(memory: memory, vcpu: vcpu.index)
        let unpaced = control.writesPerSecond == nil
        var grant = unpaced ? max(parameters.budgetChunk, Self.unpacedGrant) : parameters.budgetChunk
        if let limit = parameters.stepLimit {
            if step >= limit { return KVMGuestLayout.budgetFinished }
            grant = UInt32(min(UInt64(grant), limit - step))
        }
        while true {
            guard let total = control.writesPerSecond else { return grant }
            let rate = total / Double(parameters.vcpus)
            let effective = rate * Double(100 - control.throttle.load(ordering: .relaxed)) / 100
            let now = MonotonicClock.now()
            // At most 10 ms of writes carried over, so a guest that waited does not burst.
            credit = min(credit + Double(now &- lastRefill) * effective / 1e9, max(Double(grant), effective / 100))
            lastRefill = now
            if credit >= Double(grant) {
                credit -= Double(grant)
                return grant
            }
            let waitNanoseconds = (Double(grant) - credit) / effective * 1e9
            if !control.sleep(until: now + UInt64(waitNanoseconds)) {
                return control.shutdownRequested.load(ordering: .relaxed) ? KVMGuestLayout.budgetShutdown : 0
            }
        }
    }

    /// REG_DISK_REQUEST: the disk carries the request out; without a disk the status says so.
    private func diskRequest(at address: Int) -> String? {
        if let disk = disk.disk { return disk.serve(requestAt: address, machine: machine) }
        guard address >= 0, address + KVMDisk.requestSize <= memorySize else {
            return "disk request at 0x\(String(address, radix: 16)) is outside guest memory"
        }
        memory.storeBytes(of: KVMDisk.Status.noDisk.rawValue.littleEndian, toByteOffset: address + 24, as: UInt32.self)
        machine.hostWrites.record(bytes: (address + 24)..<(address + 28))
        return nil
    }

    private func printLine(at address: Int) -> String? {
        guard address >= 0, address + 4 <= memorySize else {
            return "console line at 0x\(String(address, radix: 16)) is outside guest memory"
        }
        let length = Int(memory.load(fromByteOffset: address, as: UInt32.self))
        guard length <= KVMGuestLayout.lineCapacity, address + 4 + length <= memorySize else {
            return
                "console line at 0x\(String(address, radix: 16)) of \(length) bytes: at most \(KVMGuestLayout.lineCapacity), inside guest memory"
        }
        let text = String(decoding: UnsafeRawBufferPointer(start: memory + address + 4, count: length), as: UTF8.self)
        console.append(KVMConsoleLine(vcpu: vcpu.index, text: text))
        return nil
    }

    private func ripText() -> String {
        var regs = kvm_regs()
        let fd = vcpu.fd
        let read = try? valueOrErrno("ioctl(KVM_GET_REGS)", .negatedErrno) {
            withUnsafeMutableBytes(of: &regs) { ckvm_ioctl_pointer(fd, CKVM_GET_REGS, $0.baseAddress) }
        }
        return read == nil ? "?" : "0x" + String(regs.rip, radix: 16)
    }

    private func exitDescription(_ reason: UInt32) -> String {
        switch reason {
        case CKVM_EXIT_SHUTDOWN: "KVM_EXIT_SHUTDOWN (triple fault)"
        case CKVM_EXIT_FAIL_ENTRY:
            "KVM_EXIT_FAIL_ENTRY (hardware reason 0x\(String(ckvm_run_failure_detail(vcpu.run), radix: 16)))"
        case CKVM_EXIT_INTERNAL_ERROR: "KVM_EXIT_INTERNAL_ERROR (suberror \(ckvm_run_failure_detail(vcpu.run)))"
        case CKVM_EXIT_IO: "KVM_EXIT_IO (the program uses MMIO, not ports)"
        default: "exit reason \(reason)"
        }
    }
}
