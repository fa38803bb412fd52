import FerrySystem
import Foundation
import Testing

extension TrackerTests {
    /// 20000 separate written runs: more regions than the uffd tracker's PAGEMAP_SCAN vector
    /// (16K) holds, so the harvest must continue where the kernel stopped, without losing or
    /// repeating pages.
    @Test(arguments: choices)
    func harvestsMoreRunsThanOneScanHolds(choice: TrackerChoice) throws {
        let memory = try TestMemory.make(.anonymous, size: 40_000 * systemPageSize)
        let tracker = try memory.tracker(choice)
        defer { tracker.stop() }
        try tracker.start()
        let written = Array(stride(from: 1, to: memory.pages, by: 2))
        for page in written { memory.write(page: page, value: UInt64(page)) }
        var bitmap = DirtyBitmap(count: memory.pages)
        #expect(try tracker.harvest(into: &bitmap) == written.count)
        #expect(bitmap.popcount() == written.count)
        #expect(setPages(bitmap) == written)
        var again = DirtyBitmap(count: memory.pages)
        #expect(try tracker.harvest(into: &again) == 0)
        memory.write(page: 39_998)
        #expect(try tracker.harvest(into: &again) == 1)
        #expect(setPages(again) == [39_998])
    }

    /// Transparent huge pages (2 MiB, asked for with MADV_HUGEPAGE): a write to one 4 KiB page
    /// must report that page, not the whole huge page.
    @Test(arguments: choices)
    func writesToHugePagesAreReportedPerPage(choice: TrackerChoice) throws {
        let huge = 2 << 20
        let memory = try MappedRegion.anonymous(size: 3 * huge)
        let aligned = UnsafeMutableRawPointer(bitPattern: (Int(bitPattern: memory.base) + huge - 1) / huge * huge)!
        let length = 2 * huge
        #expect(madvise(aligned, length, MADV_HUGEPAGE) == 0)
        memset(aligned, 1, length)
        let rollup = (try? String(contentsOfFile: "/proc/self/smaps_rollup", encoding: .utf8)) ?? ""
        let hugeLine = rollup.split(separator: "\n").first { $0.hasPrefix("AnonHugePages:") } ?? "AnonHugePages: ?"
        print(
            "huge page test (\(choice.rawValue)): process \(hugeLine.split(separator: " ", omittingEmptySubsequences: true).dropFirst().joined(separator: " "))"
        )
        if choice == .uffd, let reason = DirtyTrackers.uffdUnavailableReason() {
            try Test.cancel("userfaultfd tracker unavailable: \(reason)")
        }
        let tracker = try DirtyTrackers.make(choice, base: aligned, length: length, pageSize: systemPageSize).tracker
        defer { tracker.stop() }
        try tracker.start()
        let pages = length / systemPageSize
        for page in [3, 600] { (aligned + page * systemPageSize).storeBytes(of: 7, as: UInt8.self) }
        var bitmap = DirtyBitmap(count: pages)
        #expect(try tracker.harvest(into: &bitmap) == 2)
        #expect(setPages(bitmap) == [3, 600])
        #expect(aligned.load(fromByteOffset: 3 * systemPageSize + 1, as: UInt8.self) == 1)
    }
}

extension TrackerTests {
    /// A written page of an ext4 image that the kernel reclaims before the harvest (written
    /// back, then unmapped: its page-table entry is gone) must still be reported. MADV_PAGEOUT
    /// after msync stands in for memory pressure.
    @Test(arguments: choices)
    func writtenPagesReclaimedBeforeTheHarvestAreReported(choice: TrackerChoice) throws {
        let memory = try TestMemory.make(.ext4, size: 64 * systemPageSize)
        let tracker = try memory.tracker(choice)
        defer { tracker.stop() }
        for page in 0..<memory.pages { memory.write(page: page) }
        try memory.region.sync()
        try tracker.start()
        memory.write(page: 5, value: 77)
        try memory.region.sync()
        let page = memory.region.base + 5 * systemPageSize
        #expect(madvise(page, systemPageSize, MADV_PAGEOUT) == 0)
        var resident: UInt8 = 1
        #expect(mincore(page, systemPageSize, &resident) == 0)
        if resident & 1 != 0 {
            print("reclaim test (\(choice.rawValue)): the kernel kept the page; testing without reclaim")
        }
        var bitmap = DirtyBitmap(count: memory.pages)
        #expect(try tracker.harvest(into: &bitmap) == 1)
        #expect(setPages(bitmap) == [5])
        #expect(memory.read(page: 5) == 77)
        memory.write(page: 5, value: 78)  // and it is tracked again afterwards
        bitmap.clearAll()
        #expect(try tracker.harvest(into: &bitmap) == 1)
        #expect(setPages(bitmap) == [5])
    }
}
