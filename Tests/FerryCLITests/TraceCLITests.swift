import FerryTestSupport
import Foundation
import Testing

/// Trace workloads longer than 16 MiB (issue 13): replayed by `ferry run` from the file, and
/// migrated by `ferry send` (the trace travels after GUEST_CONFIG in 1 MiB GUEST_ATTACHMENT
/// chunks and is kept beside the received image as `PATH.attachment`).
@Suite(.serialized, .enabled(if: FerryProcess.built.met, FerryProcess.built.why)) struct TraceCLITests {
    @Test func traceOver16MiBRunsLocallyAndMigrates() throws {
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
        let received = scratch.file("received.img")
        let receiver = try FerryProcess([
            "receive", "--listen", "127.0.0.1:0", "--image", received, "--accept-timeout", "60s",
        ])
        let listening = try #require(receiver.waitForStderrLine(containing: "listening on"))
        let port = try #require(
            listening.split(separator: ":").last.flatMap { Int($0.split(separator: ",").first ?? "") })
        let sent = try FerryProcess.run([
            "send", "--image", image, "--to", "127.0.0.1:\(port)", "--workload", "trace:" + trace,
            "--run-before", "200ms",
            // What is tested is the trace's journey, not convergence: under the full suite's load
            // the model predicted 55-90 ms for the last 19 pages, over the default 50 ms target.
            "--downtime-ms", "2000",
        ])
        let receiverOutcome = receiver.wait()
        #expect(sent.status == 0, "\(sent.stderr)")
        #expect(receiverOutcome.status == 0, "\(receiverOutcome.stderr)")
        #expect(sent.stdout.contains("source report: migrated"), "\(sent.stdout)")
        // --run-for 0 (the default): the received image is the source's as it handed it over.
        #expect(try filesEqual(image, received), "destination image must equal the source image")
        #expect(try filesEqual(trace, received + ".attachment"), "the trace is kept beside the image")
        #expect(!FileManager.default.fileExists(atPath: received + ".partial.attachment"))
    }
}
