import FerrySystem
import Glibc
import Synchronization

/// One vCPU thread: runs its `VCPUProgram` against guest memory, paced by its credit register.
///
/// `@unchecked Sendable`: `state` belongs to the vCPU thread while it runs; the controlling thread
/// reads or replaces it only before `start`, while the vCPU is parked, or after it was joined —
/// each of those hand-overs goes through `GuestControl`'s mutex (or `pthread_join`). `memory` is
/// guest memory: this vCPU writes only its own 64-byte slot of each page.
final class VCPURunner: @unchecked Sendable {
    let program: VCPUProgram
    let memory: UnsafeMutableRawPointer
    let control: GuestControl
    /// Stop writing once `state.step` reaches this.
    let stepLimit: UInt64
    var state: VCPUState
    /// `state.step`, readable from any thread while the vCPU runs.
    let publishedSteps: Atomic<UInt64>
    var thread: pthread_t?
    /// The vCPU thread's CPU time, as the scheduler accounts it.
    let cpuTime = ThreadCPUTime()
    /// False: run steps back to back up to the step limit (reference runs).
    let paced: Bool
    /// A trace workload's position in the trace file (its own buffer; nil for other workloads).
    var traceReader: TraceReader?
    /// The load this vCPU last published (per mille of its time spent working rather than
    /// sleeping for pacing, over about a second); -1 before the first.
    let publishedLoad = Atomic<Int>(-1)
    /// The current load interval: when it began, and the nanoseconds slept for pacing since.
    private var loadStart: Int64 = 0
    private var loadSleptNs: Int64 = 0
    /// The length of a load interval.
    static let loadIntervalNs: Int64 = 1_000_000_000

    /// Longest pacing sleep: the vCPU re-reads the clock at least this often.
    static let maxSleepNs: Int64 = 100_000_000
    /// Shortest pacing sleep: the vCPU batches steps rather than waking for each.
    static let minSleepNs: Int64 = 1_000_000
    /// Most write budget a vCPU may bank (at least one step's worth): after the thread was held
    /// off the CPU it catches up at most this much.
    static let creditCapNs: Double = 10_000_000
    /// Steps per batch before the clock is read again.
    static let batch = 4096

    init(
        program: VCPUProgram, memory: UnsafeMutableRawPointer, control: GuestControl, state: VCPUState,
        stepLimit: UInt64?,
        paced: Bool = true
    ) {
        self.paced = paced
        self.program = program
        self.memory = memory
        self.control = control
        self.state = state
        self.stepLimit = stepLimit ?? .max
        publishedSteps = Atomic(state.step)
        if case .trace(let trace) = program.kind { traceReader = TraceReader(trace) }
    }

    /// The thread body: returns when the guest stops.
    func run() {
        var last = Int64(MonotonicClock.now())
        startLoadInterval(at: last)
        while true {
            // Running time up to now counts, also when a pause request is what woke us.
            let now = Int64(MonotonicClock.now())
            let speed = 100 - control.throttle.load(ordering: .relaxed)
            let cost = stepCostNs()
            accrue(elapsed: now - last, speedPercent: speed, stepCostNs: cost)
            last = now
            measureLoad(now: now)
            if control.request.load(ordering: .relaxed) != 0 {
                guard control.park() else { return }
                last = Int64(MonotonicClock.now())  // paused time neither adds credit nor advances the trace clock
                startLoadInterval(at: last)  // nor counts as work or as pacing
                continue
            }
            if !program.hasWork || state.step >= stepLimit || traceReader?.failed == true {
                publishedLoad.store(0, ordering: .relaxed)
                control.finishAndWaitForStop()
                return
            }
            if let cost, paced, traceReader == nil {
                runRate(speedPercent: speed, stepCostNs: cost)
            } else if paced && traceReader != nil {
                runTrace(speedPercent: speed)
            } else {
                runUnpaced()
            }
        }
    }

