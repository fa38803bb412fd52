import Glibc
import Synchronization

/// The holes of an open image file, found with `lseek(SEEK_DATA / SEEK_HOLE)`: ranges the file
/// system holds no data for, which read as zeros. On tmpfs a page is data as soon as it has been
/// allocated (written or faulted in through a shared mapping), so a hole is a page nobody has
/// touched: the source can send it as a zero marker without reading it.
///
/// Keeps the file open. `Sendable`: the descriptor is only used with `lseek` at explicit
/// offsets, which is safe from several threads (the file offset it moves is not used).
public final class ImageHoles: Sendable {
    // <unistd.h> defines these only with _GNU_SOURCE, which Glibc's Swift module does not see.
    private static let seekData: Int32 = 3
    private static let seekHole: Int32 = 4

    public let path: String
    public let pageSize: Int
    private let fd: Int32
    /// The last data run `SEEK_HOLE` measured, in bytes. `SEEK_HOLE` walks the file's pages up to
    /// the next hole, so on a file with long data runs asking again from inside a known run would
    /// walk it again (on a fully allocated 2 GiB file, to the end each time). Data never turns
    /// back into a hole here (nothing punches holes into a running guest's image), so a known
    /// run stays valid.
    private let knownData = Mutex<Range<Int>>(0..<0)
    /// Set by `populate`: the large holes it left, in page order. Every other page was faulted in
    /// through a shared mapping, so it is data from then on, and later searches look only inside
    /// these ranges, with `SEEK_DATA`. Without it, the first search of round 0 on a fully
    /// allocated image has `SEEK_HOLE` walk the whole file page by page (~40 ms per 2 GiB on
    /// tmpfs), under the lock the other streams wait on for their first chunk's protection.
    private let populatedHoles = Mutex<[Range<Int>]?>(nil)
    /// `lseek` calls so far (for tests).
    let seekCalls = Atomic<Int>(0)

    public init(path: String, pageSize: Int) throws {
        self.path = path
        self.pageSize = pageSize
        fd = try valueOrErrno("open(\"\(path)\", O_RDONLY)") { open(path, O_RDONLY | O_CLOEXEC) }
    }

    deinit { close(fd) }

    /// Calls `body` with each run of whole pages inside `pages` that lies in a hole, in order.
    public func forEachHole(in pages: Range<Int>, _ body: (Range<Int>) -> Void) throws {
        try forEachLargeHole(in: pages, minimumPages: 1, maxCalls: .max, body)
    }

    /// Like `forEachHole`, for callers that only care about big holes: reports runs of at least
    /// `minimumPages`, and stops after `maxCalls` `lseek` calls (a file whose zero pages are
    /// scattered one by one would otherwise cost two system calls per page to skip a 4 KiB
    /// read). Pages it does not report may be holes or data.
    public func forEachLargeHole(
        in pages: Range<Int>, minimumPages: Int, maxCalls: Int,
        _ body: (Range<Int>) -> Void
    ) throws {
        if let known = populatedHoles.withLock({ $0 }) {
            try forEachLargeHole(in: pages, within: known, minimumPages: minimumPages, maxCalls: maxCalls, body)
            return
        }
        let end = pages.upperBound * pageSize
        var offset = pages.lowerBound * pageSize
        var calls = 0
        while offset < end && calls + 2 <= maxCalls {
            calls += 2
            let dataStart = min(try seek(offset, Self.seekData) ?? end, end)  // nil: no data past offset
            // A hole from offset to dataStart: the whole pages inside it.
            let first = (offset + pageSize - 1) / pageSize
            let last = dataStart / pageSize
            if last - first >= minimumPages { body(first..<last) }
            guard dataStart < end else { return }
            offset = min(try dataRunEnd(from: dataStart), end)
        }
    }

