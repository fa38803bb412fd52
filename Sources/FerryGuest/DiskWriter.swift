import FerrySystem
import Logging

/// The built-in guest's disk device: a thread that appends step records (each with its 4 KiB
/// data block) to the disk's journal at `recordsPerSecond`, paused with the vCPUs. Records are
/// written under the lock, so `pause()` returns at a record boundary.
///
/// `@unchecked Sendable`: `journal`, `cursor`, the flags and `failure` are read and changed only
/// inside `condition.withLock`.
public final class DiskWriter: @unchecked Sendable {
    public let recordsPerSecond: Double
    private let condition = MonotonicCondition()
    private var journal: DiskJournal?
    private var savedCursor: DiskCursor
    private var paused = false
    private var stopping = false
    private var thread: BackgroundThread<Void>?
    private var failureText: String?
    private var written: UInt64 = 0
    private let progress: @Sendable () -> (steps: UInt64, checksum: UInt64)
    private let logger: Logger

    /// Most time a writer that fell behind (a busy host) catches up: 100 ms of records.
    static let catchUpNs: UInt64 = 100_000_000

    /// - Parameters:
    ///   - journal: the open journal (after `DiskJournal.boot` or `continuing`).
    ///   - progress: the guest's steps and workload checksum, recorded in every record.
    public init(
        journal: DiskJournal, recordsPerSecond: Double, logger: Logger,
        progress: @escaping @Sendable () -> (steps: UInt64, checksum: UInt64)
    ) throws(GuestError) {
        guard recordsPerSecond > 0, recordsPerSecond.isFinite, recordsPerSecond <= 100_000 else {
            throw GuestError(
                .invalidConfiguration, "disk rate \(recordsPerSecond) records/s: must be a number in (0, 100000]")
        }
        self.journal = journal
        self.recordsPerSecond = recordsPerSecond
        self.savedCursor = journal.cursor
        self.progress = progress
        self.logger = logger
    }

    deinit {
        if thread != nil { stopForHandover() }
    }

    public func start() {
        precondition(thread == nil, "DiskWriter.start() called twice")
        thread = BackgroundThread { [self] in run() }
    }

    /// Parks the writer between two records (no disk write until `resume()`).
    public func pause() {
        condition.withLock { paused = true }
    }

    /// Lets the writer go on. After `releaseForHandover()` it first takes the disk back: when
    /// another writer (the destination) holds it, the writer stays stopped and `failure` says why.
    public func resume() {
        condition.withLock {
            if journal == nil && failureText == nil {
                do throws(GuestError) {
                    journal = try DiskJournal.continuing(savedCursor)
                } catch {
                    failureText = "the disk could not be taken back after a failed handover: \(error.message)"
                    logger.error("disk writer stopped", metadata: ["disk.error": "\(error.message)"])
                }
            }
            paused = false
            condition.broadcast()
        }
    }

    /// While paused, at the handover: flushes the disk (`fdatasync`) and gives up its lock, so
    /// the destination can open it; returns where the journal stands. Writes nothing afterwards
    /// unless `resume()` takes the disk back.
    public func releaseForHandover() throws(GuestError) -> DiskCursor {
        try condition.withLock { () -> Result<DiskCursor, GuestError> in
            precondition(paused, "DiskWriter.releaseForHandover() needs a paused writer")
            if let journal {
                do throws(GuestError) {
                    try journal.flush()
                } catch {
                    return .failure(error)
                }
                savedCursor = journal.cursor
                journal.close()
                self.journal = nil
            }
            return .success(savedCursor)
        }.get()
    }

    /// Ends the writer thread without writing anything more (the guest runs elsewhere now).
    public func stopForHandover() {
        endThread()
        condition.withLock {
            journal?.close()
            journal = nil
        }
    }

    /// Graceful shutdown: the record in progress is finished, then the clean-shutdown record is
    /// written and the disk flushed (`fdatasync`), and the disk released. Returns the cursor after it.
    @discardableResult
    public func shutdown() throws(GuestError) -> DiskCursor {
        endThread()
        let (steps, checksum) = progress()
        return try condition.withLock { () -> Result<DiskCursor, GuestError> in
            guard let journal else { return .success(savedCursor) }
            do throws(GuestError) {
                try journal.appendCleanShutdown(progress: steps, checksum: checksum)
            } catch {
                return .failure(error)
            }
            savedCursor = journal.cursor
            journal.close()
            self.journal = nil
            return .success(savedCursor)
        }.get()
    }

    /// Where the journal stands (exact while paused or stopped).
    public var cursor: DiskCursor { condition.withLock { journal?.cursor ?? savedCursor } }
    /// Step records this writer wrote.
    public var recordsWritten: UInt64 { condition.withLock { written } }
    /// Why the writer stopped writing (a failed write or a disk it could not take back), if it did.
    public var failure: String? { condition.withLock { failureText } }

    private func endThread() {
        condition.withLock {
            stopping = true
            condition.broadcast()
        }
        _ = thread?.result()
        thread = nil
    }

    /// The thread body: one step record per 1/rate seconds while running.
    private func run() {
        let interval = UInt64(1e9 / recordsPerSecond)
        var due = MonotonicClock.now()
        condition.withLock {
            while !stopping {
                if paused || journal == nil || failureText != nil {
                    condition.wait()
                    due = MonotonicClock.now()
                    continue
                }
                let now = MonotonicClock.now()
                if now < due {
                    condition.wait(untilNanoseconds: due)
                    continue
                }
                writeRecord()
                due = max(due &+ interval, now &- Self.catchUpNs)
            }
        }
    }

    /// One step record (with the lock held).
    private func writeRecord() {
        let (steps, checksum) = progress()
        do throws(GuestError) {
            try journal?.appendStep(progress: steps, checksum: checksum)
            written += 1
        } catch {
            failureText = "writing the disk failed: \(error.message)"
            logger.error("disk writer stopped", metadata: ["disk.error": "\(error.message)"])
        }
    }
}
