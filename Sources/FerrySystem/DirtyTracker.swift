/// How a tracker finds written pages.
public enum TrackerKind: String, Sendable {
    /// userfaultfd asynchronous write-protect + PAGEMAP_SCAN (Linux 6.7+): the kernel records
    /// writes in page-table bits; no signal, no user-space work per write.
    case uffd
    /// mprotect(PROT_READ) + a SIGSEGV handler that unprotects and records each page.
    case mprotect
    /// KVM's own dirty log of a KVM guest's memory slot (FerryKVM's `KVMDirtyTracker`): writes
    /// by a KVM guest are invisible to the two above.
    case kvm
}

/// What the user asked for; `auto` picks `uffd` where it works, else `mprotect`.
public enum TrackerChoice: String, Sendable, CaseIterable {
    case auto, uffd, mprotect
}

/// Records which pages of one region are written, between harvests.
///
/// Usage: `start()` before the first page is read, then `harvest(into:)` once per round; the
/// pages a harvest reports are then read by the caller. Other threads may write to the region
/// at any time, also during a harvest. Guarantee: a write that completes after a harvest
/// returns is reported by a later harvest; a write during a harvest is reported by it or a
/// later one. Pages may be reported without having been written (rare with uffd).
///
/// Deferred start: `startDeferred()` arms the tracker without protecting anything, and
/// `protect(pages:)` then protects the region piece by piece (e.g. each piece just before it is
/// read, by the thread that reads it; whole-region protection of a large populated region costs
/// tens of milliseconds). A write to a page is recorded only if it completes after the call that
/// protected that page returned; an earlier write is seen by a read of the page that follows the
/// protection. So: protect a piece, then read it, and every write is either read or recorded.
/// A harvest taken while some pages are still unprotected protects them and reports them all
/// (their writes were never recorded), so the contract above holds whatever the caller does.
///
/// Trackers are thread-safe: calls are serialised internally (harvest from one thread at a
/// time is the intended use); `protect(pages:)` may be called from several threads at once.
public protocol DirtyTracker: AnyObject, Sendable {
    var kind: TrackerKind { get }
    /// Protects the whole region; from now on every write is recorded.
    func start() throws
    /// Starts tracking with nothing protected: no write is recorded until `protect(pages:)`
    /// protects its page. Cheap (no page-table walk).
    func startDeferred() throws
    /// Write-protects pages `pages` (page indices of the region) of a tracker started with
    /// `startDeferred()`; every write to them that completes after this returns is reported by a
    /// later harvest. Pages protected before (by an earlier call or a harvest) are left alone,
    /// so each page is protected once. Several threads may call this at once. Throws if the
    /// tracker is not started; a no-op after `start()`.
    func protect(pages: Range<Int>) throws
    /// ORs the pages written since `start()`/the previous harvest into `bitmap` (bit i = page i
    /// of the region; its count must be the region's page count), re-protects them, and returns
    /// how many pages it found.
    @discardableResult func harvest(into bitmap: inout DirtyBitmap) throws -> Int
    /// Unprotects and forgets the region. Idempotent; `deinit` calls it. Stop a tracker before
    /// unmapping its region.
    func stop()
}

public enum DirtyTrackers {
    /// nil when userfaultfd async write-protect + PAGEMAP_SCAN work here (checked once per
    /// process by a self-test on anonymous and shared memory), else the reason.
    public static func uffdUnavailableReason() -> String? {
        switch UffdProbe.result {
        case .success: nil
        case .failure(let reason): reason.text
        }
    }

    /// Builds the chosen tracker for `[base, base+length)`. For `.auto`, picks uffd when
    /// available else mprotect; `why` says which and why (for logs and reports).
    ///
    /// At most 8 mprotect trackers can be started at a time per process (the ninth `start()`
    /// throws `.busy`); uffd trackers are not limited.
    public static func make(
        _ choice: TrackerChoice, base: UnsafeMutableRawPointer, length: Int, pageSize: Int
    ) throws -> (tracker: any DirtyTracker, why: String) {
        try checkRange(base: base, length: length, pageSize: pageSize)
        switch choice {
        case .uffd:
            let support: UffdSupport
            switch UffdProbe.result {
            case .success(let found): support = found
            case .failure(let reason):
                throw SystemError(
                    code: .unsupported, call: "DirtyTrackers.make(.uffd)", errno: nil,
                    detail: "the uffd tracker is unavailable: \(reason.text); use .auto or .mprotect")
            }
            return (
                UffdDirtyTracker(base: base, length: length, pageSize: pageSize, features: support.features),
                "uffd: requested (\(support.summary))"
            )
        case .mprotect:
            return (
                MprotectDirtyTracker(base: base, length: length, pageSize: pageSize),
                "mprotect: requested"
            )
        case .auto:
            switch UffdProbe.result {
            case .success(let support):
                return (
                    UffdDirtyTracker(base: base, length: length, pageSize: pageSize, features: support.features),
                    "uffd: auto, userfaultfd async write-protect works here (\(support.summary))"
                )
            case .failure(let reason):
                return (
                    MprotectDirtyTracker(base: base, length: length, pageSize: pageSize),
                    "mprotect: auto, uffd unavailable: \(reason.text)"
                )
            }
        }
    }

    private static func checkRange(base: UnsafeMutableRawPointer, length: Int, pageSize: Int) throws {
        let call = "DirtyTrackers.make(base: \(hexAddress(base)), length: \(length), pageSize: \(pageSize))"
        guard pageSize == systemPageSize else {
            throw SystemError(
                code: .invalidArgument, call: call, errno: nil,
                detail: "page size must be the system page size \(systemPageSize)")
        }
        guard length > 0, length % pageSize == 0, Int(bitPattern: base) % pageSize == 0 else {
            throw SystemError(
                code: .invalidArgument, call: call, errno: nil,
                detail: "base and length must be page-aligned and length positive")
        }
    }
}
