import CKVM
import FerrySystem
import Glibc
import Logging
import Synchronization

/// Ferry's KVM guest: a VM with `parameters.vcpus` vCPUs over caller-owned guest memory
/// (e.g. a mapped image), running the guest program (`Tools/kvm-guest`) on one thread per vCPU.
/// The API parallels FerryGuest's `Guest`: `start`, `pause` (returns nanoseconds), `resume`,
/// `throttlePercent`, `states`, `stop`.
///
/// A fresh guest (`initialStates == nil`) gets the layout written into its memory (GDT, page
/// tables, program; see `KVMGuestLayout`) and boots at the program's entry in long mode. A
/// guest with `initialStates` takes memory as it is (e.g. received by a migration) and
/// continues each vCPU from its state.
///
/// `@unchecked Sendable`: the controlling methods are meant for one controlling thread at a
/// time; what the vCPU threads share with it goes through `KVMGuestControl` and `KVMConsole`.
public final class KVMGuest: @unchecked Sendable {
    public let parameters: KVMGuestParameters
    public let machine: KVMVirtualMachine
    private let vcpus: [KVMVCPU]
    private let runners: [KVMVCPURunner]
    private let control: KVMGuestControl
    private let console: KVMConsole
    private let diskSlot = KVMDiskSlot()
    private let logger: Logger
    private var started = false
    private var stopped = false
    private var paused = false
    /// Built `.incoming` and not yet given its states.
    private var awaitingStates = false

    /// The signal that kicks a vCPU thread out of KVM_RUN (SIGRTMIN + 5; its handler does nothing).
    public static let kickSignal: Int32 = {
        let signal = ckvm_realtime_signal(5)
        let rc = ckvm_install_kick_handler(signal)
        precondition(rc == 0, "sigaction(SIGRTMIN+5): \(Errno(-rc))")
        return signal
    }()

    /// How a new guest gets its vCPU states.
    public enum Origin: Sendable {
        /// Write the layout and program into memory and boot at the program's entry.
        case boot
        /// Continue from these states (one per vCPU) on memory as it is.
        case states([KVMVCPUState])
        /// Memory as it is; the states come later through `restore(_:)`, before `start()`. A
        /// migration destination builds the VM this way before the blackout, so the blackout
        /// pays only for restoring the registers.
        case incoming
    }

    /// - Parameters:
    ///   - memory: `size` bytes of page-aligned guest memory, mapped MAP_SHARED (or anonymous).
    ///   - initialStates: one state per vCPU to continue from; nil boots the program afresh.
    ///   - onConsoleLine: called on the vCPU's thread for every line the guest prints.
    public convenience init(
        memory: UnsafeMutableRawPointer, size: Int, parameters: KVMGuestParameters,
        initialStates: [KVMVCPUState]? = nil, device: KVMDevice? = nil, logger: Logger,
        onConsoleLine: (@Sendable (KVMConsoleLine) -> Void)? = nil
    ) throws(KVMError) {
        try self.init(
            memory: memory, size: size, parameters: parameters, origin: initialStates.map { .states($0) } ?? .boot,
            device: device, logger: logger, onConsoleLine: onConsoleLine)
    }

    public init(
        memory: UnsafeMutableRawPointer, size: Int, parameters: KVMGuestParameters, origin: Origin,
        device: KVMDevice? = nil, logger: Logger,
        onConsoleLine: (@Sendable (KVMConsoleLine) -> Void)? = nil
    ) throws(KVMError) {
        try parameters.validate()
        if case .states(let states) = origin, states.count != parameters.vcpus {
            throw KVMError(
                .invalidConfiguration, "\(states.count) vCPU states for \(parameters.vcpus) vCPUs: need one per vCPU")
        }
        self.parameters = parameters
        self.logger = logger
        control = KVMGuestControl(writesPerSecond: parameters.writesPerSecond)
        _ = Self.kickSignal
        let device = if let device { device } else { try KVMDevice() }
        machine = try KVMVirtualMachine(device: device, memory: memory, size: size)
        if case .boot = origin {
            let program = KVMGuestProgramImage.bytes
            for range in KVMGuestLayout.prepare(memory: memory, size: size, program: program) {
                machine.hostWrites.record(bytes: range)
            }
        }
        var made: [KVMVCPU] = []
        for index in 0..<parameters.vcpus {
            let vcpu = try KVMVCPU(vm: machine, index: index)
            switch origin {
            case .boot: try vcpu.setBootState()
            case .states(let states): try vcpu.restore(states[index])
            case .incoming: break
            }
            made.append(vcpu)
        }
        vcpus = made
        if case .incoming = origin { awaitingStates = true }
        let console = KVMConsole(onLine: onConsoleLine, logger: logger)
        self.console = console
        let control = self.control
        let machine = self.machine
        let diskSlot = self.diskSlot
        runners = made.map {
            KVMVCPURunner(
                vcpu: $0, machine: machine, parameters: parameters, control: control, console: console, disk: diskSlot)
        }
    }

