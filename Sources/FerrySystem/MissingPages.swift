import CFerryShims
import Glibc
import Synchronization

/// Post-copy's memory on the destination (docs/postcopy.md): a range registered with
/// userfaultfd in missing mode, so that any access to a page that is not there yet — by a
/// thread of this process or by the kernel on its behalf (KVM reading guest memory, a `read(2)`
/// into it) — blocks until the page is installed, and is reported here as a fault to serve.
///
/// Pages are installed atomically with `UFFDIO_COPY` (or `UFFDIO_ZEROPAGE` for a page known to
/// be zero), which wakes whoever waits on them; whichever of the fault's answer and the
/// background push comes first installs the page, the other finds it present (`EEXIST`) and
/// changes nothing. `drop` makes pages missing again (pages that went stale on the source
/// before the switch). Works on private anonymous memory and on shared memory (shmem: tmpfs
/// files, memfd); a mapping of a file on a disk file system is refused (`unsupported`).
///
/// The userfaultfd stays open until `close()`, which refuses while pages are missing: closing it
/// would let a blocked access go on with a zero page instead of the guest's data.
///
/// **Minor-fault mode** (`minorFaults`, shmem only): the range is also registered for minor
/// faults, so that a page that *is* in the file's page cache but not mapped in this range faults
/// too, until `publish` or `map` maps it (`UFFDIO_CONTINUE`). The pages' bytes are then written
/// through another mapping of the same file, never through this one: a page whose final bytes
/// are not there yet is never mapped here, so nothing needs to be dropped at the switch, however
/// many pages are stale — the range is only unmapped here once (`MADV_DONTNEED`, one call), and
/// "present" means "its final bytes are in the file".
public final class MissingPages: @unchecked Sendable {
    // @unchecked Sendable: the pointer is an immutable address; mutable state is in `state`, and
    // the userfaultfd's ioctls are safe from any thread.
    public let base: UnsafeMutableRawPointer
    public let length: Int
    public let pageSize: Int
    public var pageCount: Int { length / pageSize }
    private let shared: Bool
    /// Registered for minor faults too (see the type's description).
    public let minorFaults: Bool
    private let fd: Int32

    private struct State {
        var present: DirtyBitmap
        var presentCount = 0
        var closed = false
    }
    private let state: Mutex<State>

    /// Registers `[base, base + length)` (page-aligned, a whole number of pages) for missing-page
    /// faults. Pages already present stay; the others fault from now on. `shared`: the mapping
    /// is MAP_SHARED (shmem), which `drop` punches out of the file rather than unmapping.
    public init(
        base: UnsafeMutableRawPointer, length: Int, pageSize: Int, shared: Bool, minorFaults: Bool = false
    ) throws(SystemError) {
        guard length > 0, length % pageSize == 0, Int(bitPattern: base) % pageSize == 0 else {
            throw SystemError(
                code: .invalidArgument, call: "MissingPages(\(hexAddress(base)), \(length))", errno: nil,
                detail: "the range must be a non-empty whole number of \(pageSize)-byte pages on a page boundary")
        }
        guard !minorFaults || shared else {
            throw SystemError(
                code: .invalidArgument, call: "MissingPages(minorFaults: true)", errno: nil,
                detail: "minor faults need shared memory (a tmpfs file or a memfd)")
        }
        self.base = base
        self.length = length
        self.pageSize = pageSize
        self.shared = shared
        self.minorFaults = minorFaults
        if minorFaults {
            // Whatever this range mapped so far is unmapped here (the file keeps its pages):
            // from now on a page is mapped here only by `publish` or `map`.
            try valueOrErrno("madvise(\(hexAddress(base)), \(length), MADV_DONTNEED)") {
                madvise(base, length, MADV_DONTNEED)
            }
        }
        var fd: Int32 = -1
        try valueOrErrno("userfaultfd(O_CLOEXEC|O_NONBLOCK)", .negatedErrno) { ferry_uffd_open(&fd) }
        do throws(SystemError) {
            var granted: UInt64 = 0
            let features =
                (shared ? FERRY_UFFD_FEATURE_MISSING_SHMEM : 0) | (minorFaults ? FERRY_UFFD_FEATURE_MINOR_SHMEM : 0)
            try valueOrErrno("ioctl(UFFDIO_API, features: 0x\(String(features, radix: 16)))", .negatedErrno) {
                ferry_uffd_api(fd, features, &granted)
            }
            var ioctls: UInt64 = 0
            do throws(SystemError) {
                try valueOrErrno("ioctl(UFFDIO_REGISTER, MODE_MISSING, \(hexAddress(base)), \(length))", .negatedErrno)
                {
                    ferry_uffd_register_missing(fd, base, UInt64(length), minorFaults ? 1 : 0, &ioctls)
                }
            } catch {
                guard error.errno == .invalidArgument else { throw error }
                var unsupported = error
                unsupported.code = .unsupported
                unsupported.detail =
                    "userfaultfd cannot serve missing pages of this memory: post-copy needs the guest's memory"
                    + " anonymous or on tmpfs (an image in /dev/shm), not a file on a disk file system"
                throw unsupported
            }
            // _UFFDIO_COPY is bit 3, _UFFDIO_ZEROPAGE bit 4, _UFFDIO_CONTINUE bit 7 of the ioctls
            // the range allows.
            let needed: UInt64 = (1 << 3) | (1 << 4) | (minorFaults ? 1 << 7 : 0)
            guard ioctls & needed == needed else {
                throw SystemError(
                    code: .unsupported, call: "ioctl(UFFDIO_REGISTER, MODE_MISSING)", errno: nil,
                    detail:
                        "the range does not allow UFFDIO_COPY and UFFDIO_ZEROPAGE (ioctls 0x\(String(ioctls, radix: 16)))"
                )
            }
        } catch {
            Glibc.close(fd)
            throw error
        }
        self.fd = fd
        self.state = Mutex(State(present: DirtyBitmap(count: length / pageSize)))
    }

