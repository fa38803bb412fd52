import FerryTestSupport
import Foundation
import Glibc
import Testing

@testable import FerryGuest

/// Traces read as a stream (issue 13): any length is checked and replayed through fixed buffers.
@Suite struct TraceStreamTests {
    /// A generated trace: text line `i` has `t_ms` = i and `1 + i % 7` pages, except every 97th,
    /// which lists none; every 101st is preceded by a comment.
    struct Generated {
        let pageCount: UInt64
        let lines: Int

        func pages(ofLine i: Int) -> Int { i % 97 == 0 ? 0 : 1 + i % 7 }
        func page(line i: Int, entry k: Int) -> UInt64 {
            (UInt64(i) &* 2_654_435_761 &+ UInt64(k) &* 40_503) % pageCount
        }
        /// The index among the lines that list pages of text line `i` (which must list some).
        func pageLine(of i: Int) -> UInt64 { UInt64(i - (i + 96) / 97) }

        /// Writes the trace to `path` a mebibyte at a time; returns its size.
        func write(to path: String) throws -> Int {
            _ = FileManager.default.createFile(atPath: path, contents: nil)
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
            defer { try? handle.close() }
            var chunk: [UInt8] = []
            var total = 0
            for i in 0..<lines {
                if i % 101 == 0 { chunk.append(contentsOf: "# line \(i)\n".utf8) }
                Self.append(UInt64(i), to: &chunk)
                for k in 0..<pages(ofLine: i) {
                    chunk.append(UInt8(ascii: " "))
                    Self.append(page(line: i, entry: k), to: &chunk)
                }
                chunk.append(UInt8(ascii: "\n"))
                if chunk.count >= 1 << 20 {
                    try handle.write(contentsOf: chunk)
                    total += chunk.count
                    chunk.removeAll(keepingCapacity: true)
                }
            }
            try handle.write(contentsOf: chunk)
            return total + chunk.count
        }

        /// `value` in decimal digits (faster than formatting a String per number in a debug build).
        static func append(_ value: UInt64, to out: inout [UInt8]) {
            if value >= 10 { append(value / 10, to: &out) }
            out.append(UInt8(ascii: "0") + UInt8(value % 10))
        }

        var pageLines: Int { (0..<lines).filter { pages(ofLine: $0) > 0 }.count }
        var entries: Int { (0..<lines).reduce(0) { $0 + pages(ofLine: $1) } }
    }

    /// A trace file over 16 MiB (the old limit) is checked in one pass and read back at any
    /// line, backwards too, through one 64 KiB buffer and at most 1024 checkpoints.
    @Test func traceOver16MiBIsCheckedAndReadAnywhere() throws {
        let generated = Generated(pageCount: 1 << 20, lines: 520_000)
        let file = ScratchFile("big-trace", in: "/var/tmp")
        defer { file.remove() }
        let size = try generated.write(to: file.path)
        #expect(size > 16 << 20, "the trace must be longer than 16 MiB, is \(size) bytes")
        let trace = try DirtyTrace.load(path: file.path, pageCount: Int(generated.pageCount))
        #expect(trace.lineCount == generated.pageLines)
        #expect(trace.entryCount == generated.entries)
        #expect(trace.durationMs == UInt64(generated.lines - 1))
        // The memory a trace and its readers hold does not grow with the file.
        #expect(trace.checkpoints.count <= DirtyTrace.maxCheckpoints)
        #expect(trace.checkpointSpacing >= UInt64(trace.lineCount / DirtyTrace.maxCheckpoints))
        #expect(TraceScanner.bufferBytes == 64 << 10)

        var reader = TraceReader(trace)
        var rng: UInt64 = 17
        for _ in 0..<300 {
            var i = Int(Mixing.next(&rng) % UInt64(generated.lines))
            if generated.pages(ofLine: i) == 0 { i += 1 }
            let k = Int(Mixing.next(&rng) % UInt64(generated.pages(ofLine: i)))
            let line = generated.pageLine(of: i)
            let found = reader.entry(line: line, index: UInt64(k))
            let entry = try #require(found, "line \(i) entry \(k)")
            #expect(entry.page == generated.page(line: i, entry: k), "line \(i) entry \(k)")
            #expect(entry.time == UInt64(i))
        }
        let last = generated.lines - 1
        let lastLength = UInt64(generated.pages(ofLine: last))
        #expect(reader.entry(line: generated.pageLine(of: last), index: lastLength) == nil)
        #expect(!reader.failed)
    }