    deinit {
        if started && !stopped { stop() }
    }

    /// Sets every vCPU's state (one per vCPU) before `start()`: for a guest built `.incoming`.
    public func restore(_ states: [KVMVCPUState]) throws(KVMError) {
        precondition(!started, "KVMGuest.restore(_:) after start()")
        guard states.count == vcpus.count else {
            throw KVMError(
                .invalidConfiguration, "\(states.count) vCPU states for \(vcpus.count) vCPUs: need one per vCPU")
        }
        for (vcpu, state) in zip(vcpus, states) { try vcpu.restore(state) }
        awaitingStates = false
    }

    /// Gives the guest its disk (before `start()`): the program reads its capacity when it boots
    /// and keeps its journal there (docs/disk.md). A migrated guest gets the same disk back on
    /// the destination before it resumes.
    public func attach(disk: KVMDisk) {
        precondition(!started, "KVMGuest.attach(disk:) after start()")
        diskSlot.disk = disk
    }

    /// Takes the disk away from a paused or stopped guest: its requests then fail with
    /// DISK_NO_DISK and the program stops its journal (a disk this side no longer holds).
    public func detachDisk() {
        precondition(!started || stopped || paused, "KVMGuest.detachDisk() needs a paused or stopped guest")
        diskSlot.disk = nil
    }

    /// The disk attached, if any.
    public var disk: KVMDisk? { diskSlot.disk }

    /// Graceful shutdown: asks the program to finish its step, write its clean-shutdown record
    /// and flush, waits up to `timeoutSeconds` for every vCPU to halt, stops the vCPUs and
    /// `fdatasync`s the disk. False when the program did not halt in time (the vCPUs are stopped
    /// anyway; the disk is synced as it is).
    @discardableResult
    public func shutdown(timeoutSeconds: Double) throws(KVMError) -> Bool {
        var halted = true
        if started && !stopped {
            if paused { resume() }
            control.requestShutdown()
            halted = try waitUntilHalted(timeoutSeconds: timeoutSeconds)
            stop()
        }
        try disk?.sync()
        logger.info("kvm guest shut down", metadata: ["kvm.halted": "\(halted)", "kvm.steps": "\(stepsPerVCPU)"])
        return halted
    }

    /// Starts one thread per vCPU, running.
    public func start() {
        precondition(!started, "KVMGuest.start() called twice")
        precondition(!awaitingStates, "KVMGuest built .incoming: call restore(_:) before start()")
        started = true
        for runner in runners {
            var thread = pthread_t()
            let context = Unmanaged.passRetained(runner).toOpaque()
            let rc = pthread_create(
                &thread, nil,
                { context in
                    let runner = Unmanaged<KVMVCPURunner>.fromOpaque(context!).takeRetainedValue()
                    runner.cpuTime.begin()
                    runner.run()
                    return nil
                }, context)
            precondition(rc == 0, "pthread_create: \(Errno(rc))")  // returns the code, not -1
            runner.thread = thread
        }
        logger.info(
            "kvm guest started",
            metadata: [
                "kvm.vcpus": "\(parameters.vcpus)", "kvm.memory_bytes": "\(machine.size)",
                "kvm.writes_per_second": "\(parameters.writesPerSecond.map { "\($0)" } ?? "unpaced")",
                "kvm.step_limit": "\(parameters.stepLimit.map { "\($0)" } ?? "none")",
            ])
    }

