import FerryTestSupport
import Foundation
import Glibc
import Testing

@testable import FerryGuest

#if DEBUG
    let buildKind = "debug"
#else
    let buildKind = "release"
#endif

@Suite(.tags(.slow), .skippable(.slow)) struct ImageGeneratorTests {
    @Test func sameSeedGivesSameBytesDifferentSeedDifferentBytes() throws {
        let a = ScratchFile("a")
        let b = ScratchFile("b")
        let c = ScratchFile("c")
        defer {
            a.remove()
            b.remove()
            c.remove()
        }
        let size = 8 << 20
        try ImageGenerator.create(path: a.path, size: size, mix: .standard, seed: 42, pageSize: 4096, overwrite: false)
        try ImageGenerator.create(path: b.path, size: size, mix: .standard, seed: 42, pageSize: 4096, overwrite: false)
        try ImageGenerator.create(path: c.path, size: size, mix: .standard, seed: 43, pageSize: 4096, overwrite: false)
        let (ba, bb, bc) = (try a.read(), try b.read(), try c.read())
        #expect(ba.count == size)
        #expect(ba.withUnsafeBytes(checksum) == bb.withUnsafeBytes(checksum))
        #expect(ba == bb)
        #expect(ba.withUnsafeBytes(checksum) != bc.withUnsafeBytes(checksum))
    }

    /// Classifies a page by its bytes, independently of the generator's own class function.
    static func classify(_ page: ArraySlice<UInt8>) -> PageClass {
        var nonZero = 0
        var printable = true
        for b in page {
            if b != 0 { nonZero += 1 }
            if !(b == 10 || (b >= 32 && b < 127)) { printable = false }
        }
        if nonZero == 0 { return .zero }
        if nonZero <= 64 { return .sparse }
        return printable ? .text : .random
    }

    @Test(arguments: [
        ImageMix.standard, ImageMix(zero: 0, sparse: 20, text: 50, random: 30),
        ImageMix(zero: 90, sparse: 0, text: 0, random: 10),
    ])
    func pageClassFractionsFollowTheMix(mix: ImageMix) throws {
        let file = ScratchFile("mix")
        defer { file.remove() }
        let pageSize = 4096
        let pages = 4096
        try ImageGenerator.create(
            path: file.path, size: pages * pageSize, mix: mix, seed: 7, pageSize: pageSize, overwrite: false)
        let bytes = try file.read()
        var counts: [PageClass: Int] = [:]
        for page in 0..<pages {
            let found = Self.classify(bytes[(page * pageSize)..<((page + 1) * pageSize)])
            #expect(found == ImageGenerator.pageClass(seed: 7, page: page, mix: mix), "page \(page)")
            counts[found, default: 0] += 1
        }
        let expected: [PageClass: Double] = [
            .zero: mix.zero, .sparse: mix.sparse, .text: mix.text, .random: mix.random,
        ]
        for (cls, percent) in expected {
            let measured = Double(counts[cls, default: 0]) * 100 / Double(pages)
            // 4096 pages: binomial standard deviation is at most ~0.8 percentage points.
            #expect(abs(measured - percent) < 3, "\(cls): \(measured)% measured, \(percent)% wanted")
        }
    }

    @Test func zeroPagesAreHoles() throws {
        let file = ScratchFile("sparse")
        defer { file.remove() }
        let size = 16 << 20
        try ImageGenerator.create(
            path: file.path, size: size, mix: ImageMix(zero: 90, sparse: 0, text: 5, random: 5),
            seed: 1, pageSize: 4096, overwrite: false)
        let allocated = file.allocatedBytes()
        #expect(allocated > 0)
        #expect(allocated < size / 4, "allocated \(allocated) of \(size)")
    }

    @Test func sizeMustBeAPageMultipleAndExistingFilesNeedOverwrite() throws {
        let file = ScratchFile("exists")
        defer { file.remove() }
        #expect(throws: GuestError(.invalidSize, "--size 1000: must be a positive multiple of the page size 4096")) {
            try ImageGenerator.create(
                path: file.path, size: 1000, mix: .standard, seed: 1, pageSize: 4096, overwrite: false)
        }
        try ImageGenerator.create(
            path: file.path, size: 4096, mix: .standard, seed: 1, pageSize: 4096, overwrite: false)
        do {
            try ImageGenerator.create(
                path: file.path, size: 4096, mix: .standard, seed: 1, pageSize: 4096, overwrite: false)
            Issue.record("second create without overwrite succeeded")
        } catch let error as GuestError {
            #expect(error.errno == .fileExists)
            #expect(error.message.contains("open(\(file.path)): EEXIST"))
            #expect(error.message.contains("--force"))
        }
        try ImageGenerator.create(path: file.path, size: 8192, mix: .standard, seed: 1, pageSize: 4096, overwrite: true)
        #expect(try file.read().count == 8192)
    }

    /// Reports the generation speed; speed itself is measured by `ferry image create`'s own output,
    /// not asserted in a unit test (timings on a shared 2-core machine are noise).
    @Test func reportsProgressUpToTheFullSize() throws {
        let file = ScratchFile("speed")
        defer { file.remove() }
        let size = 64 << 20
        var lastProgress = 0
        let start = ContinuousClock.now
        try ImageGenerator.create(
            path: file.path, size: size, mix: .standard, seed: 3, pageSize: 4096, overwrite: false
        ) {
            lastProgress = $0
        }
        let seconds = (ContinuousClock.now - start) / .seconds(1)
        let rate = Double(size) / seconds / 1e6
        print("image generation: \(Int(rate)) MB/s (\(size >> 20) MiB, standard mix, \(buildKind) build)")
        #expect(lastProgress == size)
    }
}