    /// `forEachLargeHole` once `populate` has made every page outside `known` data: only the
    /// parts of `known` inside `pages` can still be holes. `SEEK_DATA` from a hole page finds the
    /// next page the guest has written since (or the end of that hole) without walking data.
    private func forEachLargeHole(
        in pages: Range<Int>, within known: [Range<Int>], minimumPages: Int,
        maxCalls: Int, _ body: (Range<Int>) -> Void
    ) throws {
        // The first known hole that ends after pages.lowerBound.
        var low = 0
        var high = known.count
        while low < high {
            let middle = (low + high) / 2
            if known[middle].upperBound <= pages.lowerBound { low = middle + 1 } else { high = middle }
        }
        var calls = 0
        var index = low
        while index < known.count && known[index].lowerBound < pages.upperBound {
            let end = min(known[index].upperBound, pages.upperBound)
            var page = max(known[index].lowerBound, pages.lowerBound)
            while page < end {
                guard calls < maxCalls else { return }
                calls += 1
                let data = min((try seek(page * pageSize, Self.seekData)).map { $0 / pageSize } ?? end, end)
                if data - page >= minimumPages { body(page..<data) }
                page = data + 1
            }
            index += 1
        }
    }

    /// Holes a source skips: runs of at least this many pages ...
    public static let largeHolePages = 16
    /// ... found with at most this many `lseek` calls per chunk.
    public static let callsPerChunk = 64

    /// Faults in (`MADV_POPULATE_READ`) the pages of `region`, a shared mapping of this file,
    /// except the large holes a source skips in round 0 (the same search: `largeHolePages`,
    /// `callsPerChunk` per chunk of `chunkPages`), which stay holes: faulting them in through a
    /// shared mapping of tmpfs would allocate zero pages. Small holes are faulted in, so reading
    /// them later costs no allocation. Returns the pages left out.
    @discardableResult
    public func populate(_ region: borrowing MappedRegion, skippingLargeHolesIn chunkPages: Int) throws -> Int {
        let pages = region.size / pageSize
        var skipped = 0
        var left: [Range<Int>] = []
        var chunk = 0
        while chunk < pages {
            let end = min(pages, chunk + chunkPages)
            var holes: [Range<Int>] = []
            try forEachLargeHole(in: chunk..<end, minimumPages: Self.largeHolePages, maxCalls: Self.callsPerChunk) {
                holes.append($0)
            }
            var cursor = chunk
            for hole in holes + [end..<end] {
                if hole.lowerBound > cursor {
                    try region.populate(cursor * pageSize..<hole.lowerBound * pageSize, writable: false)
                }
                skipped += hole.count
                cursor = hole.upperBound
                guard !hole.isEmpty else { continue }
                // A hole that runs on into the next chunk is one range (searches see it whole).
                if let last = left.last, last.upperBound == hole.lowerBound {
                    left[left.count - 1] = last.lowerBound..<hole.upperBound
                } else {
                    left.append(hole)
                }
            }
            chunk = end
        }
        // Only when the mapping covers the whole file: then no page outside `left` is a hole.
        var status = stat()
        if (try? valueOrErrno("fstat(\"\(path)\")") { fstat(fd, &status) }) != nil && Int(status.st_size) == region.size
        {
            populatedHoles.withLock { $0 = left }
        }
        return skipped
    }

    /// Where the data run containing byte `offset` ends (the next hole, or the file size).
    private func dataRunEnd(from offset: Int) throws -> Int {
        let known = knownData.withLock { $0 }
        if known.contains(offset) { return known.upperBound }
        let end = try seek(offset, Self.seekHole) ?? Int.max
        knownData.withLock { $0 = offset..<end }
        return end
    }

    /// `lseek`; nil when there is no data (or hole) at or after `offset` (ENXIO).
    private func seek(_ offset: Int, _ whence: Int32) throws -> Int? {
        seekCalls.add(1, ordering: .relaxed)
        do throws(SystemError) {
            return Int(
                try valueOrErrno(
                    "lseek(\"\(path)\", \(offset), \(whence == Self.seekData ? "SEEK_DATA" : "SEEK_HOLE"))"
                ) {
                    lseek(fd, off_t(offset), whence)
                })
        } catch {
            guard error.errno == .noSuchDeviceOrAddress else { throw error }
            return nil
        }
    }
}
