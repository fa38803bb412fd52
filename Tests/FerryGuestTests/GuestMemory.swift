import Foundation
import Glibc
import Logging
@testable import FerryGuest

/// Anonymous private memory for a test guest, unmapped on deinit.
final class AnonymousMemory {
    let base: UnsafeMutableRawPointer
    let size: Int

    init(size: Int) {
        let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        precondition(p != MAP_FAILED, "mmap(\(size)) failed: errno \(errno)")
        base = p!
        self.size = size
    }

    convenience init(copying bytes: [UInt8]) {
        self.init(size: bytes.count)
        bytes.withUnsafeBytes { base.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
    }

    deinit { munmap(base, size) }

    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: size) }

    func equals(_ other: AnonymousMemory) -> Bool {
        size == other.size && memcmp(base, other.base, size) == 0
    }

    func equals(_ bytes: [UInt8]) -> Bool {
        bytes.count == size && bytes.withUnsafeBytes { memcmp(base, $0.baseAddress!, size) == 0 }
    }

    /// Pages that differ from `bytes`.
    func changedPages(from bytes: [UInt8], pageSize: Int) -> Int {
        bytes.withUnsafeBytes { original in
            (0..<(size / pageSize)).filter { memcmp(base + $0 * pageSize, original.baseAddress! + $0 * pageSize, pageSize) != 0 }.count
        }
    }
}

let quietLogger = Logger(label: "ferry.guest.test") { _ in SwiftLogNoOpLogHandler() }

/// A generated image's bytes (standard mix), cached per (pages, seed).
func imageBytes(pages: Int, seed: UInt64) throws -> [UInt8] {
    let file = ScratchFile("image")
    defer { file.remove() }
    try ImageGenerator.create(path: file.path, size: pages * 4096, mix: .standard, seed: seed, pageSize: 4096, overwrite: false)
    return try file.read()
}

func sleepMs(_ ms: Int) { usleep(UInt32(ms * 1000)) }