    /// Registers taken in the middle of a long trace (past thinned checkpoints) continue in a new
    /// guest exactly where they stopped, through a wrap to the next pass: the memory equals a
    /// model of the trace written by hand.
    @Test func replayContinuesFromRegistersAcrossCheckpoints() throws {
        let generated = Generated(pageCount: 512, lines: 6000)
        let file = ScratchFile("mid-trace", in: "/dev/shm")
        defer { file.remove() }
        _ = try generated.write(to: file.path)
        let trace = try DirtyTrace.load(path: file.path, pageCount: 512)
        #expect(trace.checkpointSpacing > 1, "the trace must thin its checkpoints")
        let config = GuestConfiguration(vcpus: 2, workload: .trace(path: file.path), trace: trace, seed: 9)
        let memory = AnonymousMemory(size: 512 * 4096)
        let perVCPU = UInt64(generated.entries / 2)
        let first = try Guest(
            memory: memory.base, size: memory.size, configuration: config, stepLimits: [perVCPU / 3, perVCPU / 2],
            paced: false, logger: quietLogger)
        first.start()
        first.waitUntilStepLimits()
        let states = first.stop()
        let limits = [perVCPU + 777, perVCPU + 1234]
        let second = try Guest(
            memory: memory.base, size: memory.size, configuration: config, initialStates: states,
            stepLimits: limits, paced: false, logger: quietLogger)
        second.start()
        second.waitUntilStepLimits()
        #expect(second.stop().map(\.step) == limits)

        let model = AnonymousMemory(size: 512 * 4096)
        var steps: [UInt64] = [0, 0]
        var global: UInt64 = 0
        while steps != limits {
            for i in 0..<generated.lines {
                for k in 0..<generated.pages(ofLine: i) {
                    let v = Int(global % 2)
                    global += 1
                    guard steps[v] < limits[v] else { continue }
                    let offset = Int(generated.page(line: i, entry: k)) * 4096 + v * 64 + Int(steps[v] & 3) * 16
                    model.base.storeBytes(of: steps[v].littleEndian, toByteOffset: offset, as: UInt64.self)
                    model.base.storeBytes(
                        of: Mixing.hash(9, UInt64(v), steps[v]).littleEndian, toByteOffset: offset + 8, as: UInt64.self
                    )
                    steps[v] += 1
                }
            }
            global = 0
        }
        #expect(memory.equals(model), "the replay across a pause and a wrap must write what the trace says")
    }

    /// A trace file cut after it was checked: the replaying vCPU stops (its reader `failed`)
    /// instead of spinning on lines that are gone.
    @Test func traceCutUnderTheReplayStopsTheVCPU() throws {
        let generated = Generated(pageCount: 64, lines: 3000)
        let file = ScratchFile("cut-trace", in: "/dev/shm")
        defer { file.remove() }
        let size = try generated.write(to: file.path)
        let trace = try DirtyTrace.load(path: file.path, pageCount: 64)
        #expect(truncate(file.path, off_t(size / 2)) == 0)
        var reader = TraceReader(trace)
        #expect(reader.entry(line: UInt64(trace.lineCount - 1), index: 0) == nil)
        #expect(reader.failed)
        let memory = AnonymousMemory(size: 64 * 4096)
        let guest = try Guest(
            memory: memory.base, size: memory.size,
            configuration: GuestConfiguration(vcpus: 1, workload: .trace(path: file.path), trace: trace, seed: 1),
            stepLimits: [UInt64(generated.entries)], paced: false, logger: quietLogger)
        guest.start()
        guest.waitUntilStepLimits()
        let steps = guest.stop()[0].step
        #expect(steps > 0 && steps < UInt64(generated.entries), "stopped at step \(steps)")
    }
}

enum ImageFileSize {
    static func of(_ path: String) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? -1
    }
}
