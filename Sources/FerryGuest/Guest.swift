import FerrySystem
import Glibc
import Logging

/// The built-in guest: one thread per vCPU, each writing guest memory with a deterministic
/// workload, pausable at safe points, with registers (`VCPUState`) that let a run continue
/// elsewhere exactly.
///
/// vCPU `v` at step `s` picks a page from its registers only and writes 16 bytes
/// `(s, hash(seed, v, s))` at byte `v * 64 + (s % 4) * 16` of it. Time decides only how many
/// steps happen, never which, so the memory after a given number of steps per vCPU does not
/// depend on timing, thread interleaving, pauses or migrations.
///
/// `@unchecked Sendable`: the controlling methods (`start`, `pause`, `resume`, `stop`, `states`)
/// are meant for one controlling thread at a time; what they share with the vCPU threads goes
/// through `GuestControl` (mutex and atomics) and each runner's atomic step counter.
public final class Guest: @unchecked Sendable {
    public let configuration: GuestConfiguration
    public let size: Int
    private let control = GuestControl()
    private let runners: [VCPURunner]
    private let logger: Logger
    private var started = false
    private var stopped = false
    private var paused = false
    private let hasStepLimits: Bool

    /// - Parameters:
    ///   - memory: guest memory of `size` bytes (a multiple of the page size), e.g. a mapped image.
    ///   - initialStates: registers to continue from (one per vCPU); default: a fresh boot.
    ///   - stepLimits: per vCPU, the step at which it stops writing (reference runs).
    ///   - paced: false runs the steps as fast as the CPU allows, ignoring rates and trace times.
    ///     Only with `stepLimits`: since time never decides which page a step writes, the memory
    ///     after the limits is the same as a paced run's, just sooner.
    public init(
        memory: UnsafeMutableRawPointer, size: Int, configuration: GuestConfiguration,
        initialStates: [VCPUState]? = nil, stepLimits: [UInt64]? = nil, paced: Bool = true, logger: Logger
    ) throws {
        let c = configuration
        try validatePageSize(c.pageSize)
        guard size > 0, size % c.pageSize == 0 else {
            throw GuestError(
                .invalidConfiguration,
                "guest memory of \(size) bytes: must be a positive multiple of the page size \(c.pageSize)")
        }
        let pageCount = size / c.pageSize
        guard (1...64).contains(c.vcpus), c.vcpus * 64 <= c.pageSize else {
            throw GuestError(.invalidConfiguration, "\(c.vcpus) vCPUs: the built-in guest supports 1 to 64 vCPUs")
        }
        if let initialStates, initialStates.count != c.vcpus {
            throw GuestError(
                .invalidConfiguration,
                "\(initialStates.count) vCPU states for \(c.vcpus) vCPUs: need one state per vCPU")
        }
        if !paced && stepLimits == nil {
            throw GuestError(.invalidConfiguration, "an unpaced guest needs step limits, or it would write without end")
        }
        if let stepLimits, stepLimits.count != c.vcpus {
            throw GuestError(
                .invalidConfiguration, "\(stepLimits.count) step limits for \(c.vcpus) vCPUs: need one limit per vCPU")
        }
        switch c.workload {
        case .trace(let path):
            guard let trace = c.trace else {
                throw GuestError(
                    .invalidConfiguration,
                    "workload trace:\(path): the configuration holds no parsed trace; load it with DirtyTrace.load(path:pageCount:)"
                )
            }
            guard trace.pageCount == pageCount else {
                throw GuestError(
                    .invalidConfiguration,
                    "trace \(path) was checked against \(trace.pageCount) pages, but the guest has \(pageCount)")
            }
        case .sweep where pageCount < c.vcpus:
            throw GuestError(
                .invalidConfiguration,
                "workload \(c.workload): \(pageCount) pages cannot be shared among \(c.vcpus) vCPUs; use fewer vCPUs or a larger image"
            )
        case .hotset(_, let hot, let share) where !(hot > 0 && hot <= 100 && share >= 0 && share <= 100):
            throw GuestError(
                .invalidConfiguration,
                "workload \(c.workload): the hot-set size must be in (0%, 100%] and its share in [0%, 100%]")
        default:
            break
        }
        if let rate = c.workload.rate, !(rate.value > 0 && rate.value.isFinite) {
            throw GuestError(.invalidConfiguration, "workload \(c.workload): the rate must be a positive number")
        }
        self.configuration = c
        self.size = size
        self.logger = logger
        hasStepLimits = stepLimits != nil
        let control = self.control
        runners = (0..<c.vcpus).map { v in
            VCPURunner(
                program: VCPUProgram(configuration: c, vcpu: v, pageCount: pageCount), memory: memory, control: control,
                state: initialStates?[v] ?? .initial(vcpu: v, seed: c.seed), stepLimit: stepLimits?[v], paced: paced)
        }
    }

