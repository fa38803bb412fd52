import FerrySystem
import FerryTestSupport
import Foundation
import Testing

/// Memory the trackers are tested on.
enum MemoryKind: String, CaseIterable, Sendable {
    case anonymous
    /// A MAP_SHARED file on tmpfs (/dev/shm), where guest images usually live.
    case tmpfs
    /// A MAP_SHARED file on ext4 (/var/tmp), when /var/tmp is ext4.
    case ext4
}

/// A mapped test region and the file behind it (removed when this goes away).
final class TestMemory {
    let region: MappedRegion
    let path: String?
    var pages: Int { region.size / systemPageSize }

    private init(region: consuming MappedRegion, path: String?) {
        self.region = region
        self.path = path
    }

    deinit {
        if let path { try? ImageFile.remove(path: path) }
    }

    /// The region; where this machine has no such memory the test (case) is cancelled, which
    /// shows as skipped with the reason.
    static func make(_ kind: MemoryKind, size: Int) throws -> TestMemory {
        let directory: String
        switch kind {
        case .anonymous:
            return TestMemory(region: try MappedRegion.anonymous(size: size), path: nil)
        case .tmpfs: directory = "/dev/shm"
        case .ext4: directory = "/var/tmp"
        }
        let type = try ImageFile.filesystemType(directoryOf: directory + "/x")
        guard type == kind.rawValue else {
            try Test.cancel("no \(kind.rawValue) memory here: \(directory) is \(type ?? "an unknown file system")")
        }
        let path = ScratchFile("tracked.img", in: directory).path
        try ImageFile.create(path: path, size: size, overwrite: false)
        do {
            return TestMemory(region: try MappedRegion.mapFile(path: path, writable: true), path: path)
        } catch {
            try? ImageFile.remove(path: path)
            throw error
        }
    }

    /// A tracker of the whole region; when uffd was asked for and is unavailable the test (case)
    /// is cancelled, which shows as skipped with the reason.
    func tracker(_ choice: TrackerChoice) throws -> any DirtyTracker {
        if choice == .uffd, let reason = DirtyTrackers.uffdUnavailableReason() {
            try Test.cancel("userfaultfd tracker unavailable: \(reason)")
        }
        return try DirtyTrackers.make(choice, base: region.base, length: region.size, pageSize: systemPageSize).tracker
    }

    func write(page: Int, value: UInt64 = 1, offset: Int = 0) {
        (region.base + page * systemPageSize + offset).storeBytes(of: value, as: UInt64.self)
    }

    func read(page: Int, offset: Int = 0) -> UInt64 {
        region.base.load(fromByteOffset: page * systemPageSize + offset, as: UInt64.self)
    }
}

func setPages(_ bitmap: DirtyBitmap) -> [Int] {
    var pages: [Int] = []
    bitmap.forEachSetBit { pages.append($0) }
    return pages
}

/// xorshift64*: cheap per-thread randomness for writer loops.
struct FastRandom {
    var state: UInt64
    mutating func next(below bound: Int) -> Int {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return Int((state &* 0x2545_F491_4F6C_DD1D) >> 1) % bound
    }
}
