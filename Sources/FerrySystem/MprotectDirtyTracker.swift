import CFerryShims
import Glibc
import Synchronization

/// Dirty tracking with mprotect(PROT_READ) and a SIGSEGV handler (any Linux).
///
/// `start()` makes the range read-only; the first write to a page raises SIGSEGV, whose handler
/// (C, async-signal-safe, see write_fault_handler.c for the ordering argument) makes that page
/// writable and sets its bit in a preallocated bitmap. `harvest` takes the bits atomically and
/// makes the pages it took read-only again, merging adjacent pages into one mprotect call.
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

    /// The handler's slot while started.
    private let slot = Mutex<Int32?>(nil)

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
    /// Times the handler hit the mapping limit and unprotected a whole range.
    static var overflows: UInt64 { ferry_wp_overflow_count() }

    func start() throws {
        try slot.withLock { slot in
            guard slot == nil else {
                throw SystemError(code: .busy, call: "MprotectDirtyTracker.start", errno: 0, detail: "already started")
            }
            handlerBits.update(repeating: 0, count: wordCount)
            var taken: Int32 = -1
            let error = ferry_wp_begin(base, length, pageSize, handlerBits, &taken)
            switch error {
            case 0:
                slot = taken
            case EBUSY:
                throw SystemError(code: .busy, call: "MprotectDirtyTracker.start", errno: EBUSY,
                                  detail: "\(FERRY_WP_MAX_RANGES) mprotect trackers are already running in this process; stop one first")
            default:
                throw SystemError(call: "mprotect(\(hexAddress(base)), \(length), PROT_READ)", errno: error)
            }
        }
    }

    @discardableResult
    func harvest(into bitmap: inout DirtyBitmap) throws -> Int {
        precondition(bitmap.count == length / pageSize,
                     "harvest bitmap has \(bitmap.count) pages, region has \(length / pageSize)")
        return try slot.withLock { slot in
            guard let slot else {
                throw SystemError(code: .invalidArgument, call: "MprotectDirtyTracker.harvest", errno: 0,
                                  detail: "the tracker is not started")
            }
            var found = 0
            let error = bitmap.withUnsafeMutableWords { words in
                ferry_wp_harvest(slot, words.baseAddress!, words.count, &found)
            }
            guard error == 0 else {
                throw SystemError(call: "mprotect(\(hexAddress(base)), \(length), PROT_READ)", errno: error,
                                  detail: "re-protecting harvested pages failed; the next harvest reports every page")
            }
            return found
        }
    }

    func stop() {
        slot.withLock { slot in
            guard let taken = slot else { return }
            ferry_wp_end(taken)
            slot = nil
        }
    }
}
