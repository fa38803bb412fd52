import CFerryShims
import FerrySystem
import Foundation
import Synchronization
import Testing

/// State shared by writers, protectors and the harvester of the deferred-protection race.
final class ProtectionRace: @unchecked Sendable {
    // @unchecked Sendable: `base` is an address only written through; everything else is atomics
    // or immutable.
    let base: UnsafeMutableRawPointer
    let pages: Int
    static let pagesPerBlock = 512
    let blocks: Int
    /// Bit b: set (releasing) once `protect(pages:)` of block b returned. At most 64 blocks.
    private let protectedBlocks = Atomic<UInt64>(0)
    let harvests = Atomic<Int>(0)
    let stop = Atomic<Bool>(false)

    init(base: UnsafeMutableRawPointer, pages: Int) {
        self.base = base
        self.pages = pages
        blocks = (pages + Self.pagesPerBlock - 1) / Self.pagesPerBlock
        precondition(blocks <= 64, "ProtectionRace tracks at most 64 blocks")
    }

    func markProtected(block: Int) {
        protectedBlocks.bitwiseOr(1 << UInt64(block), ordering: .releasing)
    }

    func isProtected(page: Int) -> Bool {
        protectedBlocks.load(ordering: .acquiring) & (1 << UInt64(page / Self.pagesPerBlock)) != 0
    }

    var allProtected: Bool { protectedBlocks.load(ordering: .acquiring).nonzeroBitCount == blocks }

    func pages(ofBlock block: Int) -> Range<Int> {
        (block * Self.pagesPerBlock)..<min((block + 1) * Self.pagesPerBlock, pages)
    }
}