    /// Kicks every vCPU out of KVM_RUN and parks it at an instruction boundary with no I/O
    /// pending; returns the nanoseconds it took.
    @discardableResult
    public func pause() -> UInt64 {
        guard started, !stopped else { return 0 }
        let begin = MonotonicClock.now()
        control.requestPause()
        kickAll()
        control.waitParked(vcpus: runners.count)
        paused = true
        let took = MonotonicClock.now() - begin
        logger.debug("kvm guest paused", metadata: ["kvm.pause_ns": "\(took)"])
        return took
    }

    public func resume() {
        guard started, !stopped, paused else { return }
        paused = false
        control.resumeAll()
        logger.debug("kvm guest resumed")
    }

    /// 0…99: the vCPUs get (100 - p)% of their write budget (auto-converge). Clamped.
    public var throttlePercent: Int {
        get { control.throttle.load(ordering: .relaxed) }
        set {
            control.throttle.store(min(max(newValue, 0), 99), ordering: .relaxed)
            control.wakeAll()
        }
    }

    /// The whole guest's writes per second now (nil: unpaced): `parameters.writesPerSecond`
    /// until set. Setting it changes the running guest's pacing at once (sleeping vCPUs wake
    /// and recompute their wait). Must be positive and finite, or nil.
    public var writesPerSecond: Double? {
        get { control.writesPerSecond }
        set {
            precondition(newValue.map { $0 > 0 && $0.isFinite } ?? true, "writes per second must be positive")
            control.writesPerSecond = newValue
            logger.info(
                "kvm guest pace changed",
                metadata: ["kvm.writes_per_second": "\(newValue.map { "\($0)" } ?? "unpaced")"])
        }
    }

    /// Each vCPU's load over its last interval (about a second), in per mille, as the guest
    /// program measured and published it through REG_LOAD; nil before its first report.
    public var loadPermillePerVCPU: [Int?] { runners.map(\.loadPermille) }

    /// Ends every vCPU thread (the VM stays, so `states()` still works). Idempotent.
    public func stop() {
        guard started, !stopped else {
            stopped = true
            return
        }
        control.requestStop()
        kickAll()
        for runner in runners {
            if let thread = runner.thread { pthread_join(thread, nil) }
            runner.thread = nil
        }
        stopped = true
        logger.info("kvm guest stopped", metadata: ["kvm.steps": "\(stepsPerVCPU)"])
    }

    /// Every vCPU's state. Valid before `start`, while paused, and after `stop`.
    public func states() throws(KVMError) -> [KVMVCPUState] {
        precondition(!started || stopped || paused, "KVMGuest.states() needs a paused or stopped guest")
        var result: [KVMVCPUState] = []
        for vcpu in vcpus { result.append(try vcpu.readState()) }
        return result
    }

    /// Waits until every vCPU halted (reached its step limit), at most `timeoutSeconds`.
    /// Throws if a vCPU failed meanwhile; returns false on timeout.
    public func waitUntilHalted(timeoutSeconds: Double) throws(KVMError) -> Bool {
        let done = control.waitHalted(vcpus: runners.count, timeoutNanoseconds: UInt64(timeoutSeconds * 1e9))
        if let failure = control.failure { throw KVMError(.guestFailed, failure) }
        return done
    }

    /// The first vCPU failure (triple fault, unknown register, ...), if any.
    public var failure: String? { control.failure }

    /// The lines the guest printed so far, in the order they arrived (per vCPU in step order).
    public var consoleLines: [KVMConsoleLine] { console.snapshot }

    /// Steps each vCPU has published (its status record; exact while paused or halted).
    /// Each vCPU thread's CPU time so far (in the guest and in KVM's exits), in nanoseconds (0
    /// before `start`).
    public var cpuNanosecondsPerVCPU: [UInt64] { runners.map(\.cpuTime.nanoseconds) }

    public var stepsPerVCPU: [UInt64] {
        (0..<parameters.vcpus).map { KVMGuestLayout.publishedStep(memory: machine.memory, vcpu: $0) }
    }

    /// A dirty tracker over this VM's memory (KVM's dirty log plus the VMM's own writes).
    public func makeDirtyTracker() -> KVMDirtyTracker { KVMDirtyTracker(machine: machine) }

    private func kickAll() {
        for runner in runners {
            ckvm_run_set_immediate_exit(runner.vcpu.run, 1)
            if let thread = runner.thread { pthread_kill(thread, Self.kickSignal) }
        }
    }
}
