import FerryTestSupport
import Foundation
import Glibc
import Testing

@testable import FerrySystem

@Suite struct ImageHolesTests {
    let pageSize = systemPageSize

    /// A sparse 64-page file with data in pages 3, 10–12 and 63 (page 20 half data).
    func makeImage() throws -> String {
        let path = ScratchFile("holes.img").path
        try ImageFile.create(path: path, size: 64 * pageSize, overwrite: true)
        let handle = try #require(FileHandle(forWritingAtPath: path))
        defer { try? handle.close() }
        for page in [3, 10, 11, 12, 63] {
            try handle.seek(toOffset: UInt64(page * pageSize))
            try handle.write(contentsOf: Data(repeating: 0x5A, count: pageSize))
        }
        try handle.seek(toOffset: UInt64(20 * pageSize + pageSize / 2))
        try handle.write(contentsOf: Data([1]))
        return path
    }

    @Test func holesOfASparseFile() throws {
        let path = try makeImage()
        defer { try? ImageFile.remove(path: path) }
        let holes = try ImageHoles(path: path, pageSize: pageSize)
        var holeRanges: [Range<Int>] = []
        try holes.forEachHole(in: 0..<64) { holeRanges.append($0) }
        #expect(holeRanges == [0..<3, 4..<10, 13..<20, 21..<63])
        // A window in the middle of the file.
        holeRanges = []
        try holes.forEachHole(in: 11..<30) { holeRanges.append($0) }
        #expect(holeRanges == [13..<20, 21..<30])
    }

    /// Faulting in the image leaves its large holes holes (and faults in small ones); faulting
    /// in a hole (or writing it) makes it data.
    @Test func populatingKeepsTheLargeHoles() throws {
        let path = try makeImage()
        defer { try? ImageFile.remove(path: path) }
        let region = try MappedRegion.mapFile(path: path, writable: true)
        let holes = try ImageHoles(path: path, pageSize: pageSize)
        // Holes 0..<3, 4..<10 and 13..<20 are small (< 16 pages); 21..<63 is large.
        #expect(try holes.populate(region, skippingLargeHolesIn: 64) == 42)
        var left: [Range<Int>] = []
        try holes.forEachHole(in: 0..<64) { left.append($0) }
        #expect(left == [21..<63])
        (region.base + 40 * pageSize).storeBytes(of: 1, as: UInt8.self)
        var after: [Range<Int>] = []
        try holes.forEachHole(in: 36..<44) { after.append($0) }
        #expect(after == [36..<40, 41..<44])
    }
}

extension ImageHolesTests {
    @Test func largeHolesOnlyAndABoundedNumberOfCalls() throws {
        let path = try makeImage()
        defer { try? ImageFile.remove(path: path) }
        let holes = try ImageHoles(path: path, pageSize: pageSize)
        var found: [Range<Int>] = []
        try holes.forEachLargeHole(in: 0..<64, minimumPages: 7, maxCalls: 100) { found.append($0) }
        #expect(found == [13..<20, 21..<63])
        found = []
        try holes.forEachLargeHole(in: 0..<64, minimumPages: 1, maxCalls: 4) { found.append($0) }
        #expect(found == [0..<3, 4..<10], "two lseek pairs reach the second hole only")
    }
}

extension ImageHolesTests {
    /// After `populate`, searches look only inside the holes it left (no `SEEK_HOLE` walk through
    /// the data): they must find exactly what a fresh search of the file finds, also after the
    /// guest has written into some of those holes and for windows that cut holes in two.
    @Test func searchesAfterPopulatingAgreeWithAFreshSearch() throws {
        let pages = 4096
        let path = ScratchFile("holes.img").path
        try ImageFile.create(path: path, size: pages * pageSize, overwrite: true)
        defer { try? ImageFile.remove(path: path) }
        // Data runs and holes of random lengths (1–40 pages each), from a fixed seed.
        var state: UInt64 = 0x5EED
        func next(_ bound: Int) -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((state >> 33) % UInt64(bound))
        }
        do {
            let handle = try #require(FileHandle(forWritingAtPath: path))
            defer { try? handle.close() }
            var page = 0
            while page < pages {
                let run = min(pages - page, 1 + next(40))
                if next(2) == 0 {
                    try handle.seek(toOffset: UInt64(page * pageSize))
                    try handle.write(contentsOf: Data(repeating: 0x77, count: run * pageSize))
                }
                page += run + 1 + next(40)  // then a hole
            }
        }
        let region = try MappedRegion.mapFile(path: path, writable: true)
        let populated = try ImageHoles(path: path, pageSize: pageSize)
        let left = try populated.populate(region, skippingLargeHolesIn: 512)
        #expect(left > 0)
        // The guest writes into some of the large holes.
        try populated.forEachHole(in: 0..<pages) { hole in
            if hole.count > 20 {
                (region.base + (hole.lowerBound + hole.count / 2) * pageSize).storeBytes(of: 1, as: UInt8.self)
            }
        }
        let fresh = try ImageHoles(path: path, pageSize: pageSize)
        for window in [0..<pages, 100..<1000, 777..<778, 1000..<3999] {
            for minimum in [1, 16] {
                var a: [Range<Int>] = []
                var b: [Range<Int>] = []
                try populated.forEachLargeHole(in: window, minimumPages: minimum, maxCalls: .max) { a.append($0) }
                try fresh.forEachLargeHole(in: window, minimumPages: minimum, maxCalls: .max) { b.append($0) }
                #expect(a == b, "window \(window), at least \(minimum) pages")
            }
        }
        // Where populating left no hole the populated search asks the file nothing; a fresh one
        // has to (SEEK_DATA, then SEEK_HOLE walking the data run).
        // (A page whose neighbours are data too: the guest's writes above are single pages inside holes.)
        let data = try #require(
            (1..<pages - 1).first { page in (page - 1...page + 1).allSatisfy { (try? fresh.isData($0)) == true } })
        let quiet = populated.seekCalls.load(ordering: .relaxed)
        let asked = fresh.seekCalls.load(ordering: .relaxed)
        try populated.forEachLargeHole(in: data..<data + 1, minimumPages: 1, maxCalls: .max) { _ in }
        try fresh.forEachLargeHole(in: data..<data + 1, minimumPages: 1, maxCalls: .max) { _ in }
        #expect(populated.seekCalls.load(ordering: .relaxed) == quiet)
        #expect(fresh.seekCalls.load(ordering: .relaxed) > asked)
        // The call bound holds on this path too: one SEEK_DATA per hole found.
        var found: [Range<Int>] = []
        try populated.forEachLargeHole(in: 0..<pages, minimumPages: 1, maxCalls: 3) { found.append($0) }
        var all: [Range<Int>] = []
        try populated.forEachHole(in: 0..<pages) { all.append($0) }
        #expect(all.count > 3 && found == Array(all.prefix(found.count)) && found.count <= 3)
    }
}

extension ImageHoles {
    /// Whether `page` holds data now (one SEEK_DATA of its own).
    func isData(_ page: Int) throws -> Bool {
        var first: Range<Int>?
        try forEachHole(in: page..<page + 1) { first = $0 }
        return first == nil
    }
}