extension TrackerTests {
    /// Deferred start, then two "stream" threads protect the region block by block (blocks
    /// striped over them, ~1 ms apart, like round 0), while two writers store to random pages.
    /// Every write that a writer made after it saw its block's protection return, and after
    /// harvest r-1 returned, must be reported by harvest r or later. With
    /// `harvestWhileProtecting`, harvests also run during the protection (exercising the
    /// harvest of a partly protected region); otherwise the first one comes when all blocks
    /// are protected, as in a migration.
    @Test(arguments: choices, [false, true])
    func deferredProtectionCatchesEveryWriteAfterProtection(choice: TrackerChoice, harvestWhileProtecting: Bool) throws
    {
        for kind in [MemoryKind.anonymous, .tmpfs] {
            let memory = try TestMemory.make(kind, size: 32 << 20)
            let tracker = try memory.tracker(choice)
            defer { tracker.stop() }
            let pages = memory.pages
            for page in 0..<(pages / 2) { memory.write(page: page, value: UInt64(page)) }  // half populated
            try tracker.startDeferred()

            let race = ProtectionRace(base: memory.region.base, pages: pages)
            let logs = (0..<2).map { _ in WriterLog(pages: pages) }
            for (index, log) in logs.enumerated() {
                Thread { Self.writeAfterProtection(race: race, log: log, seed: UInt64(index + 1) * 0x9E37_79B9) }
                    .start()
            }
            let protectors = 2
            let protectorsDone = (0..<protectors).map { _ in DispatchSemaphore(value: 0) }
            let failures = Mutex<[String]>([])
            for stream in 0..<protectors {
                Thread {
                    var block = stream
                    while block < race.blocks {
                        do {
                            try tracker.protect(pages: race.pages(ofBlock: block))
                        } catch {
                            failures.withLock { $0.append("protect block \(block): \(error)") }
                        }
                        race.markProtected(block: block)
                        usleep(1000)
                        block += protectors
                    }
                    protectorsDone[stream].signal()
                }.start()
            }

            var lastReported = [Int](repeating: -1, count: pages)
            func harvestOnce() throws {
                let index = race.harvests.load(ordering: .acquiring)
                var bitmap = DirtyBitmap(count: pages)
                try tracker.harvest(into: &bitmap)
                bitmap.forEachSetBit { lastReported[$0] = index }
                race.harvests.add(1, ordering: .releasing)
            }
            if harvestWhileProtecting {
                while !race.allProtected {
                    usleep(3000)
                    try harvestOnce()
                }
            }
            for done in protectorsDone { done.wait() }
            let deadline = MonotonicClock.now() + 150_000_000
            while MonotonicClock.now() < deadline {
                usleep(2000)
                try harvestOnce()
            }
            race.stop.store(true, ordering: .releasing)
            for log in logs { log.done.wait() }
            try harvestOnce()

            var missed: [(page: Int, harvest: Int32, lastReported: Int)] = []
            for log in logs {
                for page in 0..<pages where log.latestHarvestBeforeWrite[page] > lastReported[page] {
                    missed.append((page, log.latestHarvestBeforeWrite[page], lastReported[page]))
                }
            }
            let writes = logs.reduce(0) { $0 + $1.writes }
            let tracked = logs.reduce(0) { $0 + $1.freshPagesWritten }
            print(
                "deferredProtection \(choice.rawValue)/\(kind.rawValue) harvestWhileProtecting=\(harvestWhileProtecting): "
                    + "\(writes) writes, \(tracked) after their block's protection, \(race.harvests.load(ordering: .relaxed)) harvests, "
                    + "\(missed.count) pages missed")
            #expect(failures.withLock { $0 }.isEmpty, "\(failures.withLock { $0 })")
            #expect(
                missed.isEmpty,
                "\(kind): writes after protection not reported by a later harvest (page, r, last harvest reporting it): \(missed.prefix(10))"
            )
            #expect(tracked >= 1_000)
            #expect(writes > tracked, "some writes should come before their block's protection")
        }
    }

    /// The writer loop: stores to random pages; a store made after its block's protection was
    /// seen is logged with the harvest count read before it (`freshPagesWritten` counts them).
    static func writeAfterProtection(race: ProtectionRace, log: WriterLog, seed: UInt64) {
        var random = FastRandom(state: seed)
        var iteration = 0
        while !race.stop.load(ordering: .relaxed) {
            iteration += 1
            let page = random.next(below: race.pages)
            let isProtected = race.isProtected(page: page)
            let harvestsBefore = race.harvests.load(ordering: .acquiring)
            let offset = random.next(below: systemPageSize / 8) * 8
            (race.base + page * systemPageSize + offset).storeBytes(of: UInt64(iteration), as: UInt64.self)
            if isProtected {
                log.latestHarvestBeforeWrite[page] = max(log.latestHarvestBeforeWrite[page], Int32(harvestsBefore))
                log.freshPagesWritten += 1
            }
            log.writes += 1
            if iteration & 255 == 0 { sched_yield() }  // leave the CPUs to the protectors now and then
        }
        log.done.signal()
    }

    /// The rules, one write at a time: a write before a page's protection is not recorded, one
    /// after it is; protecting a page again does not forget a write; once everything is
    /// protected an idle region harvests nothing.
    @Test(arguments: choices, [MemoryKind.anonymous, .tmpfs])
    func deferredProtectionRecordsOnlyProtectedPages(choice: TrackerChoice, kind: MemoryKind) throws {
        let memory = try TestMemory.make(kind, size: 2048 * systemPageSize)
        let tracker = try memory.tracker(choice)
        defer { tracker.stop() }
        let empty = try #require(throws: SystemError.self) { try tracker.protect(pages: 0..<512) }
        #expect(empty.description.contains("not started"))
        memory.write(page: 10)
        try tracker.startDeferred()
        memory.write(page: 20)  // before its protection: not recorded
        try tracker.protect(pages: 0..<512)
        memory.write(page: 30)  // after: recorded
        memory.write(page: 600)  // block 1, not protected yet
        try tracker.protect(pages: 0..<512)  // again: must not forget the write to page 30
        try tracker.protect(pages: 512..<2048)
        memory.write(page: 2047)
        var bitmap = DirtyBitmap(count: memory.pages)
        #expect(try tracker.harvest(into: &bitmap) == 2)
        #expect(setPages(bitmap) == [30, 2047])
        var idle = DirtyBitmap(count: memory.pages)
        #expect(try tracker.harvest(into: &idle) == 0)
        try tracker.protect(pages: 0..<2048)  // everything is protected already: a no-op
        memory.write(page: 1000)
        #expect(try tracker.harvest(into: &idle) == 1)
        #expect(setPages(idle) == [1000])
    }

    /// A harvest before every page was protected protects the rest and reports all of it (their
    /// writes were not recorded), plus what was written in the protected part.
    @Test(arguments: choices, [MemoryKind.anonymous, .tmpfs])
    func harvestOfAPartlyProtectedRegionReportsTheUnprotectedPages(choice: TrackerChoice, kind: MemoryKind) throws {
        let memory = try TestMemory.make(kind, size: 2048 * systemPageSize)
        let tracker = try memory.tracker(choice)
        defer { tracker.stop() }
        try tracker.startDeferred()
        try tracker.protect(pages: 512..<1024)
        try tracker.protect(pages: 1536..<1600)
        memory.write(page: 700)
        memory.write(page: 5)
        var bitmap = DirtyBitmap(count: memory.pages)
        let expected = Array(0..<512) + [700] + Array(1024..<1536) + Array(1600..<2048)
        #expect(try tracker.harvest(into: &bitmap) == expected.count)
        #expect(setPages(bitmap) == expected)
        // From now on everything is protected: only new writes are reported.
        memory.write(page: 5)
        memory.write(page: 1599)
        var next = DirtyBitmap(count: memory.pages)
        #expect(try tracker.harvest(into: &next) == 2)
        #expect(setPages(next) == [5, 1599])
        try tracker.protect(pages: 0..<2048)  // a no-op now
        var idle = DirtyBitmap(count: memory.pages)
        #expect(try tracker.harvest(into: &idle) == 0)
    }
}

