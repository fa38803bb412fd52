import FerrySystem
import Synchronization

// The guest itself, as a VMM would have it before it adopts Ferry: nothing here knows about
// migration. The adapters (CounterGuestSource.swift, CounterGuestDestination.swift) wrap it.

/// One vCPU's registers.
public struct CounterRegisters: Sendable, Equatable {
    /// Steps this vCPU has completed (each step writes one 8-byte word of RAM).
    public var counter: UInt64
    /// xorshift64 state: picks the RAM word each step writes.
    public var prng: UInt64

    public init(counter: UInt64, prng: UInt64) {
        self.counter = counter
        self.prng = prng
    }
}

/// The counter device's registers. Every `CounterMachine.tickEvery` steps a vCPU "ticks" it; the
/// device counts the ticks and writes each tick's number into video memory, one word after the
/// other, like a display controller scanning out.
public struct CounterDevice: Sendable, Equatable {
    public var ticks: UInt64
    /// The video-memory word the next tick writes.
    public var scanline: UInt64

    public init(ticks: UInt64 = 0, scanline: UInt64 = 0) {
        self.ticks = ticks
        self.scanline = scanline
    }
}

/// The guest's state besides its memory: what migrates in `DEVICE_STATE`.
public struct CounterMachineState: Sendable, Equatable {
    public var vcpus: [CounterRegisters]
    public var device: CounterDevice

    public init(vcpus: [CounterRegisters], device: CounterDevice) {
        self.vcpus = vcpus
        self.device = device
    }

    /// The state of a new guest: every vCPU at step 0 with its own PRNG seed.
    public static func initial(vcpus: Int, seed: UInt64) -> CounterMachineState {
        CounterMachineState(
            vcpus: (0..<vcpus).map {
                CounterRegisters(counter: 0, prng: (seed &+ UInt64($0) &* 0x9E37_79B9_7F4A_7C15) | 1)
            },
            device: CounterDevice())
    }
}

/// A toy VM with two memory regions ("RAM" and "video memory", each its own mapping) and vCPU
/// threads that count: each step writes the vCPU's counter (its index in the top byte) into a
/// PRNG-chosen word of RAM, and every `tickEvery` steps ticks the counter device, which writes
/// the tick number into the next word of video memory.
///
/// vCPUs run in slices of 1 ms, `stepsPerSecond / 1000` steps each (fewer when throttled), and
/// check for pause and stop requests between slices.
public final class CounterMachine: @unchecked Sendable {
    public static let tickEvery: UInt64 = 64

    let ram: UnsafeMutableRawPointer
    let ramWords: Int
    let vram: UnsafeMutableRawPointer
    let vramWords: Int
    let stepsPerSecond: Int

    /// What each vCPU last published (when it parks, stops, or ends a slice) and the device.
    private let state: Mutex<CounterMachineState>
    private let pauseRequested = Atomic<Bool>(false)
    private let stopRequested = Atomic<Bool>(false)
    private let parked = Atomic<Int>(0)
    private let throttle = Atomic<Int>(0)
    private var threads: [BackgroundThread<Void>] = []

    public init(
        ram: UnsafeMutableRawPointer, ramSize: Int, vram: UnsafeMutableRawPointer, vramSize: Int,
        stepsPerSecond: Int, state: CounterMachineState
    ) {
        self.ram = ram
        self.ramWords = ramSize / 8
        self.vram = vram
        self.vramWords = vramSize / 8
        self.stepsPerSecond = stepsPerSecond
        self.state = Mutex(state)
    }

    public var vcpuCount: Int { state.withLock { $0.vcpus.count } }

    /// The registers as last published; exact while the vCPUs are paused or stopped.
    public var snapshot: CounterMachineState { state.withLock { $0 } }

    /// Starts one thread per vCPU.
    public func start() {
        threads = (0..<vcpuCount).map { index in BackgroundThread { [self] in run(vcpu: index) } }
    }

    /// Asks every vCPU to park and waits until all have; returns the nanoseconds that took.
    public func pause() -> UInt64 {
        let start = MonotonicClock.now()
        pauseRequested.store(true, ordering: .sequentiallyConsistent)
        while parked.load(ordering: .acquiring) < threads.count {
            MonotonicClock.sleep(seconds: 0.000_05)
        }
        return MonotonicClock.now() &- start
    }

    public func resume() {
        pauseRequested.store(false, ordering: .sequentiallyConsistent)
    }

    /// 0…99: the share of each slice a vCPU sleeps instead of stepping.
    public var throttlePercent: Int {
        get { throttle.load(ordering: .relaxed) }
        set { throttle.store(min(max(newValue, 0), 99), ordering: .relaxed) }
    }

    /// Ends the vCPU threads (paused or not) and returns their final state.
    @discardableResult public func stop() -> CounterMachineState {
        stopRequested.store(true, ordering: .sequentiallyConsistent)
        for thread in threads { _ = thread.result() }
        threads = []
        return snapshot
    }

    private func run(vcpu index: Int) {
        var registers = state.withLock { $0.vcpus[index] }
        while !stopRequested.load(ordering: .acquiring) {
            if pauseRequested.load(ordering: .acquiring) {
                publish(registers, vcpu: index)
                parked.add(1, ordering: .releasing)
                while pauseRequested.load(ordering: .acquiring) && !stopRequested.load(ordering: .acquiring) {
                    MonotonicClock.sleep(seconds: 0.000_05)
                }
                parked.subtract(1, ordering: .releasing)
                continue
            }
            let sliceStart = MonotonicClock.now()
            let steps = max(1, stepsPerSecond / 1000 * (100 - throttlePercent) / 100)
            for _ in 0..<steps { step(vcpu: index, &registers) }
            publish(registers, vcpu: index)
            let left = 0.001 - MonotonicClock.seconds(since: sliceStart)
            MonotonicClock.sleep(seconds: left)
        }
        publish(registers, vcpu: index)
    }

    /// Makes a vCPU's registers visible to `snapshot` (and so to `deviceState()`).
    private func publish(_ registers: CounterRegisters, vcpu index: Int) {
        state.withLock { $0.vcpus[index] = registers }
    }

    private func step(vcpu index: Int, _ registers: inout CounterRegisters) {
        registers.prng ^= registers.prng << 13
        registers.prng ^= registers.prng >> 7
        registers.prng ^= registers.prng << 17
        registers.counter &+= 1
        let word = Int(registers.prng % UInt64(ramWords))
        (ram + word * 8).storeBytes(of: UInt64(index) << 56 | registers.counter, as: UInt64.self)
        if registers.counter % Self.tickEvery == 0 {
            state.withLock { state in
                state.device.ticks &+= 1
                let slot = Int(state.device.scanline % UInt64(vramWords))
                (vram + slot * 8).storeBytes(of: state.device.ticks, as: UInt64.self)
                state.device.scanline = UInt64((slot + 1) % vramWords)
            }
        }
    }
}
