import FerryTestSupport
import Foundation
import Glibc
import Logging

@testable import FerryGuest

let quietLogger = Logger(label: "ferry.guest.test") { _ in SwiftLogNoOpLogHandler() }

/// A generated image's bytes (standard mix), cached per (pages, seed).
func imageBytes(pages: Int, seed: UInt64) throws -> [UInt8] {
    let file = ScratchFile("image")
    defer { file.remove() }
    try ImageGenerator.create(
        path: file.path, size: pages * 4096, mix: .standard, seed: seed, pageSize: 4096, overwrite: false)
    return try file.read()
}

func sleepMs(_ ms: Int) { usleep(UInt32(ms * 1000)) }

/// FNV-1a 64 over bytes: a checksum for comparing images in tests.
func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
    return h
}