    deinit {
        // Unreachable with pages missing unless the owner dropped it without `close()`: then the
        // waiters go on with zero pages, which is why `close()` refuses while any is missing.
        Glibc.close(fd)
    }

    /// Marks pages that were present before the registration (pre-copied) or that the caller
    /// wrote through another mapping of the same shmem file: they are not expected to fault.
    public func markPresent(_ pages: Range<Int>) {
        state.withLock { state in
            for page in pages where !state.present[page] {
                state.present.set(page)
                state.presentCount += 1
            }
        }
    }

    /// Marks every page present except those set in `lacking` (the pages whose final bytes are
    /// still to come): one pass over the bitmap's words.
    public func markPresent(except lacking: DirtyBitmap) {
        precondition(lacking.count == pageCount, "a bitmap of \(lacking.count) pages for \(pageCount)")
        state.withLock { state in
            var present = DirtyBitmap(count: pageCount)
            present.withUnsafeMutableWords { words in
                for index in 0..<words.count { words[index] = ~lacking.words[index] }
            }
            state.present = present
            state.presentCount = present.popcount()
        }
    }

    /// The pages present now, one bit each.
    public var presentPages: DirtyBitmap { state.withLock { $0.present } }

    /// Pages not yet installed (or dropped again).
    public var missingCount: Int { state.withLock { pageCount - $0.presentCount } }

    public func isPresent(_ page: Int) -> Bool { state.withLock { $0.present[page] } }

    /// Waits up to `timeoutMs` (-1: without limit) for accesses to missing pages; appends the
    /// faulting pages to `pages` (a page may appear more than once: one fault per waiting
    /// thread) and returns how many it appended, 0 when the time ran out.
    public func waitForFaults(timeoutMs: Int32, into pages: inout [Int]) throws(SystemError) -> Int {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ready = try valueOrErrno("poll(userfaultfd, \(timeoutMs) ms)") { poll(&poller, 1, timeoutMs) }
        guard ready > 0 else { return 0 }
        return try readFaults(into: &pages)
    }

    /// The faults waiting now, without blocking.
    public func readFaults(into pages: inout [Int]) throws(SystemError) -> Int {
        let capacity = 64
        var addresses = [UInt64](repeating: 0, count: capacity)
        var flags = [UInt64](repeating: 0, count: capacity)
        let count = try valueOrErrno("read(userfaultfd)", .negatedErrno) {
            ferry_uffd_read_faults(fd, &addresses, &flags, Int32(capacity))
        }
        let start = UInt64(UInt(bitPattern: base))
        for address in addresses[0..<Int(count)] where address >= start && address < start + UInt64(length) {
            pages.append(Int((address - start) / UInt64(pageSize)))
        }
        return Int(count)
    }

    /// Installs `page` with the `pageSize` bytes at `source` and wakes its waiters. False when
    /// the page was present already (installed by the other path first): nothing changes.
    @discardableResult
    public func install(page: Int, from source: UnsafeRawPointer) throws(SystemError) -> Bool {
        try install(pages: page..<(page + 1), from: source) == 1
    }

    /// Installs the contiguous `pages` from `source` (`pages.count * pageSize` bytes); returns
    /// how many were installed now (those present already are left as they are).
    @discardableResult
    public func install(pages: Range<Int>, from source: UnsafeRawPointer) throws(SystemError) -> Int {
        precondition(pages.lowerBound >= 0 && pages.upperBound <= pageCount, "pages \(pages) outside \(pageCount)")
        var installed = 0
        var page = pages.lowerBound
        while page < pages.upperBound {
            let destination = base + page * pageSize
            let bytes = (pages.upperBound - page) * pageSize
            var copied: Int64 = 0
            let result = ferry_uffd_copy(
                fd, destination, source + (page - pages.lowerBound) * pageSize, UInt64(bytes), &copied)
            let done = max(0, Int(copied)) / pageSize
            if done > 0 { record(page..<(page + done)) }
            installed += done
            page += done
            if result == 0 || result == -EAGAIN { continue }
            if result == -EEXIST {
                // The page at `page` is there already: woken by whoever installed it; wake again
                // for a waiter that queued in between, then go on past it.
                _ = ferry_uffd_wake(fd, base + page * pageSize, UInt64(pageSize))
                record(page..<(page + 1))
                page += 1
                continue
            }
            throw SystemError(
                call: "ioctl(UFFDIO_COPY, \(hexAddress(destination)), \(bytes))", errno: Errno(Int32(-result)))
        }
        return installed
    }

