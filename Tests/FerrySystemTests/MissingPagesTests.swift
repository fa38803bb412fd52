import FerrySystem
import Foundation
import Glibc
import Synchronization
import Testing

/// Post-copy's destination memory (`MissingPages`): accesses to missing pages block until a
/// server installs them, whichever path installs a page first wins, the kernel's own accesses
/// fault too, dropped pages fault again, and nothing can close it while pages are missing.
@Suite("missing pages (userfaultfd missing mode, post-copy)")
struct MissingPagesTests {
    /// The byte every page `page` is filled with by the "source" in these tests.
    static func fill(_ page: Int) -> UInt8 { UInt8(truncatingIfNeeded: page &* 37 &+ 11) }

    /// A page of the source's contents for `page`.
    static func sourcePage(_ page: Int) -> [UInt8] { [UInt8](repeating: fill(page), count: systemPageSize) }

    static func register(_ memory: TestMemory, _ kind: MemoryKind) throws -> MissingPages {
        try MissingPages(
            base: memory.region.base, length: memory.region.size, pageSize: systemPageSize,
            shared: kind != .anonymous)
    }

    /// Serves faults on a thread of its own until `stop`: each faulting page is installed with
    /// the source's contents after `delayMicroseconds` (the round trip to a source).
    final class FaultServer: @unchecked Sendable {
        let pages: MissingPages
        let stop = Atomic<Bool>(false)
        let served = Atomic<Int>(0)
        let installedHere = Atomic<Int>(0)
        let done = DispatchSemaphore(value: 0)

        init(_ pages: MissingPages, delayMicroseconds: UInt32 = 0) {
            self.pages = pages
            let thread = Thread { [self] in
                var faults: [Int] = []
                while !stop.load(ordering: .acquiring) {
                    faults.removeAll(keepingCapacity: true)
                    guard (try? pages.waitForFaults(timeoutMs: 20, into: &faults)) != nil else { break }
                    for page in faults {
                        if delayMicroseconds > 0 { usleep(delayMicroseconds) }
                        let bytes = MissingPagesTests.sourcePage(page)
                        let now = bytes.withUnsafeBytes { (try? pages.install(page: page, from: $0.baseAddress!)) }
                        if now == true { installedHere.add(1, ordering: .relaxed) }
                        served.add(1, ordering: .relaxed)
                    }
                }
                done.signal()
            }
            thread.start()
        }

        func finish() {
            stop.store(true, ordering: .releasing)
            done.wait()
        }
    }

    /// Runs `threads` threads that each read one byte of every page in `order(thread)`; returns
    /// the pages whose byte differed from the source's.
    static func readAll(_ memory: TestMemory, threads: Int, order: @escaping @Sendable (Int) -> [Int]) -> [Int] {
        let wrong = Mutex<[Int]>([])
        let group = DispatchGroup()
        let base = UnsafeRawPointer(memory.region.base)
        nonisolated(unsafe) let address = base
        for index in 0..<threads {
            group.enter()
            let thread = Thread {
                for page in order(index)
                where address.load(fromByteOffset: page * systemPageSize + 100, as: UInt8.self) != fill(page) {
                    wrong.withLock { $0.append(page) }
                }
                group.leave()
            }
            thread.start()
        }
        group.wait()
        return wrong.withLock { $0 }
    }

    @Test(
        "threads reading missing pages wait for them and see the source's bytes",
        arguments: [MemoryKind.anonymous, .tmpfs])
    func faultsAreServed(kind: MemoryKind) throws {
        let memory = try TestMemory.make(kind, size: 512 * systemPageSize)
        let pages = try Self.register(memory, kind)
        let server = FaultServer(pages, delayMicroseconds: 50)
        let count = memory.pages
        let wrong = Self.readAll(memory, threads: 4) { thread in
            var generator = SystemRandomNumberGenerator()
            return (0..<count).shuffled(using: &generator).filter { $0 % 4 == thread || $0 % 7 == 0 }
        }
        server.finish()
        #expect(wrong.isEmpty, "pages with other bytes: \(wrong.prefix(10))")
        #expect(pages.missingCount == 0)
        // Every page installed exactly once: two threads faulting on one page get one install.
        #expect(server.installedHere.load(ordering: .relaxed) == count)
        try pages.close()
    }

