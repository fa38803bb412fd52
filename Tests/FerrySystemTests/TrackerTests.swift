import CFerryShims
import FerrySystem
import FerryTestSupport
import Foundation
import Testing

/// Serialized: several tests use many pages, and the catch-every-write test wants the CPUs.
@Suite(.serialized, .tags(.slow), .skippable(.slow)) struct TrackerTests {
    static let choices: [TrackerChoice] = [.uffd, .mprotect]

    @Test func uffdProbeRunsAndAutoPicksATracker() throws {
        let reason = DirtyTrackers.uffdUnavailableReason()
        print("uffd tracker: \(reason.map { "unavailable: \($0)" } ?? "available")")
        // On a kernel that has everything (6.7+), "unavailable" is a bug, not a skip.
        var names = utsname()
        uname(&names)
        let release = withUnsafeBytes(of: names.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let version = release.split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
        if version.count == 2, (version[0], version[1]) >= (6, 7) {
            #expect(reason == nil, "kernel \(release) should support the uffd tracker")
        }
        let memory = try TestMemory.make(.anonymous, size: 16 * systemPageSize)
        let (tracker, why) = try DirtyTrackers.make(
            .auto, base: memory.region.base, length: memory.region.size,
            pageSize: systemPageSize)
        print("auto picked: \(why)")
        #expect(tracker.kind == (reason == nil ? .uffd : .mprotect))
        #expect(why.hasPrefix(tracker.kind.rawValue + ":"))
        if let reason { #expect(why.contains(reason)) }
        let (forced, forcedWhy) = try DirtyTrackers.make(
            .mprotect, base: memory.region.base,
            length: memory.region.size, pageSize: systemPageSize)
        #expect(forced.kind == .mprotect)
        #expect(forcedWhy.hasPrefix("mprotect:"))
    }

    @Test func makeRejectsUnalignedRanges() throws {
        let memory = try TestMemory.make(.anonymous, size: 4 * systemPageSize)
        for choice in TrackerChoice.allCases {
            let error = try #require(throws: SystemError.self) {
                _ = try DirtyTrackers.make(choice, base: memory.region.base, length: 100, pageSize: systemPageSize)
            }
            #expect(error.code == .invalidArgument)
            #expect(throws: SystemError.self) {
                _ = try DirtyTrackers.make(
                    choice, base: memory.region.base + 8, length: systemPageSize,
                    pageSize: systemPageSize)
            }
        }
    }

    @Test(arguments: choices, MemoryKind.allCases)
    func idleRegionHarvestsNothingEvenAfterReads(choice: TrackerChoice, kind: MemoryKind) throws {
        let memory = try TestMemory.make(kind, size: 256 * systemPageSize)
        let tracker = try memory.tracker(choice)
        defer { tracker.stop() }
        for page in stride(from: 0, to: memory.pages, by: 2) { memory.write(page: page) }  // half touched
        try tracker.start()
        var sum: UInt64 = 0
        for page in 0..<memory.pages { sum &+= memory.read(page: page) }  // reads are not writes
        #expect(sum == UInt64(memory.pages / 2))
        var bitmap = DirtyBitmap(count: memory.pages)
        #expect(try tracker.harvest(into: &bitmap) == 0)
        #expect(bitmap.isEmpty)
        #expect(try tracker.harvest(into: &bitmap) == 0)
    }

    @Test(arguments: choices, MemoryKind.allCases)
    func aSingleWriteIsReportedExactlyOnce(choice: TrackerChoice, kind: MemoryKind) throws {
        let memory = try TestMemory.make(kind, size: 256 * systemPageSize)
        let tracker = try memory.tracker(choice)
        defer { tracker.stop() }
        memory.write(page: 10)  // touched before start; page 200 never is
        try tracker.start()
        for (page, value) in [(10, UInt64(7)), (200, 9), (255, 11), (0, 13)] {
            memory.write(page: page, value: value, offset: 8)
            var bitmap = DirtyBitmap(count: memory.pages)
            #expect(try tracker.harvest(into: &bitmap) == 1, "page \(page)")
            #expect(setPages(bitmap) == [page])
            var again = DirtyBitmap(count: memory.pages)
            #expect(try tracker.harvest(into: &again) == 0, "page \(page) reported twice")
            #expect(memory.read(page: page, offset: 8) == value)
        }
        // Two writes to one page, then a harvest: one page.
        memory.write(page: 3, value: 1)
        memory.write(page: 3, value: 2, offset: 64)
        var bitmap = DirtyBitmap(count: memory.pages)
        bitmap.set(100)  // harvest ORs into what is there
        #expect(try tracker.harvest(into: &bitmap) == 1)
        #expect(setPages(bitmap) == [3, 100])
    }

    @Test(arguments: choices, MemoryKind.allCases)
    func neverTouchedPagesAreReportedWhenWritten(choice: TrackerChoice, kind: MemoryKind) throws {
        let memory = try TestMemory.make(kind, size: 1024 * systemPageSize)
        let tracker = try memory.tracker(choice)
        defer { tracker.stop() }
        try tracker.start()  // nothing touched: no page tables at all for anonymous memory
        let written = [0, 1, 2, 511, 512, 513, 700, 1023]
        for page in written { memory.write(page: page, value: UInt64(page + 1)) }
        var bitmap = DirtyBitmap(count: memory.pages)
        #expect(try tracker.harvest(into: &bitmap) == written.count)
        #expect(setPages(bitmap) == written)
        // Reads of never-touched pages (zero page / page-cache holes) are not writes either.
        var sum: UInt64 = 0
        for page in 0..<memory.pages { sum &+= memory.read(page: page) }
        #expect(sum == UInt64(written.reduce(0) { $0 + $1 + 1 }))
        var after = DirtyBitmap(count: memory.pages)
        #expect(try tracker.harvest(into: &after) == 0)
        memory.write(page: 900)  // read-faulted above, written now
        #expect(try tracker.harvest(into: &after) == 1)
        #expect(setPages(after) == [900])
    }

    @Test(arguments: choices)
    func stopUnprotectsAndIsIdempotent(choice: TrackerChoice) throws {
        let memory = try TestMemory.make(.tmpfs, size: 64 * systemPageSize)
        let tracker = try memory.tracker(choice)
        try tracker.start()
        #expect(throws: SystemError.self) { try tracker.start() }
        memory.write(page: 1)
        tracker.stop()
        tracker.stop()
        for page in 0..<memory.pages { memory.write(page: page, value: 5) }  // must not fault or crash
        var bitmap = DirtyBitmap(count: memory.pages)
        let error = try #require(throws: SystemError.self) { try tracker.harvest(into: &bitmap) }
        #expect(error.description.contains("not started"))
        // A stopped tracker starts again from a clean slate.
        try tracker.start()
        defer { tracker.stop() }
        #expect(try tracker.harvest(into: &bitmap) == 0)
        memory.write(page: 63)
        #expect(try tracker.harvest(into: &bitmap) == 1)
        #expect(setPages(bitmap) == [63])
    }

    @Test(arguments: choices)
    func trackersOfDifferentRegionsCoexist(choice: TrackerChoice) throws {
        let first = try TestMemory.make(.anonymous, size: 64 * systemPageSize)
        let second = try TestMemory.make(.tmpfs, size: 32 * systemPageSize)
        let firstTracker = try first.tracker(choice)
        let secondTracker = try second.tracker(choice)
        defer {
            firstTracker.stop()
            secondTracker.stop()
        }
        try firstTracker.start()
        try secondTracker.start()
        first.write(page: 5)
        second.write(page: 6)
        second.write(page: 31)
        var a = DirtyBitmap(count: first.pages)
        var b = DirtyBitmap(count: second.pages)
        #expect(try firstTracker.harvest(into: &a) == 1)
        #expect(try secondTracker.harvest(into: &b) == 2)
        #expect(setPages(a) == [5])
        #expect(setPages(b) == [6, 31])
    }
}
