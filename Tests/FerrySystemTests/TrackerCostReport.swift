import FerrySystem
import Foundation
import Testing

extension TrackerTests {
    /// Not a timing assertion: prints what tracking costs here, for the report. 64 MiB on
    /// /dev/shm: the first write to a page after start() (touched and never-touched pages, and
    /// untracked writes for comparison), and one harvest with nothing and with ~10% written.
    @Test(arguments: [TrackerChoice.uffd, .mprotect])
    func reportTrackingCosts(choice: TrackerChoice) throws {
        let size = 64 << 20
        let touched = try TestMemory.make(.tmpfs, size: size)
        let fresh = try TestMemory.make(.tmpfs, size: size)
        let baseline = try TestMemory.make(.tmpfs, size: size)
        let pages = touched.pages
        try touched.region.populate(writable: true)

        func nanosecondsPerPage(_ memory: TestMemory) -> Double {
            let start = MonotonicClock.now()
            for page in 0..<pages { (memory.region.base + page * systemPageSize).storeBytes(of: 1, as: UInt8.self) }
            return Double(MonotonicClock.now() - start) / Double(pages)
        }
        let untrackedFresh = nanosecondsPerPage(baseline)
        let untrackedTouched = nanosecondsPerPage(baseline)

        let touchedTracker = try touched.tracker(choice)
        let freshTracker = try fresh.tracker(choice)
        defer {
            touchedTracker.stop()
            freshTracker.stop()
        }
        try touchedTracker.start()
        try freshTracker.start()
        let trackedTouched = nanosecondsPerPage(touched)
        let trackedFresh = nanosecondsPerPage(fresh)

        var bitmap = DirtyBitmap(count: pages)
        let fullStart = MonotonicClock.now()
        let fullFound = try touchedTracker.harvest(into: &bitmap)
        let fullHarvest = MonotonicClock.now() - fullStart
        #expect(fullFound == pages)

        let cleanStart = MonotonicClock.now()
        bitmap.clearAll()
        let cleanFound = try touchedTracker.harvest(into: &bitmap)
        let cleanHarvest = MonotonicClock.now() - cleanStart
        #expect(cleanFound == 0)

        var random = FastRandom(state: 12345)
        var written = Set<Int>()
        while written.count < pages / 10 { written.insert(random.next(below: pages)) }
        for page in written { touched.write(page: page) }
        bitmap.clearAll()
        let tenthStart = MonotonicClock.now()
        let tenthFound = try touchedTracker.harvest(into: &bitmap)
        let tenthHarvest = MonotonicClock.now() - tenthStart
        #expect(tenthFound == written.count)

        func ms(_ nanoseconds: UInt64) -> String { String(format: "%.3f ms", Double(nanoseconds) / 1e6) }
        func us(_ nanoseconds: Double) -> String { String(format: "%.2f µs", nanoseconds / 1000) }
        print(
            """
            costs \(choice.rawValue) on /dev/shm, 64 MiB (\(pages) pages), debug build:
              first write per page: touched \(us(trackedTouched)) (untracked \(us(untrackedTouched))), \
            never-touched \(us(trackedFresh)) (untracked \(us(untrackedFresh)))
              harvest: all pages \(ms(fullHarvest)), clean \(ms(cleanHarvest)), 10% scattered (\(tenthFound) pages) \(ms(tenthHarvest))
            """)
    }
}
