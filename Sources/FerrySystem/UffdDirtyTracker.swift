import CFerryShims
import Glibc
import Synchronization

/// Dirty tracking with userfaultfd asynchronous write-protect (Linux 6.7+).
///
/// `start()` registers the range for write-protect faults in async mode and protects it: the
/// first write to a page then costs one minor fault that the kernel resolves by itself, clearing
/// the page's uffd-wp bit (never-touched pages carry a "pte marker" that does the same, with
/// WP_UNPOPULATED for anonymous memory and always for file memory). `harvest` is a single
/// PAGEMAP_SCAN ioctl that lists the pages whose bit is clear and sets it again, atomically per
/// page table under the page-table lock, so a concurrent write either lands before the page is
/// reported (and the caller reads it afterwards) or faults again and shows up next time.
///
/// `startDeferred()` only registers the range (a VMA flag, no page-table walk); `protect(pages:)`
/// then issues UFFDIO_WRITEPROTECT per piece, which is where the page-table walk and its cost
/// (~25 ms per populated GiB) go.
final class UffdDirtyTracker: DirtyTracker, @unchecked Sendable {
    // @unchecked Sendable: the pointers are immutable addresses; all mutable state is in `state`.
    let kind = TrackerKind.uffd
    let base: UnsafeMutableRawPointer
    let length: Int
    let pageSize: Int
    private let features: UInt64

    /// Regions per PAGEMAP_SCAN call. The kernel stops early only when vec is full, so fewer
    /// regions than this means the range was walked completely.
    static let regionCapacity = 16 * 1024

    private struct State {
        var uffd: Int32 = -1
        var pagemap: Int32 = -1
        var regions: UnsafeMutablePointer<ferry_page_region>?
        /// UFFDIO_API features granted.
        var granted: UInt64 = 0
        /// After `startDeferred()`, until every page is protected: which pages are.
        var deferred: DeferredProtection?
    }
    private let state = Mutex(State())

    init(base: UnsafeMutableRawPointer, length: Int, pageSize: Int, features: UInt64) {
        self.base = base
        self.length = length
        self.pageSize = pageSize
        self.features = features
    }

    deinit { stop() }

    /// The UFFDIO_API features the kernel granted at `start()`, 0 before.
    var grantedFeatures: UInt64 { state.withLock { $0.granted } }

    func start() throws {
        try start(protectNow: true)
    }

    func startDeferred() throws {
        try start(protectNow: false)
    }

    private func start(protectNow: Bool) throws {
        try state.withLock { state in
            guard state.uffd < 0 else {
                throw SystemError(code: .busy, call: "UffdDirtyTracker.start", errno: nil, detail: "already started")
            }
            var opened = State()
            do {
                try open(into: &opened, protectNow: protectNow)
                if !protectNow { opened.deferred = DeferredProtection(pages: length / pageSize) }
                state = opened
            } catch {
                Self.release(&opened)
                throw error
            }
        }
    }

