import FerryTestSupport
import Foundation
import Testing

@testable import FerryGuest

/// The core requirement: pausing, serializing the registers and continuing in a new `Guest`
/// gives the same memory, byte for byte, as running without interruption for the same steps.
@Suite struct TransparencyTests {
    static let pages = 2048
    static let vcpus = 3
    static let seed: UInt64 = 0xF3_77E1

    /// A trace of 120 lines, one per millisecond, with 0…15 pages each (some lines empty).
    static func traceText() -> String {
        var rng: UInt64 = 99
        var lines = ["# generated test trace"]
        for line in 0..<120 {
            let count = Int(Mixing.next(&rng) % 16)
            let entries = (0..<count).map { _ in String(Mixing.next(&rng) % UInt64(Self.pages)) }
            lines.append(([String(line + 1)] + entries).joined(separator: " "))
        }
        return lines.joined(separator: "\n")
    }

    static func configuration(_ workload: String) throws -> GuestConfiguration {
        let spec = try WorkloadSpec.parse(workload)
        let trace = workload.hasPrefix("trace:") ? try DirtyTrace.parse(traceText(), pageCount: pages) : nil
        return GuestConfiguration(vcpus: vcpus, workload: spec, trace: trace, seed: seed, pageSize: 4096)
    }

    @Test(arguments: ["idle", "uniform:200MB/s", "hotset:200MB/s,5%,80%", "sweep:200MB/s", "trace:/generated"])
    func pausedSerializedAndContinuedEqualsUninterrupted(workload: String) throws {
        let config = try Self.configuration(workload)
        let image = try imageBytes(pages: Self.pages, seed: 5)
        let size = image.count

        // Run B: run freely with throttle changes and pause/resume, pause, take the registers.
        let memoryB = AnonymousMemory(copying: image)
        let b1 = try Guest(memory: memoryB.base, size: size, configuration: config, logger: quietLogger)
        b1.start()
        sleepMs(40)
        b1.throttlePercent = 60
        sleepMs(30)
        b1.pause()
        sleepMs(20)
        b1.resume()
        b1.throttlePercent = 0
        sleepMs(40)
        b1.pause()
        // The registers are all that crosses to the new Guest, as in a migration (their wire
        // encoding is FerryProtocol's, tested there and end to end in FerryMigrationTests).
        let states = b1.states()
        let final1 = b1.stop()
        #expect(states == final1, "stop() after pause() must not move the registers")
        let stepsAtPause = states.map(\.step)
        if workload != "idle" {
            #expect(stepsAtPause.allSatisfy { $0 > 100 }, "vCPUs barely ran: \(stepsAtPause)")
        } else {
            #expect(stepsAtPause == [0, 0, 0])
        }
        // Limits at or beyond the steps done at the pause, different per vCPU.
        let limits = stepsAtPause.enumerated().map { v, steps in steps + UInt64(v * 300) }

        // ... continue in a new Guest on the same memory up to the limits.
        let b2 = try Guest(
            memory: memoryB.base, size: size, configuration: config, initialStates: states,
            stepLimits: limits, logger: quietLogger)
        #expect(b2.stepsPerVCPU == stepsAtPause, "the continued guest starts from the serialized registers")
        b2.start()
        b2.waitUntilStepLimits()
        let finalB = b2.stop()

        // Run A: the same workload from a fresh image, uninterrupted, to the same limits.
        let memoryA = AnonymousMemory(copying: image)
        let a = try Guest(
            memory: memoryA.base, size: size, configuration: config, stepLimits: limits, logger: quietLogger)
        a.start()
        a.waitUntilStepLimits()
        let finalA = a.stop()

        // Run C: the same limits unpaced (how reference runs go): the same memory, sooner.
        let memoryC = AnonymousMemory(copying: image)
        let c = try Guest(
            memory: memoryC.base, size: size, configuration: config, stepLimits: limits, paced: false,
            logger: quietLogger)
        c.start()
        c.waitUntilStepLimits()
        #expect(c.stop().map(\.step) == finalA.map(\.step))
        #expect(memoryC.equals(memoryA), "an unpaced reference run must write what a paced one writes")

        if workload != "idle" {
            #expect(finalA.map(\.step) == limits)
            #expect(finalB.map(\.step) == limits)
            #expect(memoryA.changedPages(from: image, pageSize: 4096) > 50)
        } else {
            #expect(memoryA.equals(image))
        }
        for v in 0..<Self.vcpus {
            #expect(finalA[v].rngState == finalB[v].rngState)
            #expect(finalA[v].cursor == finalB[v].cursor)
            #expect(finalA[v].cursor2 == finalB[v].cursor2)
            #expect(finalA[v].traceEpochMs == finalB[v].traceEpochMs)
        }
        #expect(memoryA.equals(memoryB), "memory after migration differs from the reference run")
        print(
            "transparency \(workload): steps at pause \(stepsAtPause), limits \(limits), changed pages \(memoryA.changedPages(from: image, pageSize: 4096))"
        )
    }

