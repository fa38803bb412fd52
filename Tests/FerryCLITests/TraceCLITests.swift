import FerryTestSupport
import Foundation
import Testing

/// Trace workloads longer than 16 MiB (issue 13): replayed by `ferry run` from the file, and
/// refused by `ferry send` (GUEST_CONFIG carries at most 16 MiB) before its guest starts.
@Suite(.serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why)) struct TraceCLITests {
    @Test func traceOver16MiBRunsLocallyAndIsRefusedForMigration() throws {
        let scratch = Scratch("big-trace")
        let trace = scratch.file("big.trace")
        let image = scratch.file("guest.img")
        let original = scratch.file("original.img")
        let line = Array("0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19\n".utf8)
        var chunk: [UInt8] = []
        while chunk.count < 1 << 20 { chunk += line }
        FileManager.default.createFile(atPath: trace, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: trace))
        for _ in 0..<17 { try handle.write(contentsOf: chunk) }
        try handle.close()
        #expect(try FerryProcess.run(["image", "create", image, "--size", "16M", "--seed", "2"]).status == 0)
        #expect(try FerryProcess.run(["image", "create", original, "--size", "16M", "--seed", "2"]).status == 0)

        let ran = try FerryProcess.run([
            "run", "--image", image, "--workload", "trace:" + trace, "--steps", "5000,5000",
        ])
        #expect(ran.status == 0, "\(ran.stderr)")
        #expect(ran.stdout.contains("vCPU steps 5000,5000"), "\(ran.stdout)")
        #expect(try !filesEqual(image, original), "the replay wrote the trace's pages")

        let copy = try FerryProcess.run(["image", "create", image, "--size", "16M", "--seed", "2", "--force"])
        #expect(copy.status == 0, "\(copy.stderr)")
        let sent = try FerryProcess.run([
            "send", "--image", image, "--to", "127.0.0.1:1", "--workload", "trace:" + trace,
        ])
        #expect(sent.status == 9, "\(sent.stderr)")
        #expect(sent.stderr.contains("at most 16777216 bytes (16 MiB)"), "\(sent.stderr)")
        #expect(!sent.stderr.contains("connect"), "refused before connecting: \(sent.stderr)")
        #expect(try filesEqual(image, original), "the refused guest never ran")
    }
}