    private func open(into state: inout State, protectNow: Bool) throws {
        let range = "\(hexAddress(base)), \(length)"
        try valueOrErrno("userfaultfd(O_CLOEXEC|O_NONBLOCK)", .negatedErrno) { ferry_uffd_open(&state.uffd) }
        state.granted = try negotiate(fd: state.uffd)

        var ioctls: UInt64 = 0
        let uffd = state.uffd
        do throws(SystemError) {
            try valueOrErrno("ioctl(UFFDIO_REGISTER, MODE_WP, \(range))", .negatedErrno) {
                ferry_uffd_register_wp(uffd, base, UInt64(length), &ioctls)
            }
        } catch {
            guard error.errno == .invalidArgument else { throw error }
            var unsupported = error
            unsupported.code = .unsupported
            unsupported.detail = "this memory cannot be write-protected by userfaultfd here; use the mprotect tracker"
            throw unsupported
        }
        if protectNow { try writeProtect(uffd: state.uffd, pages: 0..<(length / pageSize)) }
        state.pagemap = try valueOrErrno("open(\"/proc/self/pagemap\")") {
            Glibc.open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC)
        }
        state.regions = .allocate(capacity: Self.regionCapacity)
    }

    /// UFFDIO_WRITEPROTECT(MODE_WP) of `pages`: sets their uffd-wp bits (pte markers for pages
    /// not mapped yet) and flushes the TLB before returning, so any later write faults, and the
    /// kernel's async resolution clears the bit that the next PAGEMAP_SCAN reports.
    private func writeProtect(uffd: Int32, pages: Range<Int>) throws {
        let start = base + pages.lowerBound * pageSize
        let bytes = pages.count * pageSize
        try valueOrErrno("ioctl(UFFDIO_WRITEPROTECT, MODE_WP, \(hexAddress(start)), \(bytes))", .negatedErrno) {
            ferry_uffd_writeprotect(uffd, start, UInt64(bytes), 1)
        }
    }

    /// Holds the state lock across the ioctl, so protections of different pieces run one at a
    /// time (each is ~50 µs per 2 MiB; their callers spend far longer sending the piece) and
    /// `stop()` cannot close the userfaultfd under a protection in flight. The kernel itself
    /// would allow concurrent UFFDIO_WRITEPROTECTs (mmap read lock, page-table locks).
    func protect(pages: Range<Int>) throws {
        try state.withLock { state in
            guard state.uffd >= 0 else {
                throw SystemError(
                    code: .invalidArgument, call: "UffdDirtyTracker.protect(pages: \(pages))", errno: nil,
                    detail: "the tracker is not started")
            }
            guard var deferred = state.deferred else { return }
            defer { state.deferred = deferred.isComplete ? nil : deferred }
            let uffd = state.uffd
            try deferred.protectOnce(pages) { run in try writeProtect(uffd: uffd, pages: run) }
        }
    }

    /// UFFDIO_API with the wanted features, dropping optional ones if the kernel refuses.
    /// The kernel leaves the fd uninitialised when it refuses, so retrying on it is fine.
    private func negotiate(fd: Int32) throws -> UInt64 {
        let attempts = [
            features,
            features & ~FERRY_UFFD_FEATURE_WP_UNPOPULATED,
            FERRY_UFFD_FEATURE_WP_ASYNC | (features & FERRY_UFFD_FEATURE_WP_UNPOPULATED),
            FERRY_UFFD_FEATURE_WP_ASYNC,
        ]
        var lastError: Errno?
        for attempt in attempts {
            var answer: UInt64 = 0
            do throws(SystemError) {
                try valueOrErrno("ioctl(UFFDIO_API)", .negatedErrno) { ferry_uffd_api(fd, attempt, &answer) }
                return attempt
            } catch {
                lastError = error.errno
                guard error.errno == .invalidArgument else { break }
            }
        }
        throw SystemError(
            code: .unsupported, call: "ioctl(UFFDIO_API, features: 0x\(String(features, radix: 16)))",
            errno: lastError, detail: "the kernel refuses async write-protect")
    }

    @discardableResult
    func harvest(into bitmap: inout DirtyBitmap) throws -> Int {
        let pages = length / pageSize
        precondition(bitmap.count == pages, "harvest bitmap has \(bitmap.count) pages, region has \(pages)")
        return try state.withLock { state in
            guard let regions = state.regions else {
                throw SystemError(
                    code: .invalidArgument, call: "UffdDirtyTracker.harvest", errno: nil,
                    detail: "the tracker is not started")
            }
            guard var deferred = state.deferred else {
                return try scanWritten(pagemap: state.pagemap, regions: regions, into: &bitmap)
            }
            // Started deferred and not every page protected yet. Pages never protected have no
            // uffd-wp bit, so a scan would report them only where mapped: protect the rest now
            // and report all of it. A write to them before this protection is seen by the
            // caller's read after the harvest; one after it is in this scan or the next.
            defer { state.deferred = deferred.isComplete ? nil : deferred }
            var found = DirtyBitmap(count: pages)
            let uffd = state.uffd
            try deferred.protectOnce(0..<pages) { run in
                try writeProtect(uffd: uffd, pages: run)
                found.set(range: run)
            }
            try scanWritten(pagemap: state.pagemap, regions: regions, into: &found)
            bitmap.formUnion(found)
            return found.popcount()
        }
    }

    /// One PAGEMAP_SCAN walk of the region: ORs the written pages into `bitmap` and
    /// write-protects them again; returns how many it found.
    @discardableResult
    private func scanWritten(
        pagemap: Int32, regions: UnsafeMutablePointer<ferry_page_region>,
        into bitmap: inout DirtyBitmap
    ) throws -> Int {
        let start = UInt64(UInt(bitPattern: base))
        let end = start + UInt64(length)
        let shift = UInt64(pageSize.trailingZeroBitCount)
        var cursor = start
        var found = 0
        while cursor < end {
            var count: UInt64 = 0
            var walkEnd: UInt64 = 0
            try valueOrErrno(
                "ioctl(PAGEMAP_SCAN, 0x\(String(cursor, radix: 16))..<0x\(String(end, radix: 16)))", .negatedErrno
            ) {
                ferry_pagemap_scan_written(pagemap, cursor, end, regions, UInt64(Self.regionCapacity), &count, &walkEnd)
            }
            var lastEnd = cursor
            for index in 0..<Int(count) {
                let region = regions[index]
                let first = Int((region.start - start) >> shift)
                let last = Int((region.end - start) >> shift)
                bitmap.set(range: first..<last)
                found += last - first
                lastEnd = region.end
            }
            // Fewer regions than room for: the walk reached `end`. (With many regions the
            // kernel's walk_end can lag behind what it walked, so it is not the test.)
            if count < UInt64(Self.regionCapacity) { break }
            cursor = max(walkEnd, lastEnd)
        }
        return found
    }

    func stop() {
        state.withLock { Self.release(&$0) }
    }

    /// Closing the userfaultfd unregisters the range and drops its write-protection (the
    /// kernel resets uffd-wp bits and markers of the ranges registered with this fd only).
    private static func release(_ state: inout State) {
        if state.uffd >= 0 { close(state.uffd) }
        if state.pagemap >= 0 { close(state.pagemap) }
        state.regions?.deallocate()
        state = State()
    }
}