extension TrackerTests {
    /// Deferred start, then one-page protections of every other page until the kernel refuses
    /// another mapping (vm.max_map_count): `ferry_wp_protect` must not fail but raise the
    /// overflow flag, so that the first harvest reports every page (the refused page stays
    /// writable, and the child writes it, unrecorded) and protects the whole range, after which
    /// tracking goes on page by page. In a forked child: at the mapping limit any other mmap
    /// would fail.
    @Test(
        .enabled(
            if: maxMapCount <= (65536 * 2 + 2048) / 2,  // each protected island adds about two mappings
            "vm.max_map_count is \(maxMapCount), \((65536 * 2 + 2048) / 2) islands cannot reach it"))
    func deferredProtectionAtTheMappingLimitLosesNoWrite() throws {
        let pages = 65536 * 2 + 2048
        var report = ferry_wp_overflow_report()
        let status = ferry_wp_test_deferred_overflow_in_child(pages, &report)
        print(
            "deferred overflow: \(report.overflows) overflow(s), mappings \(report.maps_before_harvest) at the limit, "
                + "\(report.maps_after_harvest) after the harvest; first harvest \(report.first_found) pages")
        try #require(status >= 0, "fork failed: errno \(-status)")
        #expect(
            status & 0x7F == 0 && (status >> 8) & 0xFF == 0,
            "child failed at step \((status >> 8) & 0xFF), status \(status)")
        #expect(report.overflows == 1, "the mapping limit was never hit")
        #expect(report.first_found == UInt64(pages))
        #expect(report.first_all_set == 1)
        // The other mappings of the process (other tests run in parallel) are a few thousand;
        // the islands were tens of thousands.
        #expect(
            report.maps_after_harvest < report.maps_before_harvest / 4,
            "protecting the whole range should merge the mappings (\(report.maps_before_harvest) → \(report.maps_after_harvest))"
        )
        #expect(report.second_found == 1)
        #expect(report.second_only_that_page == 1)
        #expect(report.data_intact == 1)
    }
}
