import Glibc
import Synchronization

/// Writer threads that store a whole page (`memset` of the page size) per step, as fast as they
/// can: the counterpart of the built-in guest, whose steps store 16 bytes into a page. Pattern
/// `sweep`: each thread walks its own contiguous share of the region in order, wrapping;
/// `uniform`: each thread picks pages uniformly at random over the whole region.
///
/// `@unchecked Sendable`: `memory` is only written by the writer threads (each step a whole
/// page; threads may overlap on a page under `uniform`, which is fine for a benchmark); the
/// counters and the stop flag are atomics; `threads` is touched only by the controlling thread.
final class PageWriter: @unchecked Sendable {
    enum Pattern: String { case sweep, uniform }

    let memory: UnsafeMutableRawPointer
    let pageCount: Int
    let pageSize: Int
    let pattern: Pattern
    let threadCount: Int
    private let stopping = Atomic<Bool>(false)
    /// One per thread, each with its count of pages written (published every `batch` pages).
    private let jobs: [Job]
    private var threads: [pthread_t] = []

    /// Pages written between two looks at the stop flag.
    static let batch = 1024

    init(memory: UnsafeMutableRawPointer, pageCount: Int, pageSize: Int, pattern: Pattern, threads: Int) {
        self.memory = memory
        self.pageCount = pageCount
        self.pageSize = pageSize
        self.pattern = pattern
        threadCount = threads
        jobs = (0..<threads).map { Job(index: $0) }
    }

    /// Pages written by all threads so far (approximate while running: per batch).
    var pagesWritten: UInt64 { jobs.reduce(0) { $0 + $1.written.load(ordering: .relaxed) } }

    func start() {
        for job in jobs {
            let context = Unmanaged.passRetained(Runner(writer: self, job: job)).toOpaque()
            var thread = pthread_t()
            let rc = pthread_create(
                &thread, nil,
                { context in
                    let runner = Unmanaged<Runner>.fromOpaque(context!).takeRetainedValue()
                    runner.writer.run(runner.job)
                    return nil
                }, context)
            precondition(rc == 0, "pthread_create failed: \(rc)")
            threads.append(thread)
        }
    }

    /// Stops and joins every thread.
    func stop() {
        stopping.store(true, ordering: .relaxed)
        for thread in threads { pthread_join(thread, nil) }
        threads = []
    }

    /// `@unchecked Sendable`: `index` is immutable, `written` atomic.
    private final class Job: @unchecked Sendable {
        let index: Int
        let written = Atomic<UInt64>(0)
        init(index: Int) { self.index = index }
    }

    private final class Runner {
        let writer: PageWriter
        let job: Job
        init(writer: PageWriter, job: Job) {
            self.writer = writer
            self.job = job
        }
    }

    private func run(_ job: Job) {
        let index = job.index
        let first = pageCount * index / threadCount
        let share = max(1, pageCount * (index + 1) / threadCount - first)
        var cursor = 0
        var random = UInt64(index + 1) &* 0x9E37_79B9_7F4A_7C15
        var written: UInt64 = 0
        var value = UInt8(truncatingIfNeeded: index + 1)
        while !stopping.load(ordering: .relaxed) {
            for _ in 0..<Self.batch {
                let page: Int
                switch pattern {
                case .sweep:
                    page = first + cursor
                    cursor += 1
                    if cursor == share {
                        cursor = 0
                        value &+= 1
                    }
                case .uniform:
                    random = random &+ 0x9E37_79B9_7F4A_7C15
                    var z = random
                    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
                    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
                    z ^= z >> 31
                    page = Int(z.multipliedFullWidth(by: UInt64(pageCount)).high)
                    value &+= 1
                }
                memset(memory + page &* pageSize, Int32(value), pageSize)
            }
            written &+= UInt64(Self.batch)
            job.written.store(written, ordering: .relaxed)
        }
    }
}
