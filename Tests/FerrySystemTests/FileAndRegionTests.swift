import FerrySystem
import FerryTestSupport
import Foundation
import Testing

/// A scratch path in `directory`, unique to this process and call.
@Suite struct ImageFileTests {
    @Test func createsSparseFileOfTheRequestedSize() throws {
        let path = ScratchFile("sparse.img", in: "/var/tmp").path
        defer { try? ImageFile.remove(path: path) }
        try ImageFile.create(path: path, size: 64 << 20, overwrite: false)
        #expect(ImageFile.exists(path: path))
        #expect(try ImageFile.size(path: path) == 64 << 20)
        var info = stat()
        #expect(stat(path, &info) == 0)
        #expect(info.st_blocks * 512 < 1 << 20, "a fresh image must be sparse, has \(info.st_blocks) blocks")
    }

    @Test func exclusiveCreateRefusesAnExistingFile() throws {
        let path = ScratchFile("exists.img", in: "/dev/shm").path
        defer { try? ImageFile.remove(path: path) }
        try ImageFile.create(path: path, size: 4096, overwrite: false)
        let error = try #require(throws: SystemError.self) {
            try ImageFile.create(path: path, size: 8192, overwrite: false)
        }
        #expect(error.errno == .fileExists)
        #expect(error.call.hasPrefix("open(\"\(path)\""))
        #expect(error.description.contains("EEXIST (File exists)"))
        #expect(error.description.contains("overwrite: true"))
        #expect(try ImageFile.size(path: path) == 4096, "the refused create must not touch the file")
        try ImageFile.create(path: path, size: 8192, overwrite: true)
        #expect(try ImageFile.size(path: path) == 8192)
    }

    @Test func errorsNameTheCallAndErrno() throws {
        let missing = "/nonexistent-ferry-dir/x.img"
        let error = try #require(throws: SystemError.self) { _ = try ImageFile.size(path: missing) }
        #expect(error.code == .syscall)
        #expect(error.errno == .noSuchFileOrDirectory)
        #expect(error.description == "stat(\"\(missing)\"): ENOENT (No such file or directory)")
        #expect(!ImageFile.exists(path: missing))
        #expect(throws: SystemError.self) { try ImageFile.remove(path: missing) }
    }

    @Test func renameMovesTheFile() throws {
        let from = ScratchFile("a.img", in: "/dev/shm").path
        let to = from + ".renamed"
        defer {
            try? ImageFile.remove(path: to)
            try? ImageFile.remove(path: from)
        }
        try ImageFile.create(path: from, size: 4096, overwrite: false)
        try ImageFile.rename(from: from, to: to)
        #expect(!ImageFile.exists(path: from))
        #expect(try ImageFile.size(path: to) == 4096)
    }

    @Test func freeBytesAndFilesystemTypeOfTheParentDirectory() throws {
        #expect(try ImageFile.filesystemType(directoryOf: "/dev/shm/not-yet-created.img") == "tmpfs")
        #expect(try ImageFile.freeBytes(directoryOf: "/dev/shm/not-yet-created.img") > 0)
        let rootType = try ImageFile.filesystemType(directoryOf: "/var/tmp/x.img")
        print("file system of /var/tmp: \(rootType ?? "unknown")")
        #expect(rootType != nil)
        #expect(throws: SystemError.self) { _ = try ImageFile.freeBytes(directoryOf: "/nonexistent-ferry-dir/x") }
    }

    @Test func availableMemoryIsPlausible() throws {
        let available = try availableMemoryBytes()
        #expect(available > 16 << 20)
        #expect(available < UInt64(ProcessInfo.processInfo.physicalMemory))
    }
}

@Suite struct MappedRegionTests {
    @Test func fileMappingIsSharedWithTheFile() throws {
        let path = ScratchFile("map.img", in: "/dev/shm").path
        defer { try? ImageFile.remove(path: path) }
        try ImageFile.create(path: path, size: 3 * systemPageSize, overwrite: false)
        do {
            let region = try MappedRegion.mapFile(path: path, writable: true)
            #expect(region.size == 3 * systemPageSize)
            (region.base + systemPageSize + 7).storeBytes(of: 0xAB, as: UInt8.self)
            try region.sync()
        }
        let bytes = try #require(FileManager.default.contents(atPath: path))
        #expect(bytes.count == 3 * systemPageSize)
        #expect(bytes[systemPageSize + 7] == 0xAB)
        #expect(bytes.filter { $0 != 0 }.count == 1)

        let readOnly = try MappedRegion.mapFile(path: path, writable: false)
        #expect(readOnly.base.load(fromByteOffset: systemPageSize + 7, as: UInt8.self) == 0xAB)
        try readOnly.populate(writable: false)
    }

    @Test func emptyFileIsRefused() throws {
        let path = ScratchFile("empty.img", in: "/dev/shm").path
        defer { try? ImageFile.remove(path: path) }
        #expect(FileManager.default.createFile(atPath: path, contents: nil))
        let error = try #require(throws: SystemError.self) { _ = try MappedRegion.mapFile(path: path, writable: true) }
        #expect(error.code == .invalidArgument)
        #expect(error.description.contains("empty"))
    }

    @Test func missingFileNamesOpenAndENOENT() throws {
        let error = try #require(throws: SystemError.self) {
            _ = try MappedRegion.mapFile(path: "/dev/shm/ferry-no-such-file", writable: true)
        }
        #expect(error.description.hasPrefix("open(\"/dev/shm/ferry-no-such-file\"): ENOENT"))
    }

    @Test func anonymousRegionIsZeroedWritableAndPopulates() throws {
        let region = try MappedRegion.anonymous(size: 5 * systemPageSize + 1)
        #expect(region.size == 6 * systemPageSize)
        try region.populate(writable: true)
        let words = region.base.bindMemory(to: UInt64.self, capacity: region.size / 8)
        #expect((0..<region.size / 8).allSatisfy { words[$0] == 0 })
        words[region.size / 8 - 1] = 42
        #expect(words[region.size / 8 - 1] == 42)
        #expect(throws: SystemError.self) { _ = try MappedRegion.anonymous(size: 0) }
    }
}