    /// The 16-byte write layout: vCPU v, step s writes (s, hash(seed, v, s)) at v*64 + (s%4)*16.
    @Test func writeLayout() throws {
        let config = GuestConfiguration(
            vcpus: 2, workload: try .parse("sweep:2000000pages/s"), seed: 11, pageSize: 4096)
        let memory = AnonymousMemory(size: 8 * 4096)
        let guest = try Guest(
            memory: memory.base, size: memory.size, configuration: config, stepLimits: [6, 9], logger: quietLogger)
        guest.start()
        guest.waitUntilStepLimits()
        #expect(guest.stop().map(\.step) == [6, 9])
        func word(_ offset: Int) -> UInt64 {
            UInt64(littleEndian: memory.base.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
        }
        // vCPU 0 sweeps pages 0..3 (wrapping: steps 4, 5 hit pages 0, 1 again); vCPU 1 pages 4..7.
        for (v, steps, share) in [(0, 6, 0), (1, 9, 4)] {
            for s in 0..<steps {
                let page = share + s % 4
                // The last write to this slot wins: slot s%4 of page share+s%4 is only hit by s, s+4, ...
                let last = (0..<steps).filter { $0 % 4 == s % 4 }.max()!
                let offset = page * 4096 + v * 64 + (s % 4) * 16
                #expect(word(offset) == UInt64(last))
                #expect(word(offset + 8) == Mixing.hash(11, UInt64(v), UInt64(last)))
            }
        }
        // Nothing outside the vCPUs' slots was touched.
        var touched = 0
        for page in 0..<8 {
            for byte in 128..<4096 where memory.base.load(fromByteOffset: page * 4096 + byte, as: UInt8.self) != 0 {
                touched += 1
            }
        }
        #expect(touched == 0)
    }

    @Test func invalidConfigurationsAreRefused() throws {
        let memory = AnonymousMemory(size: 4 * 4096)
        let cases: [(GuestConfiguration, Int, String)] = [
            (GuestConfiguration(vcpus: 0, workload: .idle, seed: 1), memory.size, "0 vCPUs"),
            (GuestConfiguration(vcpus: 65, workload: .idle, seed: 1), memory.size, "65 vCPUs"),
            (GuestConfiguration(vcpus: 1, workload: .idle, seed: 1), 5000, "multiple of the page size"),
            (GuestConfiguration(vcpus: 1, workload: .idle, seed: 1, pageSize: 3000), memory.size, "power of two"),
            (
                GuestConfiguration(vcpus: 8, workload: try .parse("sweep:1MB/s"), seed: 1), memory.size,
                "cannot be shared among 8 vCPUs"
            ),
            (GuestConfiguration(vcpus: 1, workload: .trace(path: "/t"), seed: 1), memory.size, "no parsed trace"),
            (
                GuestConfiguration(
                    vcpus: 1, workload: .trace(path: "/t"), trace: try DirtyTrace.parse("1 1", pageCount: 9), seed: 1),
                memory.size, "checked against 9 pages"
            ),
        ]
        for (config, size, fragment) in cases {
            do {
                _ = try Guest(memory: memory.base, size: size, configuration: config, logger: quietLogger)
                Issue.record("accepted: \(fragment)")
            } catch let error as GuestError {
                #expect(error.code == .invalidConfiguration)
                #expect(error.message.contains(fragment), "\(error.message)")
            }
        }
    }
}

@Suite struct GuestConfigurationTests {
    @Test func makeParsesTheWorkloadAndTheTrace() throws {
        let c = try GuestConfiguration.make(
            vcpus: 2, workload: "trace:/nowhere", traceText: "1 3 4\n", seed: 8, pageSize: 4096, pageCount: 10)
        #expect(c.workload == .trace(path: "/nowhere"))
        #expect(c.trace?.entryCount == 2)
        #expect(
            try GuestConfiguration.make(vcpus: 1, workload: "sweep:1MB/s", seed: 1, pageSize: 4096, pageCount: 1).trace
                == nil)
        #expect(throws: GuestError.self) {
            try GuestConfiguration.make(
                vcpus: 1, workload: "trace:/nonexistent/trace", seed: 1, pageSize: 4096, pageCount: 1)
        }
        #expect(throws: GuestError(.invalidTrace, "trace line 1: page 10 is outside the image (pages 0…9)")) {
            try GuestConfiguration.make(
                vcpus: 1, workload: "trace:/x", traceText: "1 10", seed: 1, pageSize: 4096, pageCount: 10)
        }
    }

    @Test func directlyBuiltSpecsAreChecked() throws {
        let memory = AnonymousMemory(size: 4 * 4096)
        for spec in [
            WorkloadSpec.uniform(Rate(bytesPerSecond: 0)), .sweep(Rate(pagesPerSecond: -.infinity)),
            .hotset(Rate(pagesPerSecond: 5), hotPercent: 0, sharePercent: 50),
            .hotset(Rate(pagesPerSecond: 5), hotPercent: 10, sharePercent: 101),
        ] {
            #expect(throws: GuestError.self, "\(spec)") {
                try Guest(
                    memory: memory.base, size: memory.size,
                    configuration: GuestConfiguration(vcpus: 1, workload: spec, seed: 1),
                    logger: quietLogger)
            }
        }
    }
}
