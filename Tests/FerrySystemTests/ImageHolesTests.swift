import Foundation
import Glibc
import Testing

@testable import FerrySystem

@Suite struct ImageHolesTests {
    let pageSize = systemPageSize

    /// A sparse 64-page file with data in pages 3, 10–12 and 63 (page 20 half data).
    func makeImage() throws -> String {
        let path = "/dev/shm/ferry-holes-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).img"
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