    /// The background push installs every page in order while faults ask for pages at random:
    /// each page goes in exactly once, by one path or the other, and reads the source's bytes.
    @Test(
        "a background push and the faults' answers race: each page installed once",
        arguments: [MemoryKind.anonymous, .tmpfs])
    func pushRacesFaults(kind: MemoryKind) throws {
        let memory = try TestMemory.make(kind, size: 2048 * systemPageSize)
        let pages = try Self.register(memory, kind)
        let server = FaultServer(pages)
        let count = memory.pages
        let pushed = Atomic<Int>(0)
        let pusher = Thread {
            var run = [UInt8](repeating: 0, count: 16 * systemPageSize)
            for first in stride(from: 0, to: count, by: 16) {
                for page in first..<(first + 16) {
                    _ = run.withUnsafeMutableBytes {
                        memset(
                            $0.baseAddress! + (page - first) * systemPageSize, Int32(Self.fill(page)), systemPageSize)
                    }
                }
                let now = run.withUnsafeBytes {
                    (try? pages.install(pages: first..<(first + 16), from: $0.baseAddress!))
                }
                pushed.add(now ?? 0, ordering: .relaxed)
            }
        }
        pusher.start()
        let wrong = Self.readAll(memory, threads: 3) { _ in
            var generator = SystemRandomNumberGenerator()
            return (0..<count).shuffled(using: &generator)
        }
        while pages.missingCount > 0 { usleep(1000) }
        server.finish()
        #expect(wrong.isEmpty, "pages with other bytes: \(wrong.prefix(10))")
        let byPush = pushed.load(ordering: .relaxed)
        let byFault = server.installedHere.load(ordering: .relaxed)
        #expect(byPush + byFault == count, "push \(byPush) + faults \(byFault) != \(count)")
        print("\(kind): \(count) pages, \(byPush) pushed, \(byFault) fetched by faults")
        try pages.close()
    }

