import CFerryShims
import Glibc
import Synchronization

/// Dirty tracking with mprotect(PROT_READ) and a SIGSEGV handler (any Linux).
///
/// `start()` makes the range read-only; the first write to a page raises SIGSEGV, whose handler
/// (C, async-signal-safe, see write_fault_handler.c for the ordering argument) makes that page
/// writable and sets its bit in a preallocated bitmap. `harvest` takes the bits atomically and
/// makes the pages it took read-only again, merging adjacent pages into one mprotect call.
/// `startDeferred()` publishes the range to the handler but leaves it writable;
/// `protect(pages:)` makes it read-only piece by piece.
///
/// Limits: at most 8 tracked ranges per process (`start()` of a ninth throws `.busy`). Each scattered
/// writable page splits the mapping in the kernel; past `vm.max_map_count` (65530 by default)
/// the handler makes the whole range writable instead, and the next harvest reports every page
/// and protects the whole range again (no write is lost, but that round resends everything).
/// System calls that write into the range (read(2) into it) fail with EFAULT instead of
/// faulting; guest writes must be plain stores.
final class MprotectDirtyTracker: DirtyTracker, @unchecked Sendable {
    // @unchecked Sendable: the pointers are immutable; mutable state is in `state`, and the
    // bitmap words are shared with the signal handler only through C atomics.
    let kind = TrackerKind.mprotect
    let base: UnsafeMutableRawPointer
    let length: Int
    let pageSize: Int
    private let wordCount: Int
    /// Bits set by the signal handler; allocated once, lives as long as the tracker.
    private let handlerBits: UnsafeMutablePointer<UInt64>

    private struct Started {
        /// The handler's slot.
        var slot: Int32
        /// After `startDeferred()`, until every page is protected: which pages are.
        var deferred: DeferredProtection?
    }
    /// nil while not started.
    private let started = Mutex<Started?>(nil)

    init(base: UnsafeMutableRawPointer, length: Int, pageSize: Int) {
        self.base = base
        self.length = length
        self.pageSize = pageSize
        wordCount = (length / pageSize + 63) / 64
        handlerBits = .allocate(capacity: wordCount)
        handlerBits.initialize(repeating: 0, count: wordCount)
    }

    deinit {
        stop()
        handlerBits.deallocate()
    }

    /// Write faults resolved by the handler in this process (all trackers), for diagnostics.
    static var faultsResolved: UInt64 { ferry_wp_fault_count() }
    /// Times the handler (or a deferred `protect(pages:)`) hit the mapping limit and fell back to
    /// reporting a whole range.
    static var overflows: UInt64 { ferry_wp_overflow_count() }

    func start() throws {
        try start(protectNow: true)
    }

    func startDeferred() throws {
        try start(protectNow: false)
    }

    private func start(protectNow: Bool) throws {
        try started.withLock { started in
            guard started == nil else {
                throw SystemError(
                    code: .busy, call: "MprotectDirtyTracker.start", errno: nil, detail: "already started")
            }
            handlerBits.update(repeating: 0, count: wordCount)
            var taken: Int32 = -1
            do throws(SystemError) {
                try valueOrErrno("mprotect(\(hexAddress(base)), \(length), PROT_READ)", .negatedErrno) {
                    protectNow
                        ? ferry_wp_begin(base, length, pageSize, handlerBits, &taken)
                        : ferry_wp_begin_deferred(base, length, pageSize, handlerBits, &taken)
                }
            } catch {
                guard error.errno == .busy else { throw error }
                throw SystemError(
                    code: .busy, call: "MprotectDirtyTracker.start", errno: .busy,
                    detail:
                        "\(FERRY_WP_MAX_RANGES) mprotect trackers are already running in this process; stop one first")
            }
            started = Started(slot: taken, deferred: protectNow ? nil : DeferredProtection(pages: length / pageSize))
        }
    }

    /// mprotect(PROT_READ) of `pages` in the handler's slot. If the kernel runs out of mappings
    /// (vm.max_map_count), the C side raises the overflow flag instead of failing: the next
    /// harvest then reports every page and protects the whole range.
    private func mprotectReadOnly(slot: Int32, pages: Range<Int>) throws {
        var overflowed: Int32 = 0
        try valueOrErrno(
            "mprotect(\(hexAddress(base + pages.lowerBound * pageSize)), \(pages.count * pageSize), PROT_READ)",
            .negatedErrno
        ) {
            ferry_wp_protect(slot, pages.lowerBound, pages.count, &overflowed)
        }
    }

    /// Holds the lock across mprotect: the kernel serialises mprotects of one process anyway
    /// (mmap write lock), and `stop()` cannot retire the slot under a protection in flight.
    /// Concurrent with the SIGSEGV handler: it only unprotects pages that are read-only, i.e.
    /// whose piece was already protected (once, see `DeferredProtection`), so its ordering
    /// argument (write_fault_handler.c) is unchanged.
    func protect(pages: Range<Int>) throws {
        try started.withLock { started in
            guard let slot = started?.slot else {
                throw SystemError(
                    code: .invalidArgument, call: "MprotectDirtyTracker.protect(pages: \(pages))", errno: nil,
                    detail: "the tracker is not started")
            }
            guard var deferred = started?.deferred else { return }
            defer { started?.deferred = deferred.isComplete ? nil : deferred }
            try deferred.protectOnce(pages) { run in try mprotectReadOnly(slot: slot, pages: run) }
        }
    }

    @discardableResult
    func harvest(into bitmap: inout DirtyBitmap) throws -> Int {
        precondition(
            bitmap.count == length / pageSize,
            "harvest bitmap has \(bitmap.count) pages, region has \(length / pageSize)")
        return try started.withLock { started in
            guard let slot = started?.slot else {
                throw SystemError(
                    code: .invalidArgument, call: "MprotectDirtyTracker.harvest", errno: nil,
                    detail: "the tracker is not started")
            }
            guard var deferred = started?.deferred else {
                return try takeHandlerBits(slot: slot, into: &bitmap)
            }
            // Started deferred and not every page protected yet: writes to the unprotected pages
            // were never recorded. Protect them now and report them all; a write before this
            // protection is seen by the caller's read after the harvest, one after it faults.
            defer { started?.deferred = deferred.isComplete ? nil : deferred }
            var found = DirtyBitmap(count: length / pageSize)
            try deferred.protectOnce(0..<(length / pageSize)) { run in
                try mprotectReadOnly(slot: slot, pages: run)
                found.set(range: run)
            }
            try takeHandlerBits(slot: slot, into: &found)
            bitmap.formUnion(found)
            return found.popcount()
        }
    }

    @discardableResult
    private func takeHandlerBits(slot: Int32, into bitmap: inout DirtyBitmap) throws -> Int {
        var found = 0
        do throws(SystemError) {
            try valueOrErrno("mprotect(\(hexAddress(base)), \(length), PROT_READ)", .negatedErrno) {
                bitmap.withUnsafeMutableWords { words in ferry_wp_harvest(slot, words.baseAddress!, words.count, &found)
                }
            }
        } catch {
            var failed = error
            failed.detail = "re-protecting harvested pages failed; the next harvest reports every page"
            throw failed
        }
        return found
    }

    func stop() {
        started.withLock { started in
            guard let slot = started?.slot else { return }
            ferry_wp_end(slot)
            started = nil
        }
    }
}
