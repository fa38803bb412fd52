import FerryGuest
import FerrySystem
import Glibc

/// A guest image made by `ImageGenerator`, held in private anonymous memory that is faulted in
/// (the generator writes a sparse file on /dev/shm; it is copied into memory and removed).
final class TestImage {
    let name: String
    let mix: ImageMix
    let pageSize: Int
    let pageCount: Int
    let memory: MappedRegion

    var base: UnsafeMutableRawPointer { memory.base }
    var byteCount: Int { pageCount * pageSize }

    static let seed: UInt64 = 0x4D31_C40B_E7C4

    init(name: String, mix: ImageMix, pageCount: Int, pageSize: Int) throws {
        self.name = name
        self.mix = mix
        self.pageSize = pageSize
        self.pageCount = pageCount
        let path = "/dev/shm/ferry-microbench-\(getpid())-\(name).img"
        try ImageGenerator.create(
            path: path, size: pageCount * pageSize, mix: mix, seed: Self.seed,
            pageSize: pageSize, overwrite: true)
        defer { unlink(path) }
        let file = try MappedRegion.mapFile(path: path, writable: false)
        memory = try MappedRegion.anonymous(size: pageCount * pageSize)
        try memory.populate(writable: true)
        memcpy(memory.base, file.base, pageCount * pageSize)
    }

    /// The images every codec benchmark runs on: the standard mix, then one per page class.
    static func all(pageCount: Int, pageSize: Int) throws -> [TestImage] {
        let images: [(String, ImageMix)] = [
            ("standard", .standard),
            ("zero", ImageMix(zero: 100, sparse: 0, text: 0, random: 0)),
            ("sparse", ImageMix(zero: 0, sparse: 100, text: 0, random: 0)),
            ("text", ImageMix(zero: 0, sparse: 0, text: 100, random: 0)),
            ("random", ImageMix(zero: 0, sparse: 0, text: 0, random: 100)),
        ]
        return try images.map { try TestImage(name: $0.0, mix: $0.1, pageCount: pageCount, pageSize: pageSize) }
    }
}