    @Test(
        "pages present before registering never fault; dropped ones fault again; zero pages read zero",
        arguments: [MemoryKind.anonymous, .tmpfs])
    func presentDroppedAndZero(kind: MemoryKind) throws {
        let memory = try TestMemory.make(kind, size: 64 * systemPageSize)
        let base = memory.region.base
        for page in 0..<32 { memset(base + page * systemPageSize, 0x5a, systemPageSize) }  // pre-copied
        let pages = try Self.register(memory, kind)
        pages.markPresent(0..<32)
        #expect(pages.missingCount == 32)
        // Pre-copied pages read without a server.
        #expect(base.load(fromByteOffset: 5 * systemPageSize, as: UInt8.self) == 0x5a)
        // Page 5 went stale on the source: dropped, it faults, and reads the new bytes.
        try pages.drop(5..<6)
        #expect(!pages.isPresent(5) && pages.missingCount == 33)
        for page in 32..<64 { #expect(try pages.installZero(page: page)) }
        #expect(try !pages.installZero(page: 40), "a second install of a present page changes nothing")
        let server = FaultServer(pages)
        #expect(base.load(fromByteOffset: 5 * systemPageSize + 9, as: UInt8.self) == Self.fill(5))
        #expect(base.load(fromByteOffset: 6 * systemPageSize, as: UInt8.self) == 0x5a)
        #expect(base.load(fromByteOffset: 40 * systemPageSize, as: UInt8.self) == 0)
        server.finish()
        #expect(server.served.load(ordering: .relaxed) == 1, "only the dropped page faulted")
        #expect(pages.missingCount == 0)
        try pages.close()
    }

    /// The kernel's own access (here `read(2)` from a pipe into a missing page; KVM reading
    /// guest memory is the same kind) blocks until the page is installed, then completes into it.
    @Test("a read(2) into a missing page waits for the page, then writes into it")
    func kernelAccessFaults() throws {
        let memory = try TestMemory.make(.anonymous, size: 4 * systemPageSize)
        let pages = try Self.register(memory, .anonymous)
        var ends: [Int32] = [0, 0]
        #expect(pipe(&ends) == 0)
        defer { Glibc.close(ends[0]) }
        let message = Array("written by the kernel".utf8)
        #expect(write(ends[1], message, message.count) == message.count)
        Glibc.close(ends[1])
        let target = memory.region.base + 2 * systemPageSize + 16
        nonisolated(unsafe) let destination = target
        let readDone = Atomic<Int>(-1)
        let readEnd = ends[0]
        let reader = Thread { readDone.store(read(readEnd, destination, 64), ordering: .releasing) }
        reader.start()
        var faults: [Int] = []
        _ = try pages.waitForFaults(timeoutMs: 5000, into: &faults)
        #expect(faults.first == 2, "\(faults)")
        usleep(20_000)
        #expect(readDone.load(ordering: .acquiring) == -1, "the read did not wait for the page")
        try Self.sourcePage(2).withUnsafeBytes { _ = try pages.install(page: 2, from: $0.baseAddress!) }
        let deadline = Date().addingTimeInterval(5)
        while readDone.load(ordering: .acquiring) == -1 && Date() < deadline { usleep(1000) }
        #expect(readDone.load(ordering: .acquiring) == message.count)
        #expect(Array(UnsafeRawBufferPointer(start: target, count: message.count)) == message)
        #expect(memory.region.base.load(fromByteOffset: 2 * systemPageSize, as: UInt8.self) == Self.fill(2))
        try pages.close(discarding: true)
    }

    /// Minor-fault mode (post-copy's destination): the file holds every page (old bytes for the
    /// stale ones); the guest's mapping faults on each until it is mapped; a present page is
    /// mapped at once, a lacking one only after its new bytes were written through the other
    /// mapping. No reader ever sees a stale page's old bytes.
    @Test("minor faults: present pages are mapped on demand, lacking ones only once their new bytes are in")
    func minorFaultsNeverShowOldBytes() throws {
        let memory = try TestMemory.make(.tmpfs, size: 256 * systemPageSize)
        let path = try #require(memory.path)
        let writer = try MappedRegion.mapFile(path: path, writable: true)
        let old: UInt8 = 0xEE
        memset(writer.base, Int32(old), writer.size)
        // The guest's mapping had touched some pages before: they must fault again.
        #expect(memory.region.base.load(fromByteOffset: 3 * systemPageSize, as: UInt8.self) == old)
        let pages = try MissingPages(
            base: memory.region.base, length: memory.region.size, pageSize: systemPageSize, shared: true,
            minorFaults: true)
        var lacking = DirtyBitmap(count: memory.pages)
        lacking.set(range: 100..<200)
        pages.markPresent(except: lacking)
        #expect(pages.missingCount == 100)
        nonisolated(unsafe) let alias = writer.base
        let stop = Atomic<Bool>(false)
        let lateWrites = Atomic<Int>(0)
        let server = Thread {
            var faults: [Int] = []
            while !stop.load(ordering: .acquiring) {
                faults.removeAll()
                guard (try? pages.waitForFaults(timeoutMs: 20, into: &faults)) != nil else { return }
                for page in faults {
                    if pages.isPresent(page) {
                        _ = try? pages.map(page..<(page + 1))
                    } else {
                        usleep(200)  // the round trip to the source
                        memset(alias + page * systemPageSize, Int32(Self.fill(page)), systemPageSize)
                        _ = try? pages.publish(page: page)
                        lateWrites.add(1, ordering: .relaxed)
                    }
                }
            }
        }
        server.start()
        let wrong = Self.readAll(memory, threads: 3) { thread in
            (0..<256).filter { $0 % 3 == thread }.shuffled()
        }.filter { !(0..<100).contains($0) && !(200..<256).contains($0) }
        stop.store(true, ordering: .releasing)
        usleep(50_000)
        #expect(wrong.isEmpty, "lacking pages read with other bytes than their new ones: \(wrong.prefix(10))")
        // Present pages read their (old, final) bytes.
        #expect(memory.region.base.load(fromByteOffset: 3 * systemPageSize, as: UInt8.self) == old)
        #expect(lateWrites.load(ordering: .relaxed) == 100 && pages.missingCount == 0)
        try pages.close()
    }

    @Test("close is refused while pages are missing; a file on a disk file system is refused with the fix")
    func refusals() throws {
        let memory = try TestMemory.make(.anonymous, size: 8 * systemPageSize)
        let pages = try Self.register(memory, .anonymous)
        #expect {
            try pages.close()
        } throws: { error in
            "\(error)".contains("8 pages are still missing")
        }
        try pages.close(discarding: true)

        let onDisk = try TestMemory.make(.ext4, size: 8 * systemPageSize)
        #expect {
            _ = try Self.register(onDisk, .ext4)
        } throws: { error in
            (error as? SystemError)?.code == .unsupported && "\(error)".contains("tmpfs")
        }
    }
}