    /// Installs `page` as zeros (a page the source said is zero) and wakes its waiters; false
    /// when it was present already.
    @discardableResult
    public func installZero(page: Int) throws(SystemError) -> Bool {
        let address = base + page * pageSize
        let result = ferry_uffd_zeropage(fd, address, UInt64(pageSize))
        record(page..<(page + 1))
        if result == 0 { return true }
        if result == -EEXIST {
            _ = ferry_uffd_wake(fd, address, UInt64(pageSize))
            return false
        }
        throw SystemError(call: "ioctl(UFFDIO_ZEROPAGE, \(hexAddress(address)))", errno: Errno(Int32(-result)))
    }

    /// Minor-fault mode: `page`'s final bytes are in the file now (written through another
    /// mapping): maps it here and wakes whoever waits on it. False when it was mapped already.
    @discardableResult
    public func publish(page: Int) throws(SystemError) -> Bool {
        record(page..<(page + 1))
        return try map(page..<(page + 1)) == 1
    }

    /// Minor-fault mode: maps `pages`, whose final bytes are in the file, here (one
    /// `UFFDIO_CONTINUE` per run), waking their waiters; returns how many it mapped now (those
    /// mapped already are left). A page the file has no block for (a hole) is mapped as zeros.
    @discardableResult
    public func map(_ pages: Range<Int>) throws(SystemError) -> Int {
        precondition(minorFaults, "map needs minor-fault mode")
        precondition(pages.lowerBound >= 0 && pages.upperBound <= pageCount, "pages \(pages) outside \(pageCount)")
        var mapped = 0
        var page = pages.lowerBound
        while page < pages.upperBound {
            let start = base + page * pageSize
            var done: Int64 = 0
            let result = ferry_uffd_continue(fd, start, UInt64((pages.upperBound - page) * pageSize), &done)
            let count = max(0, Int(done)) / pageSize
            mapped += count
            page += count
            if result == 0 || result == -EAGAIN { continue }
            if result == -EEXIST {
                _ = ferry_uffd_wake(fd, base + page * pageSize, UInt64(pageSize))
                page += 1
                continue
            }
            if result == -EFAULT {
                if try installZero(page: page) { mapped += 1 }
                page += 1
                continue
            }
            throw SystemError(
                call: "ioctl(UFFDIO_CONTINUE, \(hexAddress(base + page * pageSize)))", errno: Errno(Int32(-result)))
        }
        return mapped
    }

    /// Makes `pages` missing again: a later access faults and waits for them (pages that went
    /// stale on the source). The caller makes sure nothing runs on them meanwhile — the guest
    /// has not been resumed yet. Anonymous memory is unmapped (`MADV_DONTNEED`), shmem punched
    /// out of its file (`MADV_REMOVE`).
    public func drop(_ pages: Range<Int>) throws(SystemError) {
        guard !pages.isEmpty else { return }
        let start = base + pages.lowerBound * pageSize
        let bytes = pages.count * pageSize
        let advice = shared ? MADV_REMOVE : MADV_DONTNEED
        try valueOrErrno("madvise(\(hexAddress(start)), \(bytes), \(shared ? "MADV_REMOVE" : "MADV_DONTNEED"))") {
            madvise(start, bytes, advice)
        }
        state.withLock { state in
            for page in pages where state.present[page] {
                state.present.clear(page)
                state.presentCount -= 1
            }
        }
    }

    /// Unregisters the range and closes the userfaultfd. Refused (`busy`) while pages are
    /// missing unless `discarding` (the guest is being thrown away, its memory with it).
    public func close(discarding: Bool = false) throws(SystemError) {
        let missing = missingCount
        guard missing == 0 || discarding else {
            throw SystemError(
                code: .busy, call: "MissingPages.close", errno: nil,
                detail: "\(missing) pages are still missing: a blocked access would go on with zeros")
        }
        let first = state.withLock { state in
            defer { state.closed = true }
            return !state.closed
        }
        guard first else { return }
        _ = ferry_uffd_unregister(fd, base, UInt64(length))
    }

    private func record(_ pages: Range<Int>) {
        state.withLock { state in
            for page in pages where !state.present[page] {
                state.present.set(page)
                state.presentCount += 1
            }
        }
    }
}
