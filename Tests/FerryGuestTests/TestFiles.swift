import Foundation
import Glibc

/// A file path under /dev/shm, unique per call, removed by `remove()`.
struct ScratchFile {
    let path: String

    init(_ name: String) {
        path = "/dev/shm/ferry-guest-test-\(getpid())-\(name)-\(UInt64.random(in: 0...UInt64.max))"
    }

    func remove() { unlink(path) }

    func read() throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    func allocatedBytes() -> Int {
        var st = stat()
        guard stat(path, &st) == 0 else { return -1 }
        return Int(st.st_blocks) * 512
    }
}

/// FNV-1a 64 over bytes: a checksum for comparing images in tests.
func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
    return h
}