    /// Nanoseconds of running time per step of a rate workload now (throttle 0), as the pace
    /// says (`GuestControl.pace`); nil when unpaced.
    private func stepCostNs() -> Double? {
        switch control.pace {
        case .configured: program.stepCostNs
        case .unpaced: nil
        case .pagesPerSecond(let rate): 1e9 * Double(program.vcpus) / rate
        }
    }

    private func startLoadInterval(at now: Int64) {
        loadStart = now
        loadSleptNs = 0
    }

    /// At the end of a load interval: publishes the share of it not slept for pacing.
    private func measureLoad(now: Int64) {
        let elapsed = now - loadStart
        guard elapsed >= Self.loadIntervalNs else { return }
        let working = max(0, elapsed - loadSleptNs)
        publishedLoad.store(Int(working * 1000 / elapsed), ordering: .relaxed)
        startLoadInterval(at: now)
    }

    /// Sleeps for pacing (see `GuestControl.sleep`), counting the time slept against the load.
    private func pacingSleep(nanoseconds: Int64) {
        let begin = Int64(MonotonicClock.now())
        control.sleep(nanoseconds: nanoseconds)
        loadSleptNs += Int64(MonotonicClock.now()) - begin
    }

    /// Banks running time: as write credit (rate workloads, capped) or on the replay clock (trace).
    private func accrue(elapsed: Int64, speedPercent: Int, stepCostNs: Double?) {
        guard program.hasWork else { return }
        if case .trace = program.kind {
            state.creditNs &+= elapsed * Int64(speedPercent) / 100
        } else {
            let cost = (stepCostNs ?? 0) * 100 / Double(speedPercent)
            state.creditNs = min(state.creditNs &+ elapsed, Int64(max(Self.creditCapNs, cost)))
        }
    }

    /// Rate workloads: spend the credit on steps, sleep when short of one step's cost.
    private func runRate(speedPercent: Int, stepCostNs: Double) {
        let cost = stepCostNs * 100 / Double(speedPercent)
        let affordable = Double(state.creditNs) / cost
        if affordable < 1 {
            let shortfall = Int64((cost - Double(state.creditNs)).rounded(.up))
            pacingSleep(nanoseconds: min(max(shortfall, Self.minSleepNs), Self.maxSleepNs))
            return
        }
        let steps = Int(min(affordable, Double(min(UInt64(Self.batch), stepLimit - state.step))))
        var done = 0
        while done < steps, control.request.load(ordering: .relaxed) == 0 {
            let page = program.nextPage(&state)
            step(page: page)
            done += 1
        }
        state.creditNs -= Int64((Double(done) * cost).rounded())
    }

    /// Trace workloads: write every entry of this vCPU that the replay clock has reached; sleep
    /// until the next one is due.
    private func runTrace(speedPercent: Int) {
        var done = 0
        while done < Self.batch, state.step < stepLimit, control.request.load(ordering: .relaxed) == 0 {
            guard let entry = program.nextTraceEntry(&state, &traceReader!) else { return }
            if entry.dueNs > state.creditNs {
                if done == 0 {
                    let wait = (entry.dueNs - state.creditNs) * 100 / Int64(speedPercent)
                    pacingSleep(nanoseconds: min(wait, Self.maxSleepNs))
                }
                return
            }
            step(page: entry.page)
            program.consumeTraceEntry(&state, &traceReader!)
            done += 1
        }
    }

    /// Reference runs: the same steps as a paced run, back to back.
    private func runUnpaced() {
        var done = 0
        while done < Self.batch, state.step < stepLimit, control.request.load(ordering: .relaxed) == 0 {
            if traceReader != nil {
                guard let entry = program.nextTraceEntry(&state, &traceReader!) else { return }
                step(page: entry.page)
                program.consumeTraceEntry(&state, &traceReader!)
            } else {
                step(page: program.nextPage(&state))
            }
            done += 1
        }
    }

    @inline(__always)
    private func step(page: UInt64) {
        program.write(step: state.step, page: page, memory: memory)
        state.step += 1
        publishedSteps.store(state.step, ordering: .relaxed)
    }
}