    deinit {
        if started && !stopped { _ = stop() }
    }

    /// Starts one thread per vCPU, running.
    /// Starts the vCPU threads; `paused`: each parks before its first step (as after `pause()`,
    /// which may still be called to wait until they have), until `resume()`.
    public func start(paused: Bool = false) {
        precondition(!started, "Guest.start() called twice")
        started = true
        if paused {
            control.requestPause()
            self.paused = true
        }
        for runner in runners {
            var thread = pthread_t()
            let context = Unmanaged.passRetained(runner).toOpaque()
            let rc = pthread_create(
                &thread, nil,
                { context in
                    let runner = Unmanaged<VCPURunner>.fromOpaque(context!).takeRetainedValue()
                    runner.cpuTime.begin()
                    runner.run()
                    return nil
                }, context)
            precondition(rc == 0, "pthread_create: \(Errno(rc))")  // returns the code, not -1
            runner.thread = thread
        }
        logger.info(
            "guest started",
            metadata: [
                "guest.vcpus": "\(configuration.vcpus)", "guest.workload": "\(configuration.workload)",
                "guest.pages": "\(size / configuration.pageSize)", "guest.steps": "\(totalSteps)",
            ])
    }

    /// Parks every vCPU at a safe point (between two writes) and returns the nanoseconds it took.
    /// vCPUs sleeping for pacing are woken, so this takes microseconds, not a pacing interval.
    @discardableResult
    public func pause() -> UInt64 {
        guard started, !stopped else { return 0 }
        let begin = Int64(MonotonicClock.now())
        control.pauseAll(vcpus: runners.count)
        paused = true
        let took = UInt64(Int64(MonotonicClock.now()) - begin)
        logger.debug("guest paused", metadata: ["guest.pause_ns": "\(took)", "guest.steps": "\(totalSteps)"])
        return took
    }

    public func resume() {
        guard started, !stopped, paused else { return }
        paused = false
        control.resumeAll()
        logger.debug("guest resumed")
    }

    /// 0…99: the vCPUs run at (100 - p)% of their rate (auto-converge). Values outside are clamped.
    public var throttlePercent: Int {
        get { control.throttle.load(ordering: .relaxed) }
        set {
            control.throttle.store(min(max(newValue, 0), 99), ordering: .relaxed)
            control.wakeAll()
            logger.debug("guest throttled", metadata: ["guest.throttle_percent": "\(throttlePercent)"])
        }
    }

    /// Parks and joins every vCPU thread; returns the final registers. Calling it again returns
    /// the same states.
    public func stop() -> [VCPUState] {
        if started && !stopped {
            control.stopAll()
            for runner in runners {
                if let thread = runner.thread { pthread_join(thread, nil) }
                runner.thread = nil
            }
            stopped = true
            logger.info("guest stopped", metadata: ["guest.steps": "\(totalSteps)"])
        }
        return runners.map(\.state)
    }

    /// The registers of every vCPU. Valid while paused, before `start` and after `stop`.
    public func states() -> [VCPUState] {
        precondition(!started || stopped || paused, "Guest.states() needs a paused or stopped guest")
        return control.synchronized { runners.map(\.state) }
    }

    /// Returns when every vCPU has reached its step limit (vCPUs that can never write, as with
    /// `idle`, count as done at once). Requires `stepLimits` and a started guest.
    public func waitUntilStepLimits() {
        precondition(hasStepLimits && started, "Guest.waitUntilStepLimits() needs stepLimits and a started guest")
        control.waitUntilFinished(vcpus: runners.count)
    }

    /// Steps done by all vCPUs (approximate while running).
    public var totalSteps: UInt64 { stepsPerVCPU.reduce(0, +) }

    /// Steps done by each vCPU (approximate while running).
    public var stepsPerVCPU: [UInt64] { runners.map { $0.publishedSteps.load(ordering: .relaxed) } }

    /// How fast the vCPUs write now: `.configured` (the workload's rate) until set. Setting it
    /// changes the running guest's pacing at once (sleeping vCPUs wake). Rate workloads only
    /// (`uniform`, `hotset`, `sweep`): an `idle` or `trace` guest has no rate to change.
    public var pace: GuestPace {
        get { control.pace }
        set {
            control.pace = newValue
            logger.info("guest pace changed", metadata: ["guest.pace": "\(newValue)"])
        }
    }

    /// Each vCPU's load over its last interval (about a second), in per mille: the share of its
    /// time spent working rather than sleeping for pacing; nil before its first interval ended.
    public var loadPermillePerVCPU: [Int?] {
        runners.map {
            let value = $0.publishedLoad.load(ordering: .relaxed)
            return value < 0 ? nil : value
        }
    }

    /// Each vCPU thread's CPU time so far, in nanoseconds (0 before `start`).
    public var cpuNanosecondsPerVCPU: [UInt64] { runners.map(\.cpuTime.nanoseconds) }
}
