import FerrySystem
import Foundation
import Synchronization
import Testing

/// State shared by the writer threads and the harvester of the catch-every-write test.
final class WriteRace: @unchecked Sendable {
    // @unchecked Sendable: `base` is an address only written through; the counters are atomics.
    let base: UnsafeMutableRawPointer
    let pages: Int
    /// Harvests completed so far; harvest k (0-based) is counted after it returns.
    let harvests = Atomic<Int>(0)
    let stop = Atomic<Bool>(false)

    init(base: UnsafeMutableRawPointer, pages: Int) {
        self.base = base
        self.pages = pages
    }
}

/// What one writer thread did: for each page, the largest harvest count it read before a write
/// to that page (-1 = never written). Owned by its thread until `done` is signalled.
final class WriterLog: @unchecked Sendable {
    let latestHarvestBeforeWrite: UnsafeMutableBufferPointer<Int32>
    var writes = 0
    var freshPagesWritten = 0
    let done = DispatchSemaphore(value: 0)

    init(pages: Int) {
        latestHarvestBeforeWrite = .allocate(capacity: pages)
        latestHarvestBeforeWrite.initialize(repeating: -1)
    }

    deinit { latestHarvestBeforeWrite.deallocate() }
}

extension TrackerTests {
    /// Two writers store to random pages while a harvester harvests every ~2 ms. Each writer reads
    /// the harvest count r before each write to page p; a write after harvest r-1 returned must be
    /// reported by harvest r or later. Since a page's latest report covers all its earlier
    /// writes, it suffices that for each page the last harvest reporting it is >= the largest r
    /// any writer recorded for it.
    ///
    /// Pages [0, half) are touched before start(); the other half is never touched and each
    /// writer takes a new page from its share every ~100 µs, so first writes to never-touched
    /// pages keep happening during the whole run, racing harvests.
    @Test(arguments: choices, MemoryKind.allCases)
    func catchesEveryWrite(choice: TrackerChoice, kind: MemoryKind) throws {
        let memory = try TestMemory.make(kind, size: 64 << 20)
        let tracker = try memory.tracker(choice)
        defer { tracker.stop() }
        let pages = memory.pages
        let half = pages / 2
        for page in 0..<half { memory.write(page: page, value: UInt64(page)) }
        try tracker.start()

        let race = WriteRace(base: memory.region.base, pages: pages)
        let writers = 2
        let freshShare = (pages - half) / writers
        let logs = (0..<writers).map { _ in WriterLog(pages: pages) }
        for (index, log) in logs.enumerated() {
            let fresh = (half + index * freshShare)..<(half + (index + 1) * freshShare)
            let thread = Thread {
                Self.write(race: race, log: log, fresh: fresh, seed: UInt64(index + 1) * 0x9E37_79B9)
            }
            thread.start()
        }

        var lastReported = [Int](repeating: -1, count: pages)
        var reportedTotal = 0
        func harvestOnce() throws {
            let index = race.harvests.load(ordering: .acquiring)
            var bitmap = DirtyBitmap(count: pages)
            reportedTotal += try tracker.harvest(into: &bitmap)
            bitmap.forEachSetBit { lastReported[$0] = index }
            race.harvests.add(1, ordering: .releasing)
        }
        let deadline = MonotonicClock.now() + 400_000_000
        while MonotonicClock.now() < deadline {
            usleep(2000)
            try harvestOnce()
        }
        race.stop.store(true, ordering: .releasing)
        for log in logs { log.done.wait() }
        try harvestOnce()  // the final harvest, after the writers stopped

        var missed: [(page: Int, harvest: Int32, lastReported: Int)] = []
        for log in logs {
            for page in 0..<pages where log.latestHarvestBeforeWrite[page] > lastReported[page] {
                missed.append((page, log.latestHarvestBeforeWrite[page], lastReported[page]))
            }
        }
        let writes = logs.reduce(0) { $0 + $1.writes }
        let fresh = logs.reduce(0) { $0 + $1.freshPagesWritten }
        let harvests = race.harvests.load(ordering: .relaxed)
        print(
            "catchesEveryWrite \(choice.rawValue)/\(kind.rawValue): \(writes) writes (\(fresh) first writes to never-touched pages), "
                + "\(harvests) harvests, \(reportedTotal) pages reported, \(missed.count) pages missed")
        #expect(
            missed.count == 0,
            "writes not reported by a later harvest (page, r, last harvest reporting it): \(missed.prefix(10))")
        #expect(harvests >= 5)
        // About 16k writes race the harvests when the machine is idle, 9k under load.
        #expect(writes >= 2_000, "too few writes raced the harvests to test anything")
        #expect(fresh >= 200)
        // No page is reported that nobody wrote.
        let everWritten = Set((0..<pages).filter { page in logs.contains { $0.latestHarvestBeforeWrite[page] >= 0 } })
        #expect((0..<pages).allSatisfy { lastReported[$0] < 0 || everWritten.contains($0) })
    }

    /// The writer loop: one 8-byte store per iteration, the harvest count read before it.
    static func write(race: WriteRace, log: WriterLog, fresh: Range<Int>, seed: UInt64) {
        var random = FastRandom(state: seed)
        var nextFresh = fresh.lowerBound
        var nextFreshTime = MonotonicClock.now()
        let touched = fresh.lowerBound > 0 ? min(fresh.lowerBound, race.pages / 2) : race.pages / 2
        var iteration = 0
        while !race.stop.load(ordering: .relaxed) {
            iteration += 1
            let page: Int
            if nextFresh < fresh.upperBound, MonotonicClock.now() >= nextFreshTime {
                page = nextFresh
                nextFresh += 1
                nextFreshTime += 100_000
                log.freshPagesWritten += 1
            } else if nextFresh > fresh.lowerBound, random.next(below: 4) == 0 {
                page = fresh.lowerBound + random.next(below: nextFresh - fresh.lowerBound)  // rewrite a fresh page
            } else {
                page = random.next(below: touched)
            }
            let harvestsBefore = race.harvests.load(ordering: .acquiring)
            let offset = random.next(below: systemPageSize / 8) * 8
            (race.base + page * systemPageSize + offset).storeBytes(of: UInt64(iteration), as: UInt64.self)
            log.latestHarvestBeforeWrite[page] = Int32(harvestsBefore)
            log.writes += 1
        }
        log.done.signal()
    }
}
