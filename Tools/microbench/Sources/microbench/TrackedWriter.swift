import FerryGuest
import Logging

/// What writes guest memory during a tracker benchmark: the built-in guest (`guest`: FerryGuest
/// vCPU threads, unpaced, each step storing 16 bytes into one page) or `PageWriter` (`page`:
/// each step a memset of the whole page).
enum TrackedWriterKind: String, CaseIterable {
    case guest, page
}

/// One started writer; `pagesWritten` counts page writes (guest steps) so far.
struct TrackedWriter {
    private let guest: Guest?
    private let pageWriter: PageWriter?

    static let seed: UInt64 = 0x5EED

    /// Starts `threads` writer threads of `kind` over `[memory, memory + pageCount pages)`.
    /// `pacedRate` (guest only): the guest writes at that rate instead of as fast as it can.
    static func start(
        _ kind: TrackedWriterKind, pattern: PageWriter.Pattern, memory: UnsafeMutableRawPointer,
        pageCount: Int, pageSize: Int, threads: Int, pacedRate: Rate? = nil
    ) throws -> TrackedWriter {
        switch kind {
        case .guest:
            // An unpaced guest ignores the rate.
            let rate = pacedRate ?? Rate(pagesPerSecond: 1)
            let workload: WorkloadSpec = pattern == .sweep ? .sweep(rate) : .uniform(rate)
            let configuration = GuestConfiguration(vcpus: threads, workload: workload, seed: seed, pageSize: pageSize)
            let guest = try Guest(
                memory: memory, size: pageCount * pageSize, configuration: configuration,
                stepLimits: pacedRate == nil ? Array(repeating: .max, count: threads) : nil,
                paced: pacedRate != nil,
                logger: Logger(label: "microbench.guest", factory: { _ in SwiftLogNoOpLogHandler() }))
            guest.start()
            return TrackedWriter(guest: guest, pageWriter: nil)
        case .page:
            precondition(pacedRate == nil, "the page writer is never paced")
            let writer = PageWriter(
                memory: memory, pageCount: pageCount, pageSize: pageSize, pattern: pattern, threads: threads)
            writer.start()
            return TrackedWriter(guest: nil, pageWriter: writer)
        }
    }

    var pagesWritten: UInt64 { guest?.totalSteps ?? pageWriter?.pagesWritten ?? 0 }

    /// Stops and joins the writer threads.
    func stop() {
        _ = guest?.stop()
        pageWriter?.stop()
    }
}
