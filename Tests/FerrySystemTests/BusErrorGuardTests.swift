import FerrySystem
import FerryTestSupport
import Foundation
import Testing

@Suite struct BusErrorGuardTests {
    /// The file under a shared mapping is cut in half: writes and reads beyond the new end find
    /// zero pages instead of killing the process, and the guard says where the first one was.
    @Test func truncatedFileUnderAMappingDoesNotKill() throws {
        let path = ScratchFile("cut.img", in: "/dev/shm").path
        defer { try? ImageFile.remove(path: path) }
        let pageSize = systemPageSize
        try ImageFile.create(path: path, size: 64 * pageSize, overwrite: false)
        let region = try MappedRegion.mapFile(path: path, writable: true)
        let guarded = try BusErrorGuard(base: region.base, length: region.size, pageSize: pageSize)
        region.base.storeBytes(of: 0xAB, toByteOffset: 40 * pageSize, as: UInt8.self)
        #expect(guarded.replaced == nil)
        #expect(truncate(path, off_t(32 * pageSize)) == 0)
        region.base.storeBytes(of: 0xCD, toByteOffset: 50 * pageSize + 7, as: UInt8.self)  // beyond the end
        #expect(region.base.load(fromByteOffset: 40 * pageSize, as: UInt8.self) == 0)  // its data went with the file
        #expect(region.base.load(fromByteOffset: 50 * pageSize + 7, as: UInt8.self) == 0xCD)
        region.base.storeBytes(of: 0x01, toByteOffset: 10 * pageSize, as: UInt8.self)  // within: still the file
        let replaced = try #require(guarded.replaced)
        #expect(replaced.pages == 2)
        #expect(replaced.firstOffset == 40 * pageSize)
        #expect(try Data(contentsOf: URL(fileURLWithPath: path))[10 * pageSize] == 0x01)
    }

    /// Space is reserved at creation: the file's blocks are allocated. (The refusal of an image
    /// that does not fit is tested on a small tmpfs of its own, in FaultMatrixTests.otherFaults:
    /// asking the shared /dev/shm for more than it has would first take all of its memory.)
    @Test func reservedImageHoldsItsSpace() throws {
        let path = ScratchFile("reserved.img", in: "/dev/shm").path
        defer { try? ImageFile.remove(path: path) }
        try ImageFile.create(path: path, size: 8 << 20, overwrite: false, reserve: true)
        var info = stat()
        #expect(stat(path, &info) == 0)
        #expect(info.st_blocks * 512 >= 8 << 20, "a reserved image must have its blocks, has \(info.st_blocks)")
    }
}
